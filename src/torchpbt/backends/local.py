"""Process-pool backend for one machine: ``workers`` processes, one device each.

Processes are started with ``spawn`` (safe with torch threads, same on every
OS). Each sets ``torch.set_num_threads(cores // workers)``: oversubscribed
threads make a parallel run slower than a serial one.
"""

from __future__ import annotations

import heapq
import itertools
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .base import Backend
from .worker import ClassRef, IntervalRunner, Outcome, Task

_RUNNER: IntervalRunner | None = None
_RUNNING: Any = None  # shared with the controller: (pid, member_id, start_step) per slot
_SLOT = 0


def _init_worker(ref: ClassRef, checkpoint_dir: str, devices: list[str], threads: int,
                 slots: Any, parent: int, running: Any) -> None:
    global _RUNNER, _RUNNING, _SLOT
    import torch

    # Ctrl-C reaches the whole process group: the controller alone decides how to stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)
    slot = slots.get()
    _RUNNING, _SLOT = running, slot
    _RUNNER = IntervalRunner(ref.resolve(), checkpoint_dir, devices[slot % len(devices)])


def _exit_with_parent(parent: int) -> None:
    """A SIGKILLed controller cannot stop its pool: workers notice and leave on their own."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _run(task: Task) -> Outcome:
    assert _RUNNER is not None, "worker not initialised"
    # what this process runs, in shared memory: read by the controller only if the process
    # dies, and there even after a hard exit. The pid goes last, so a half-written slot
    # names no process.
    i = 3 * _SLOT
    _RUNNING[i] = 0
    _RUNNING[i + 1], _RUNNING[i + 2] = task.member_id, task.start_step
    _RUNNING[i] = os.getpid()
    return _RUNNER.run(task)


class LocalBackend(Backend):
    name = "local"

    def __init__(self, member_cls: type, checkpoint_dir: str, workers: int,
                 devices: list[str] | None = None) -> None:
        self.workers = workers
        self.devices = devices or ["cpu"]
        self._args = (ClassRef.of(member_cls), checkpoint_dir)
        self._futures: dict[Future[Outcome], Task] = {}
        # futures put themselves here when done: waiting on 10,000 futures at once
        # (concurrent.futures.wait) cost O(population) per event
        self._finished: queue.SimpleQueue[Future[Outcome]] = queue.SimpleQueue()
        self._ready: list[Outcome] = []
        # tasks not yet handed to the pool, least-advanced first: the pool itself runs
        # what it is given in order, so it only ever holds as many tasks as it has workers
        self._queued: list[tuple[int, int, int, Task]] = []
        self._seq = itertools.count()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        ctx = mp.get_context("spawn")
        slots = ctx.Queue()
        n_slots = self.workers * 4  # spare slots for replaced processes
        for i in range(n_slots):
            slots.put(i)
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        # per worker slot, the task it began last: what it was running if it died. Shared
        # memory, not a queue: nothing to read per interval (a pipe of start records cost
        # ~8% of the controller's throughput, and hung runs once nobody read it)
        self._running = ctx.Array("q", 3 * n_slots, lock=False)
        self._procs: dict[int, Any] = {}  # pid → Process; the pool forgets them once broken
        return ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_init_worker,
            initargs=(*self._args, self.devices, threads, slots, os.getpid(), self._running),
        )

    def running(self) -> dict[tuple[int, int], int]:
        """(member, start step) → pid of the process that began it last."""
        r = list(self._running)
        return {(r[i + 1], r[i + 2]): r[i] for i in range(0, len(r), 3) if r[i]}

    def submit(self, task: Task) -> None:
        heapq.heappush(self._queued, (task.start_step, task.member_id, next(self._seq), task))
        self._fill()

    def _fill(self) -> None:
        """Hand queued tasks to the pool while it has an idle worker."""
        while self._queued and len(self._futures) < self.workers:
            task = heapq.heappop(self._queued)[3]
            try:
                fut = self._pool.submit(_run, task)
            except BrokenProcessPool:  # a worker died since the last wait(): recover, retry
                self._recover()
                fut = self._pool.submit(_run, task)
            self._track(fut, task)

    def _track(self, fut: Future[Outcome], task: Task) -> None:
        self._futures[fut] = task
        fut.add_done_callback(self._finished.put)

    def wait(self) -> list[Outcome]:
        if self._ready:
            out, self._ready = self._ready, []
            return out
        if not self._futures:
            raise RuntimeError("wait() with no task submitted")
        self._procs.update(getattr(self._pool, "_processes", None) or {})
        done = [self._finished.get()]
        while not self._finished.empty():
            done.append(self._finished.get())
        # a future of a pool replaced since (or already sorted by _recover) is not ours
        done = list(dict.fromkeys(f for f in done if f in self._futures))
        if not done:
            return self.wait()
        if any(isinstance(f.exception(), BrokenProcessPool) for f in done if not f.cancelled()):
            self._recover()  # sorts every task of the broken pool: culprit, done, or resubmit
            return self.wait()
        out = [self._outcome(f, self._futures.pop(f)) for f in done]
        self._fill()  # now, not after the controller's commit: no worker idles meanwhile
        return out

    def _outcome(self, fut: Future[Outcome], task: Task) -> Outcome:
        try:
            return fut.result()
        except BrokenProcessPool:
            return _died(task, DIED)
        except Exception as exc:  # e.g. the worker could not import the member class
            return _died(task, f"{type(exc).__name__}: {exc}")

    def _recover(self) -> None:
        """One dead worker breaks the whole pool: a fresh pool takes over.

        Only the task whose own process died gets a crash outcome (the controller
        retries it, counting the attempt); tasks that were queued, or killed because
        their pool broke, are resubmitted without being charged. If no culprit can
        be told apart (e.g. workers die while starting), every task is charged.
        """
        procs = {**self._procs, **(getattr(self._pool, "_processes", None) or {})}
        lost: list[Task] = []
        for fut, task in list(self._futures.items()):
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._ready.append(fut.result())
            elif fut.done() and not isinstance(fut.exception(), BrokenProcessPool):
                self._ready.append(self._outcome(fut, task))
            else:
                lost.append(task)
        self._futures.clear()

        running = self.running()

        def died_itself(task: Task) -> bool:
            proc = procs.get(running.get((task.member_id, task.start_step), -1))
            if proc is None:
                return False
            # the pool terminates every worker once one dies: after the join, the culprit
            # shows its own exit code, the others SIGTERM's (the pool's own thread may
            # be reaping them at the same moment, hence a join rather than one look)
            deadline = time.monotonic() + 5
            proc.join(timeout=5)
            while proc.exitcode is None and time.monotonic() < deadline:
                time.sleep(0.02)  # reaped by the pool's thread: its exit code lands shortly
            code = proc.exitcode
            return code is not None and code != -signal.SIGTERM

        culprits = [t for t in lost if died_itself(t)] or lost
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
        self._ready += [_died(t, DIED) for t in culprits]
        for task in lost:
            if task not in culprits:
                self._track(self._pool.submit(_run, task), task)
        self._fill()

    @property
    def pending(self) -> int:
        return len(self._futures) + len(self._ready) + len(self._queued)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Stop now (Ctrl-C): running intervals are dropped; resume runs them again."""
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.terminate()
        for p in processes:
            p.join(timeout=5)


DIED = "worker process died"


def _died(task: Task, why: str) -> Outcome:
    return Outcome(task.member_id, task.start_step, task.start_step + task.steps, float("nan"),
                   None, None, 0, 0.0, "local", why, crashed=why == DIED)
