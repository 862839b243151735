"""Deterministic in-process backend: one interval at a time.

Tasks run in order of (start step, member id), which interleaves members the
way a perfectly even parallel run would; the same seed gives the same event log.
"""

from __future__ import annotations

import heapq
from itertools import count

from .base import Backend
from .worker import IntervalRunner, Outcome, Task


class SerialBackend(Backend):
    name = "serial"
    runs_in_wait = True

    def __init__(self, member_cls: type, checkpoint_dir: str, device: str = "cpu") -> None:
        self.runner = IntervalRunner(member_cls, checkpoint_dir, device)
        # a heap: picking the next task must not scan thousands of queued members
        self._queue: list[tuple[int, int, int, Task]] = []
        self._seq = count()

    def submit(self, task: Task) -> None:
        heapq.heappush(self._queue, (task.start_step, task.member_id, next(self._seq), task))

    def wait(self) -> list[Outcome]:
        if not self._queue:
            raise RuntimeError("wait() with no task submitted")
        return [self.runner.run(heapq.heappop(self._queue)[3])]

    @property
    def pending(self) -> int:
        return len(self._queue)
