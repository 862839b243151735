"""Process backend for one machine: ``workers`` warm processes, one device each.

Each process keeps the members it trained alive in memory (see ``IntervalRunner``),
so a member's next interval goes back to the process that holds it whenever that
costs the schedule little: no checkpoint load, no rebuild. A process that dies
charges only the interval it was running; a fresh one takes its place.
"""

from __future__ import annotations

import heapq
import itertools
from multiprocessing.connection import wait as wait_for
from typing import Any

from .base import Backend
from .local_pool import DIED, WorkerProcess, WorkerSet, died
from .worker import Outcome, Task


class _Queue:
    """Tasks not yet running, least-advanced first, also indexed by the worker that
    holds their member. An entry lives in both heaps; taking it marks it, and a
    heap drops marked entries when they reach its top."""

    def __init__(self) -> None:
        self._all: list[list[Any]] = []
        self._by_home: dict[int, list[list[Any]]] = {}
        self._seq = itertools.count()
        self.size = 0

    def push(self, task: Task, home: int | None) -> None:
        entry = [task.start_step, task.member_id, next(self._seq), task, False]
        heapq.heappush(self._all, entry)
        if home is not None:
            heapq.heappush(self._by_home.setdefault(home, []), entry)
        self.size += 1

    @staticmethod
    def _top(heap: list[list[Any]]) -> list[Any] | None:
        while heap and heap[0][4]:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _take(self, entry: list[Any]) -> Task:
        entry[4] = True
        self.size -= 1
        return entry[3]

    def take_own(self, worker: int) -> Task | None:
        """The least-advanced task of a member ``worker`` holds, if no queued task is less
        advanced. Running one ahead of the rest skews async PBT: a member that copies
        a donor trained further takes its step count too, and trains fewer steps."""
        first, own = self._top(self._all), self._top(self._by_home.get(worker, []))
        if first is None or own is None or own[0] > first[0]:
            return None
        return self._take(own)

    def take_first(self) -> Task | None:
        first = self._top(self._all)
        return None if first is None else self._take(first)


class LocalBackend(Backend):
    name = "local"

    def __init__(self, member_cls: type, checkpoint_dir: str, workers: int,
                 devices: list[str] | None = None, *, started: WorkerSet | None = None) -> None:
        if started is not None and len(started.processes) != workers:
            raise ValueError(f"started holds {len(started.processes)} workers, not {workers}")
        self.workers = workers
        # processes started earlier (while the run's preflight ran) are adopted as they are
        self._set = started or WorkerSet(member_cls, workers, devices or ["cpu"])
        self._dir = checkpoint_dir
        for p in self._set.processes:
            p.send(("dir", checkpoint_dir))
        self._queue = _Queue()
        self._home: dict[int, int] = {}  # member → the worker that trained it last
        self._ready: list[Outcome] = []

    @property
    def _procs(self) -> list[WorkerProcess]:
        return self._set.processes

    def running(self) -> dict[tuple[int, int], int]:
        """(member, start step) → pid of the process running it now."""
        return {(p.task.member_id, p.task.start_step): p.pid for p in self._procs if p.task}

    def submit(self, task: Task) -> None:
        self._queue.push(task, self._home.get(task.member_id))
        self._fill()

    def _fill(self) -> None:
        """Give every idle worker a task: its own members' first, then the least advanced."""
        idle = [p for p in self._procs if p.task is None]
        for p in idle:
            task = self._queue.take_own(p.index)
            if task is not None:
                self._start(p, task)
        for p in idle:
            if p.task is None:
                task = self._queue.take_first()
                if task is None:
                    return
                self._start(p, task)

    def _start(self, p: WorkerProcess, task: Task) -> None:
        p.task = task
        self._home[task.member_id] = p.index
        p.send(("task", task))

    def wait(self) -> list[Outcome]:
        if self._ready:
            out, self._ready = self._ready, []
            return out
        busy = [p for p in self._procs if p.task is not None]
        if not busy:
            raise RuntimeError("wait() with no task submitted")
        by_handle: dict[Any, WorkerProcess] = {}
        for p in busy:
            by_handle[p.conn] = by_handle[p.process.sentinel] = p
        done = {id(by_handle[h]): by_handle[h] for h in wait_for(list(by_handle))}
        out = [self._collect(p) for p in done.values()]
        self._fill()  # now, not after the controller's commit: no worker idles meanwhile
        return out

    def _collect(self, p: WorkerProcess) -> Outcome:
        task, p.task = p.task, None
        assert task is not None
        outcome: Outcome | None = None
        try:
            if p.conn.poll():
                outcome = p.conn.recv()
        except (EOFError, OSError):  # it died while (or instead of) sending
            pass
        except Exception as exc:  # e.g. an outcome that cannot be unpickled here
            outcome = died(task, f"{type(exc).__name__}: {exc}")
        if outcome is None or not p.process.is_alive():
            self._replace(p)
        return outcome if outcome is not None else died(task, DIED)

    def _replace(self, p: WorkerProcess) -> None:
        p.reap()
        fresh = self._set.spawn(p.index)
        fresh.send(("dir", self._dir))
        self._procs[p.index] = fresh

    @property
    def pending(self) -> int:
        return len(self._ready) + self._queue.size + sum(p.task is not None for p in self._procs)

    def close(self) -> None:
        self._set.close()

    def abort(self) -> None:
        """Stop now (Ctrl-C): running intervals are dropped; resume runs them again."""
        self._set.abort()
