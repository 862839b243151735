"""The local backend's worker processes: started early, kept warm, one pipe each.

A process is started with ``spawn`` (safe with torch threads, the same on every OS)
and at once imports what it needs (torch, the member class and its module), so
that cost overlaps the controller's own start (preflight, store, first decisions).
It learns the checkpoint directory later, when the backend that adopts it knows it.
Each process sets ``torch.set_num_threads(cores // workers)``: oversubscribed
threads make a parallel run slower than a serial one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from .worker import ClassRef, Outcome, Task

# messages to a worker: ("dir", checkpoint_dir), ("task", Task), or None to leave


def _exit_with_parent(parent: int) -> None:
    """A SIGKILLed controller cannot stop its workers: they notice and leave on their own."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _serve(conn: Connection, ref: ClassRef, device: str, threads: int, parent: int) -> None:
    # Ctrl-C reaches the whole process group: the controller alone decides how to stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    import torch

    from .worker import IntervalRunner

    torch.set_num_threads(threads)
    member_cls, broken = None, None
    try:
        member_cls = ref.resolve()  # the warm-up: the user's module and its imports
    except Exception as exc:  # reported on every task: the run then stops, saying why
        broken = f"{type(exc).__name__}: {exc}"
    runner = None
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the controller is gone
            return
        if msg is None:
            return
        kind, payload = msg
        if kind == "dir":
            if member_cls is not None:
                runner = IntervalRunner(member_cls, payload, device)
        elif runner is None:
            conn.send(died(payload, broken or "worker got a task before its checkpoint dir"))
        else:
            conn.send(runner.run(payload))


class WorkerProcess:
    """One warm process, the task it runs (if any) and the members it holds in memory."""

    def __init__(self, index: int, ref: ClassRef, device: str, threads: int) -> None:
        ctx = mp.get_context("spawn")
        self.index = index
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, ref, device, threads, os.getpid()),
                                   daemon=True, name=f"torchpbt-worker-{index}")
        self.process.start()
        child.close()  # only the worker holds its end: its death reads as EOF here
        self.task: Task | None = None

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def send(self, msg: Any) -> None:
        try:
            self.conn.send(msg)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # it died: wait() sees its sentinel and charges the task it was given

    def stop(self, timeout: float) -> None:
        """Wait for it to leave (after it was sent None), else terminate it."""
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.conn.close()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.terminate()

    def reap(self) -> None:
        self.process.join(5)
        self.conn.close()


class WorkerSet:
    """``workers`` warm processes for one member class; a run's local backend adopts them.

    Made before the run's preflight so that the processes start while it runs;
    whoever does not hand them to a backend must ``close()`` them.
    """

    def __init__(self, member_cls: type, workers: int, devices: list[str]) -> None:
        self.ref = ClassRef.of(member_cls)
        self.devices = devices
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.processes = [self.spawn(i) for i in range(workers)]

    def spawn(self, index: int) -> WorkerProcess:
        return WorkerProcess(index, self.ref, self.devices[index % len(self.devices)],
                             self.threads)

    def close(self, timeout: float = 10.0) -> None:
        for p in self.processes:
            p.send(None)
        for p in self.processes:
            p.stop(timeout)
        self.processes = []

    def abort(self) -> None:
        for p in self.processes:
            p.kill()
        for p in self.processes:
            p.reap()
        self.processes = []

    def __enter__(self) -> WorkerSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort() if exc[0] is not None else self.close()


DIED = "worker process died"


def died(task: Task, why: str) -> Outcome:
    return Outcome.failure(task, "local", why, crashed=why == DIED)
