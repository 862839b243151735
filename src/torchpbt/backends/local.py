"""Process-pool backend for one machine: ``workers`` processes, one device each.

Processes are started with ``spawn`` (safe with torch threads, same on every
OS). Each sets ``torch.set_num_threads(cores // workers)``: oversubscribed
threads make a parallel run slower than a serial one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .base import Backend
from .worker import ClassRef, IntervalRunner, Outcome, Task

_RUNNER: IntervalRunner | None = None


def _init_worker(ref: ClassRef, checkpoint_dir: str, devices: list[str], threads: int,
                 slots: Any) -> None:
    global _RUNNER
    import torch

    torch.set_num_threads(threads)
    slot = slots.get()
    _RUNNER = IntervalRunner(ref.resolve(), checkpoint_dir, devices[slot % len(devices)])


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
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        ctx = mp.get_context("spawn")
        slots = ctx.Queue()
        for i in range(self.workers * 4):  # spare slots for replaced processes
            slots.put(i)
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        return ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_init_worker,
            initargs=(*self._args, self.devices, threads, slots),
        )

    def submit(self, task: Task) -> None:
        self._futures[self._pool.submit(_run, task)] = task

    def wait(self) -> list[Outcome]:
        if not self._futures:
            raise RuntimeError("wait() with no task submitted")
        done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
        outcomes, broken = [], False
        for fut in done:
            task = self._futures.pop(fut)
            try:
                outcomes.append(fut.result())
            except BrokenProcessPool:
                broken = True
                outcomes.append(_died(task, "worker process died"))
            except Exception as exc:  # e.g. the worker could not import the member class
                outcomes.append(_died(task, f"{type(exc).__name__}: {exc}"))
        if broken:  # every task still in the broken pool is lost: report them failed
            outcomes += [_died(t, "worker process died") for t in self._futures.values()]
            self._futures.clear()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
        return outcomes

    @property
    def pending(self) -> int:
        return len(self._futures)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _died(task: Task, why: str) -> Outcome:
    return Outcome(task.member_id, task.start_step, task.start_step + task.steps, float("nan"),
                   None, None, 0, 0.0, "local", why)
