"""``torchpbt worker``: a process that trains a run's intervals from its store's queue.

Start any number, on any hosts that reach the database and see the run's
directory (its checkpoints) at the same path, or pass ``run_dir``. A worker
makes no PBT decision: it claims the oldest queued interval, trains it, hands
the outcome back, and stops when the run is finished. SIGTERM or Ctrl-C put the
interval it holds back in the queue, so stopping a worker costs nothing; a
worker killed outright is noticed by its missing heartbeats and its interval is
run again elsewhere.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..engine.checkpoints import atomic_write
from ..engine.resume import member_class_of
from ..engine.settings import RunSettings
from ..store import SQLStore, StoreError
from ..store.queue import TaskQueue
from .queue import EXTRAS_DIR, outcome_to_json
from .worker import (
    IntervalRunner,
    Outcome,
    _getattr_path,
    load_module_from_path,
    task_from_json,
)


class WorkerStopped(KeyboardInterrupt):
    """SIGTERM: leave like Ctrl-C, handing back the interval in hand."""


def serve(
    storage: str,
    run: str,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    member: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    wait: float = 0.0,
    poll: float = 0.5,
    log: Callable[[str], None] | None = print,
) -> int:
    """Train intervals of the run named ``run`` in ``storage`` until it is finished;
    return how many this worker trained. ``member`` ("file.py:Class" or
    "module:Class") overrides the class stored with the run, for hosts where it
    lives elsewhere; ``wait`` is how long to wait for the run to be created."""
    say = log or (lambda _msg: None)
    store, found = _find(storage, run, wait)
    try:
        cfg = RunSettings.from_dict(found["config"])
        if found["status"] in ("done", "failed"):
            say(f"run {run!r} is already {found['status']}; nothing to do.")
            return 0
        root = Path(run_dir) if run_dir is not None else Path(cfg.run_dir)
        checkpoints = root / "checkpoints"
        if not checkpoints.is_dir():
            raise StoreError(
                f"run {run!r} keeps its checkpoints in {checkpoints}, which this host does not "
                "see; mount the run directory (a shared filesystem) at that path or pass "
                "--run-dir with where it is mounted here."
            )
        member_cls = _member_class(member, cfg.member)
        if threads:
            torch.set_num_threads(threads)
        runner = IntervalRunner(member_cls, str(checkpoints), device)
        queue = TaskQueue(store.engine, found["id"])
        beat_every = max(0.2, cfg.worker_timeout / 6)
        say(f"worker {runner.name}: run {run!r}, member class {member_cls.__name__}, "
            f"checkpoints in {checkpoints}")
        return _loop(queue, runner, root / EXTRAS_DIR, beat_every, poll, say)
    finally:
        store.close()


def _find(storage: str, run: str, wait: float) -> tuple[SQLStore, dict[str, Any]]:
    """The store and the run, waiting up to ``wait`` s for either to be created."""
    deadline = time.monotonic() + wait
    while True:
        store = None
        try:
            store = SQLStore(storage, create=False)
            return store, store.find_run(run)
        except StoreError as exc:
            if store is not None:
                store.close()
            if time.monotonic() >= deadline:
                if store is None and "holds no torchpbt run" not in str(exc):
                    raise  # cannot connect, or a newer schema: waiting will not help
                more = (f"waited {wait:g} s; give a longer --wait" if wait > 0 else
                        "give --wait SECONDS to wait for it")
                raise StoreError(
                    f"no run named {run!r} in {storage}; start it first (torchpbt.run with "
                    f"backend='workers' and this storage), check the name, or {more}."
                ) from None
            time.sleep(0.5)


def _member_class(override: str | None, stored: dict[str, Any]) -> type:
    if override is None:
        return member_class_of(stored, "--member FILE.py:Class (or module:Class) to "
                                       "torchpbt worker")
    where, sep, qualname = override.rpartition(":")
    if not sep or not where or not qualname:
        raise ValueError(f"--member {override!r}: give FILE.py:Class or module:Class.")
    try:
        if where.endswith(".py"):
            return _getattr_path(load_module_from_path(os.path.abspath(where)), qualname)
        import importlib

        return _getattr_path(importlib.import_module(where), qualname)
    except Exception as exc:
        raise ValueError(f"--member {override!r}: cannot import it ({type(exc).__name__}: "
                         f"{exc}); give FILE.py:Class or module:Class.") from exc


def _loop(queue: TaskQueue, runner: IntervalRunner, extras_dir: Path, beat_every: float,
          poll: float,
          say: Callable[[str], None]) -> int:
    trained = 0
    holding: int | None = None
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_stopped)
    idle = poll / 8
    try:
        while True:
            claimed = queue.claim(runner.name)
            if claimed is None:
                status = queue.run_status()
                if status in ("done", "failed"):
                    say(f"worker {runner.name}: run is {status}; trained {trained} interval(s).")
                    return trained
                time.sleep(idle)
                idle = min(poll, idle * 2)
                continue
            idle = poll / 8
            holding, payload = claimed
            task = task_from_json(payload)
            with _Heartbeat(queue, holding, runner.name, beat_every):
                out = runner.run(task)
            xfile = _save_extras(extras_dir, holding, out)
            if queue.finish(holding, runner.name, outcome_to_json(out, xfile)):
                trained += 1
                say(_line(out))
            else:
                if xfile:
                    (extras_dir / xfile).unlink(missing_ok=True)
                say(f"member {out.member_id} steps {out.start_step}-{out.end_step}: result "
                    "refused (the controller gave the interval up or was restarted)")
            holding = None
    except KeyboardInterrupt:
        if holding is not None and queue.release(holding, runner.name):
            say(f"worker {runner.name}: stopped; its interval went back to the queue.")
        raise
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def _raise_stopped(_sig: int, _frame: Any) -> None:
    raise WorkerStopped()


def _line(out: Outcome) -> str:
    what = f"score {out.score:.4g}" if out.checkpoint else f"failed: {(out.error or '')[-200:]}"
    return (f"member {out.member_id} steps {out.start_step}-{out.end_step}: {what} "
            f"({out.duration_s:.2f} s)")


def _save_extras(folder: Path, task_id: int, out: Outcome) -> str | None:
    """What extensions recorded (a knowledge writer's predictions: tensors) goes into
    the run directory, not into the database."""
    if not out.extras:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(dict(out.extras), buf)
    name = f"{task_id}.pt"
    atomic_write(folder / name, buf.getvalue())
    return name


class _Heartbeat:
    """Beats in a thread while an interval trains (torch releases the GIL)."""

    def __init__(self, queue: TaskQueue, task_id: int, worker: str, every: float) -> None:
        self.queue, self.task_id, self.worker, self.every = queue, task_id, worker, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not self.queue.beat(self.task_id, self.worker):
                    return  # taken from us: the result will be refused anyway
            except Exception:  # a database hiccup: the next beat may get through
                continue

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
