"""What the runner needs from a backend: submit interval tasks, collect outcomes.

``Task`` (one member's next interval) goes in, ``Outcome`` (its score, loss and
checkpoint, or why it failed) comes out. Both are plain values: no torch here.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..ext.knowledge.sharing import KnowledgeSharing


@dataclass(frozen=True)
class Task:
    member_id: int
    start_step: int
    steps: int
    hparams: dict[str, Any]
    checkpoint: str | None
    seed: int
    knowledge: KnowledgeTask | None = None
    mix: dict[str, Any] | None = None  # torchpbt.nas: build a child of two checkpoints


@dataclass(frozen=True)
class KnowledgeTask:
    """Which shared-table version an interval reads, and whether its member writes."""

    options: KnowledgeSharing
    version: int
    writer: bool


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
    knowledge: dict[str, Any] | None = None  # a writer's predictions: indices, probs
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
