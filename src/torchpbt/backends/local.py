"""Process-pool backend for one machine: ``workers`` processes, one device each.

Processes are started with ``spawn`` (safe with torch threads, same on every
OS). Each sets ``torch.set_num_threads(cores // workers)``: oversubscribed
threads make a parallel run slower than a serial one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .base import Backend
from .worker import ClassRef, IntervalRunner, Outcome, Task

_RUNNER: IntervalRunner | None = None


def _init_worker(ref: ClassRef, checkpoint_dir: str, devices: list[str], threads: int,
                 slots: Any, parent: int) -> None:
    global _RUNNER
    import torch

    # Ctrl-C reaches the whole process group: the controller alone decides how to stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)
    slot = slots.get()
    _RUNNER = IntervalRunner(ref.resolve(), checkpoint_dir, devices[slot % len(devices)])


def _exit_with_parent(parent: int) -> None:
    """A SIGKILLed controller cannot stop its pool: workers notice and leave on their own."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _run(task: Task) -> Outcome:
    assert _RUNNER is not None, "worker not initialised"
    return _RUNNER.run(task)


class LocalBackend(Backend):
    name = "local"

    def __init__(self, member_cls: type, checkpoint_dir: str, workers: int,
                 devices: list[str] | None = None) -> None:
        self.workers = workers
        self.devices = devices or ["cpu"]
        self._args = (ClassRef.of(member_cls), checkpoint_dir)
        self._futures: dict[Future[Outcome], Task] = {}
        self._ready: list[Outcome] = []
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        ctx = mp.get_context("spawn")
        slots = ctx.Queue()
        for i in range(self.workers * 4):  # spare slots for replaced processes
            slots.put(i)
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        return ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_init_worker,
            initargs=(*self._args, self.devices, threads, slots, os.getpid()),
        )

    def submit(self, task: Task) -> None:
        try:
            fut = self._pool.submit(_run, task)
        except BrokenProcessPool:  # a worker died since the last wait(): recover, then retry
            self._recover()
            fut = self._pool.submit(_run, task)
        self._futures[fut] = task

    def wait(self) -> list[Outcome]:
        if self._ready:
            out, self._ready = self._ready, []
            return out
        if not self._futures:
            raise RuntimeError("wait() with no task submitted")
        done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
        outcomes = [self._outcome(f, self._futures.pop(f)) for f in done]
        if any(o.error == DIED for o in outcomes):
            self._recover()
        return outcomes

    def _outcome(self, fut: Future[Outcome], task: Task) -> Outcome:
        try:
            return fut.result()
        except BrokenProcessPool:
            return _died(task, DIED)
        except Exception as exc:  # e.g. the worker could not import the member class
            return _died(task, f"{type(exc).__name__}: {exc}")

    def _recover(self) -> None:
        """Every task still in the broken pool gets an outcome; a fresh pool takes over."""
        for fut, task in list(self._futures.items()):
            if fut.done() and not fut.cancelled():
                self._ready.append(self._outcome(fut, task))
            else:
                self._ready.append(_died(task, DIED))
        self._futures.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    @property
    def pending(self) -> int:
        return len(self._futures) + len(self._ready)

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
