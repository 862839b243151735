"""``torchpbt.run``: validate everything, then tie scheduler, backend, store and checkpoints."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .backends import (
    Backend,
    ClassRef,
    Outcome,
    Task,
    default_workers,
    derive_seed,
    make_backend,
    resolve_devices,
)
from .backends.worker import KnowledgeTask
from .checkpoints import CheckpointDir
from .display import LiveDisplay, print_summary
from .distill import KnowledgeSharing, KnowledgeTable
from .exploit import Truncation, check_exploit
from .explore import Perturb, check_explore
from .member import check_member_class
from .result import DB_NAME, Result, store_url_for
from .scheduler import Decision, PBTConfig, Report, make_scheduler
from .space import Domain, Space
from .store import EventRecord, IntervalRecord, MemberUpdate, SQLStore

_DEFAULT = object()


def _prepare_run_dir(run_dir: str | Path | None, member_cls: type) -> Path:
    if run_dir is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        run_dir = Path("runs") / f"{member_cls.__name__.lower()}-{stamp}"
    run_dir = Path(run_dir)
    if (run_dir / DB_NAME).exists():
        raise FileExistsError(
            f"{run_dir} already holds a run; pass a new run_dir (or delete this one) "
            "so nothing is overwritten."
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"run_dir {run_dir} is a file; give a directory path.")
    return run_dir


def run(
    member: type,
    space: Mapping[str, Domain],
    *,
    population: int = 8,
    ready_every: int = 100,
    steps: int = 1000,
    exploit: Any = _DEFAULT,
    explore: Any = _DEFAULT,
    mode: str = "max",
    sync: bool = False,
    burn_in: int = 0,
    inherit_hparams: bool = True,
    explore_when: str = "exploit",
    initial_hparams: Sequence[Mapping[str, Any]] | None = None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    storage: str | None = None,
    name: str | None = None,
    backend: str | None = None,
    workers: int | None = None,
    devices: str | list[str] | None = None,
    progress: bool = True,
    summary: bool | None = None,
    knowledge_sharing: KnowledgeSharing | None = None,
) -> Result:
    """Train a population with PBT and return its :class:`Result`.

    Every argument is checked before any directory, store or process is made.
    ``exploit``/``explore`` default to ``Truncation(0.2)`` / ``Perturb()``;
    ``None`` disables them (both ``None`` is random search). ``backend`` is
    ``"serial"`` (deterministic, in-process) or ``"local"`` (process pool of
    ``workers``, default the number of cores); by default ``local`` when more
    than one worker is available. ``knowledge_sharing`` turns on distillation
    from the top members (see :class:`torchpbt.KnowledgeSharing`).
    """
    exploit = Truncation(0.2) if exploit is _DEFAULT else exploit
    explore = Perturb() if explore is _DEFAULT else explore
    check_member_class(member)
    space = Space(space)
    config = PBTConfig(population, ready_every, steps, mode, burn_in, inherit_hparams, explore_when)
    check_exploit(exploit)
    check_explore(explore)
    if knowledge_sharing is not None:
        if not isinstance(knowledge_sharing, KnowledgeSharing):
            raise TypeError(
                f"knowledge_sharing={knowledge_sharing!r}: pass torchpbt.KnowledgeSharing(...)."
            )
        knowledge_sharing.validate(space, population)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an int.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers={workers!r}: give a positive int (default: number of cores).")
    n_workers = workers or default_workers()
    backend = backend or ("local" if n_workers > 1 else "serial")
    if backend not in ("serial", "local"):
        raise ValueError(f"backend={backend!r}: use 'serial' or 'local'.")
    device_list = resolve_devices(devices)
    scheduler = make_scheduler(sync, space, config, exploit, explore, seed=seed,
                               initial_hparams=initial_hparams)
    run_path = _prepare_run_dir(run_dir, member)
    run_path.mkdir(parents=True, exist_ok=True)
    store = SQLStore(storage or store_url_for(run_path))
    ref = ClassRef.of(member)
    settings = {
        "population": population, "ready_every": ready_every, "steps": steps, "mode": mode,
        "sync": sync, "burn_in": burn_in, "inherit_hparams": inherit_hparams,
        "explore_when": explore_when, "seed": seed, "exploit": repr(exploit),
        "explore": repr(explore), "backend": backend, "workers": n_workers,
        "devices": device_list, "member": {"module": ref.module, "qualname": ref.qualname,
                                           "path": ref.path},
        "run_dir": str(run_path.resolve()), "torchpbt": __version__,
        "knowledge_sharing": knowledge_sharing.to_dict() if knowledge_sharing else None,
    }
    controller = _Controller(scheduler, store, CheckpointDir(run_path / "checkpoints"), seed,
                             _Sharing(knowledge_sharing, run_path) if knowledge_sharing else None)
    try:
        controller.create(name or run_path.name, settings, space)
        with make_backend(backend, member, str(run_path / "checkpoints"), n_workers,
                          device_list) as be, LiveDisplay(population * steps, steps,
                                                          enabled=progress) as live:
            controller.drive(be, live)
    finally:
        store.close()
    result = Result.load(run_path, storage)
    if summary if summary is not None else progress:
        print_summary(result)
    return result


class _Controller:
    """The only writer: turns outcomes into reports, decisions into tasks and records."""

    def __init__(self, scheduler: Any, store: SQLStore, checkpoints: CheckpointDir,
                 seed: int, sharing: _Sharing | None = None) -> None:
        self.scheduler, self.store, self.checkpoints, self.seed = scheduler, store, checkpoints, seed
        self.sharing = sharing
        self.in_flight: dict[int, Task] = {}
        self.known: set[str] = set()
        self.run_id = -1

    def create(self, name: str, settings: Mapping[str, Any], space: Space) -> None:
        self.decisions = self.scheduler.start()
        members = [MemberUpdate(d.member_id, d.hparams, 0, None, "training") for d in self.decisions]
        self.run_id = self.store.create_run(name, settings, space.to_dict(), members)
        events = [EventRecord("start", d.member_id, 0, new_hparams=d.hparams) for d in self.decisions]
        self.store.record(self.run_id, None, events, [], self.scheduler.state_dict())

    def drive(self, backend: Backend, live: LiveDisplay) -> None:
        for d in self.decisions:
            live.update(d.member_id, status="training", hparams=d.hparams)
            self._submit(backend, d)
        while backend.pending:
            for out in backend.wait():
                self._handle(backend, out, live)
        self.store.record(self.run_id, None, [], [], self.scheduler.state_dict(), status="done")

    def _submit(self, backend: Backend, d: Decision) -> None:
        knowledge = self.sharing.task_for(d.member_id, self.scheduler) if self.sharing else None
        task = Task(d.member_id, d.step, d.train_steps, d.hparams, d.checkpoint,
                    derive_seed(self.seed, d.member_id, d.step), knowledge)
        self.in_flight[d.member_id] = task
        backend.submit(task)

    def _handle(self, backend: Backend, out: Outcome, live: LiveDisplay) -> None:
        task = self.in_flight.pop(out.member_id)
        decisions = self.scheduler.report(
            Report(out.member_id, out.end_step, out.score, out.checkpoint, out.failed, out.error))
        events = []
        extra = None
        if self.sharing and task.knowledge is not None:
            extra = {"knowledge_version": task.knowledge.version, "writer": task.knowledge.writer}
            if out.knowledge is not None and not out.failed:
                events += self.sharing.merge(out, self.in_flight.values())
        interval = IntervalRecord(
            out.member_id, task.start_step, out.end_step, task.hparams, task.checkpoint,
            out.checkpoint, None if out.failed else out.score, out.loss, out.duration_s,
            out.worker, out.error, out.checkpoint_size, extra)
        if out.failed:
            events.append(EventRecord("fail", out.member_id, out.end_step,
                                      detail={"error": out.error, "score": repr(out.score)}))
        for d in decisions:
            if d.action != "continue":
                detail = {"reason": d.reason} if d.reason else {}
                if d.action == "exploit":
                    detail.update(checkpoint=d.checkpoint, score=d.score,
                                  donor_score=d.donor_score)
                events.append(EventRecord(d.action, d.member_id, d.step, d.donor_id, d.donor_step,
                                          d.old_hparams, d.hparams, d.operations, detail))
        updates = [MemberUpdate(d.member_id, d.hparams, d.step, d.checkpoint,
                                "done" if d.action == "stop" else "training", d.donor_id,
                                d.action == "exploit") for d in decisions]
        if out.checkpoint:
            self.known.add(out.checkpoint)
        live_keys = {m.checkpoint for m in self.scheduler.members.values() if m.checkpoint}
        live_keys |= {t.checkpoint for t in self.in_flight.values() if t.checkpoint}
        live_keys |= {d.checkpoint for d in decisions if d.checkpoint}
        garbage = sorted(self.known - live_keys)
        self.store.record(self.run_id, interval, events, updates, self.scheduler.state_dict(),
                          deleted_checkpoints=garbage)
        for key in garbage:  # after the commit: a crash here leaves only stray files
            self.checkpoints.delete(key)
        self.known -= set(garbage)
        live.update(out.member_id, score=None if out.failed else out.score)
        for d in decisions:
            row = {"step": d.step, "hparams": d.hparams,
                   "status": "done" if d.action == "stop" else "training"}
            if d.action == "exploit":
                row["parent_id"] = d.donor_id
                row["exploits"] = live.rows.get(d.member_id, {}).get("exploits", 0) + 1
            live.update(d.member_id, **row)
            if d.train_steps > 0:
                self._submit(backend, d)
        live.advance(out.end_step - task.start_step)


class _Sharing:
    """The controller's side of knowledge sharing: who writes, merging, table versions."""

    def __init__(self, options: KnowledgeSharing, run_path: Path) -> None:
        self.options = options
        self.table = KnowledgeTable(run_path / "knowledge")

    def task_for(self, member_id: int, scheduler: Any) -> KnowledgeTask:
        # rank by latest score without touching the scheduler's RNG, so alpha=0
        # reproduces plain PBT's decisions exactly
        scored = [m for m in scheduler.members.values() if m.history]
        scored.sort(key=lambda m: (-m.history[-1], m.member_id))
        writers = {m.member_id for m in scored[: self.options.top_k]}
        return KnowledgeTask(self.options, self.table.version, member_id in writers)

    def merge(self, out: Outcome, in_flight: Any) -> list[EventRecord]:
        assert out.knowledge is not None
        if not self.table.merge(out.knowledge, self.options.refresh_every):
            return []
        self.table.prune({t.knowledge.version for t in in_flight if t.knowledge})
        return [EventRecord("knowledge", out.member_id, out.end_step, detail={
            "version": self.table.version, "entries": self.table.entries,
            "written": int(len(out.knowledge["indices"]))})]


def load(run_dir: str | os.PathLike[str], storage: str | None = None) -> Result:
    """Read a run (finished or running) back from its directory or store URL."""
    return Result.load(Path(run_dir), storage)
