"""Deterministic in-process backend: one interval at a time.

Tasks run in order of (start step, member id), which interleaves members the
way a perfectly even parallel run would; the same seed gives the same event log.
"""

from __future__ import annotations

from .base import Backend
from .worker import IntervalRunner, Outcome, Task


class SerialBackend(Backend):
    name = "serial"

    def __init__(self, member_cls: type, checkpoint_dir: str, device: str = "cpu") -> None:
        self.runner = IntervalRunner(member_cls, checkpoint_dir, device)
        self._queue: list[Task] = []

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    def wait(self) -> list[Outcome]:
        if not self._queue:
            raise RuntimeError("wait() with no task submitted")
        task = min(self._queue, key=lambda t: (t.start_step, t.member_id))
        self._queue.remove(task)
        return [self.runner.run(task)]

    @property
    def pending(self) -> int:
        return len(self._queue)
