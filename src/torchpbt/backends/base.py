"""What the runner needs from a backend: submit interval tasks, collect outcomes.

``Task`` (one member's next interval) goes in, ``Outcome`` (its score, loss and
checkpoint, or why it failed) comes out. Both are plain values: no torch here.
What an extension adds travels in ``Task.extras`` and ``Outcome.extras``, keyed by
its name (``engine/extension.py``); these types know no extension.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    member_id: int
    start_step: int
    steps: int
    hparams: dict[str, Any]
    checkpoint: str | None
    seed: int
    # extension name -> its JSON payload (engine/extension.py runs the matching hook)
    extras: Mapping[str, Any] = field(default_factory=dict)
    # other checkpoints the interval reads (a NAS child's second parent): kept until it ends
    also_reads: tuple[str, ...] = ()

    def checkpoints_read(self) -> set[str]:
        return {k for k in (self.checkpoint, *self.also_reads) if k}


@dataclass(frozen=True)
class Outcome:
    member_id: int
    start_step: int
    end_step: int
    score: float
    loss: float | None
    checkpoint: str | None
    checkpoint_size: int
    duration_s: float
    worker: str
    error: str | None = None
    # extension name -> what its hook returned (a knowledge writer's predictions, ...)
    extras: Mapping[str, Any] = field(default_factory=dict)
    crashed: bool = False  # the worker process died: the interval may be retried
    bad_checkpoint: str | None = None  # the start checkpoint was missing/damaged/refused

    @property
    def failed(self) -> bool:
        return self.checkpoint is None

    @classmethod
    def failure(cls, task: Task, worker: str, error: str, *, crashed: bool = False,
                duration_s: float = 0.0, loss: float | None = None, score: float = math.nan,
                bad_checkpoint: str | None = None) -> Outcome:
        """An interval that left no checkpoint; ``crashed``: its process died, so the
        controller may run it again."""
        return cls(task.member_id, task.start_step, task.start_step + task.steps, score, loss,
                   None, 0, duration_s, worker, error, crashed=crashed,
                   bad_checkpoint=bad_checkpoint)


class Backend(abc.ABC):
    """Owns the processes that train members; makes no PBT decision."""

    name: str = "backend"
    # True: intervals run inside wait(), in this process, so nothing trains between a
    # commit and the next wait() and the controller deletes garbage at once (the order
    # of deletions and dedup'd saves then no longer depends on a thread's timing)
    runs_in_wait: bool = False

    @abc.abstractmethod
    def submit(self, task: Task) -> None: ...

    @abc.abstractmethod
    def wait(self) -> list[Outcome]:
        """Block until at least one submitted task has an outcome; every task gets one."""

    @property
    @abc.abstractmethod
    def pending(self) -> int: ...

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing
        """Release processes; the default backend holds none."""

    def abort(self) -> None:
        """Stop at once (Ctrl-C, a fatal error); by default the same as close()."""
        self.close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
