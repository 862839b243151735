"""Ray backend: members train in Ray actors, on this machine or on a Ray cluster.

One actor per worker slot holds an :class:`IntervalRunner`, so a member that goes on
from its own last checkpoint stays in that actor's memory (no reload), as in the local
backend's processes; tasks go back to the actor that last trained their member when it
is free. Checkpoints are not shipped through Ray's object store: every actor reads and
writes the run's checkpoint directory by path, so on a multi-node cluster the run
directory must be on a filesystem every node mounts at the same path (NFS, ...).

Ray's own fault tolerance is off (``max_restarts=0``, ``max_task_retries=0``): an actor
that dies becomes an outcome with ``crashed=True``, the controller retries the interval
like for any dead worker, and a fresh actor takes the slot.
"""

from __future__ import annotations

import bisect
import logging
import os
import warnings
from typing import Any

from .base import Backend
from .worker import ClassRef, IntervalRunner, Outcome, Task

RAY_MISSING = ("backend='ray' needs the ray package, which is not installed; install it with "
               "pip install 'torchpbt[ray]' (or use backend='local').")
DIED = "worker process died"
ACTOR_START_WAIT = 60.0  # seconds; beyond it the run starts on the actors that are up


def import_ray() -> Any:
    """Ray is an optional extra: a missing one is a clear error before any work is done."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    return ray


class RayWorker:
    """The body of one actor: a cached IntervalRunner with the threads its CPUs allow."""

    def __init__(self, ref: ClassRef, checkpoint_dir: str, device: str, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)  # oversubscribed threads slow every actor down
        self.runner = IntervalRunner(ref.resolve(), checkpoint_dir, device)

    def run(self, task: Task) -> Outcome:
        return self.runner.run(task)

    def pid(self) -> int:
        return os.getpid()


class RayBackend(Backend):
    """``workers`` Ray actors, each asking for ``cpus_per_worker`` CPUs (one GPU on CUDA).

    Uses the Ray runtime this process is already connected to; else connects to
    ``address`` (or ``RAY_ADDRESS``); else starts a local runtime with one CPU per
    worker at least. Only a connection made here is closed by :meth:`close`.
    """

    name = "ray"

    def __init__(self, member_cls: type, checkpoint_dir: str, workers: int,
                 devices: list[str] | None = None, address: str | None = None) -> None:
        ray = self._ray = import_ray()
        self.workers = workers
        self.devices = devices or ["cpu"]
        self._owns_runtime = False
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or None
            if address:
                try:
                    ray.init(address=address, logging_level=logging.WARNING)
                except ConnectionError as exc:
                    raise ConnectionError(
                        f"backend='ray': cannot connect to the Ray cluster at {address!r} "
                        f"({exc}); check RAY_ADDRESS and that the cluster is up (a cluster "
                        "started with token authentication needs RAY_AUTH_MODE=token here too)."
                    ) from None
            else:
                # "local": a new runtime, even if `ray start` left a cluster on this machine
                ray.init(address="local", num_cpus=max(workers, os.cpu_count() or 1),
                         include_dashboard=False, logging_level=logging.WARNING)
            self._owns_runtime = True
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < workers:
            warnings.warn(f"backend='ray': the Ray cluster has {cpus} CPU(s) for workers={workers}; "
                          "actors that do not fit wait until CPUs free up.", stacklevel=2)
        self.cpus_per_worker = max(1, cpus // workers)
        self._cls = ray.remote(RayWorker)
        # absolute paths: an actor on another node need not share this process's cwd
        ref = ClassRef.of(member_cls)
        if ref.path is not None:
            ref = ClassRef(ref.module, ref.qualname, os.path.abspath(ref.path))
        self._args = (ref, os.path.abspath(checkpoint_dir))
        self._actors: list[Any] = [self._new_actor(slot) for slot in range(workers)]
        self._await_actors(ACTOR_START_WAIT)
        self._idle: list[int] = list(range(workers))
        self._queue: list[Task] = []  # kept least-advanced first (start step, member)
        self._running: dict[Any, tuple[int, Task]] = {}  # ObjectRef → (slot, task)
        self._holder: dict[int, int] = {}  # member → the slot whose actor has it in memory
        self._ready: list[Outcome] = []

    def _new_actor(self, slot: int) -> Any:
        device = self.devices[slot % len(self.devices)]
        gpus = 0
        if device.startswith("cuda"):  # Ray picks the GPU and makes it the only visible one
            device, gpus = "cuda:0", 1
        return self._cls.options(num_cpus=self.cpus_per_worker, num_gpus=gpus, max_restarts=0,
                                 max_task_retries=0).remote(*self._args, device,
                                                            self.cpus_per_worker)

    def _await_actors(self, timeout: float) -> None:
        """Start training once every actor is up, so one that imports torch slower does not
        find its peers' members far ahead (async exploit waits for everyone's first score).
        Actors that cannot start in time (no free CPUs yet) are not waited for."""
        self._ray.wait([a.pid.remote() for a in self._actors], num_returns=len(self._actors),
                       timeout=timeout)

    def submit(self, task: Task) -> None:
        bisect.insort(self._queue, task, key=lambda t: (t.start_step, t.member_id))
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand queued tasks to idle actors, each to the actor that holds its member if free."""
        for task in list(self._queue):
            slot = self._holder.get(task.member_id)
            if slot in self._idle:
                self._start(slot, task)
        while self._queue and self._idle:
            self._start(self._idle[0], self._queue[0])

    def _start(self, slot: int, task: Task) -> None:
        self._queue.remove(task)
        self._idle.remove(slot)
        self._running[self._actors[slot].run.remote(task)] = (slot, task)

    def wait(self) -> list[Outcome]:
        if not self._ready and not self._running:
            raise RuntimeError("wait() with no task submitted")
        if not self._ready:
            refs = list(self._running)
            self._ray.wait(refs, num_returns=1)
            done, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
            self._ready = [self._collect(ref) for ref in done]
        out, self._ready = self._ready, []
        self._dispatch()
        return out

    def _collect(self, ref: Any) -> Outcome:
        slot, task = self._running.pop(ref)
        try:
            out: Outcome = self._ray.get(ref)
        except self._ray.exceptions.RayActorError as exc:  # the process (or its node) died
            self._actors[slot] = self._new_actor(slot)
            self._holder = {m: s for m, s in self._holder.items() if s != slot}
            self._idle.append(slot)
            return _failed(task, f"{DIED}: {exc}", crashed=True)
        except self._ray.exceptions.RayError as exc:  # not the member's code: that is caught
            self._idle.append(slot)
            return _failed(task, f"{type(exc).__name__}: {exc}")
        self._idle.append(slot)
        if out.checkpoint is not None:
            self._holder[task.member_id] = slot
        else:
            self._holder.pop(task.member_id, None)
        return out

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._running) + len(self._ready)

    def actor_pids(self) -> list[int]:
        """The actors' process ids (tests check they are gone after abort)."""
        return list(self._ray.get([a.pid.remote() for a in self._actors]))

    def close(self) -> None:
        self._stop()

    def abort(self) -> None:
        """Stop now (Ctrl-C): running intervals are dropped; resume runs them again."""
        self._stop()

    def _stop(self) -> None:
        if not self._ray.is_initialized():
            return
        for actor in self._actors:
            self._ray.kill(actor, no_restart=True)
        self._actors, self._running, self._queue = [], {}, []
        if self._owns_runtime:
            self._ray.shutdown()


def _failed(task: Task, why: str, crashed: bool = False) -> Outcome:
    return Outcome.failure(task, "ray", why, crashed=crashed)
