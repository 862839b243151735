"""What the runner needs from a backend: submit interval tasks, collect outcomes."""

from __future__ import annotations

import abc

from .worker import Outcome, Task


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
