"""``torchpbt.resume``: continue a crashed or interrupted run from its store.

Everything comes from the store: settings, space, strategies (as specs), the
scheduler's RNG and members, and the intervals that were running when the
controller stopped. Those intervals run again from their start checkpoints with
their original seeds, so with the serial backend the resumed run's event log
and scores equal an uninterrupted run's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..algorithm.scheduler import make_scheduler
from ..algorithm.space import Space
from ..analysis.result import Result, find_run_of, open_run_store
from ..backends import ClassRef, check_backend, default_workers, resolve_devices, start_workers
from ..store import EventRecord, StoreError
from ..ui.display import print_summary
from .checkpoints import CheckpointDir
from .controller import Controller
from .member import check_member_class
from .runner import add_listeners, execute, run_lock
from .settings import RunSettings
from .specs import from_spec
from .validate import check_vectorized

_STORED = object()


def resume(
    run_dir: str | Path,
    *,
    storage: str | None = None,
    member: type | None = None,
    exploit: Any = _STORED,
    explore: Any = _STORED,
    backend: str | None = None,
    workers: int | None = None,
    devices: str | list[str] | None = None,
    progress: bool = True,
    summary: bool | None = None,
) -> Result:
    """Continue the run in ``run_dir`` where its store says it stopped.

    ``member``, ``exploit`` and ``explore`` are rebuilt from the store; pass them
    only if they cannot be imported back (a class defined inside a function, a
    lambda). ``backend``/``workers``/``devices`` default to the run's own.
    A finished run is returned as is.
    """
    run_path = Path(run_dir).expanduser()
    store = open_run_store(run_path, storage)
    try:
        try:
            run = find_run_of(store, run_path, storage)
        except StoreError:
            raise StoreError(
                f"{run_path} holds no run: it was stopped before its first step was stored, so "
                "there is nothing to resume; start it again with torchpbt.run (the same "
                "run_dir is fine)."
            ) from None
        if run["status"] == "done":
            return Result.load(run_path, storage)
        state = run.get("scheduler_state") or {}
        if "scheduler" not in state:
            raise StoreError(
                f"{run_path} was written by a torchpbt without resume support (no controller "
                "state); start a new run."
            )
        cfg = RunSettings.from_dict(run["config"])
        member = member or member_class_of(cfg.member)
        check_member_class(member)
        space = Space.from_dict(run["space"])
        exploit = from_spec(cfg.exploit_spec, "exploit") if exploit is _STORED else exploit
        explore = from_spec(cfg.explore_spec, "explore") if explore is _STORED else explore
        scheduler = make_scheduler(cfg.sync, space, cfg.pbt_config, exploit, explore,
                                   seed=cfg.seed)
        backend = check_backend(backend or cfg.backend)
        n_workers = workers or (cfg.workers if backend == cfg.backend else default_workers())
        if backend == "vectorized":  # also when a run of another backend resumes on it
            check_vectorized(member, space, exploit, cfg.knowledge_sharing)
            n_workers = cfg.population
        device_list = resolve_devices(devices if devices is not None else cfg.devices)
        with start_workers(backend, member, n_workers, device_list) as started, \
                run_lock(run_path):
            controller = Controller(
                scheduler, store, CheckpointDir(run_path / "checkpoints"), cfg.seed,
                cfg.extensions(run_path), cfg.max_retries)
            tasks = controller.restore(run["id"], state)
            add_listeners(controller, cfg, run_path, storage)
            store.record(run["id"], None, [EventRecord("resume", -1, 0, detail={
                "from_status": run["status"], "running": [t.member_id for t in tasks],
                "backend": backend})], [], None, status="running")
            execute(controller, tasks, member=member, run_path=run_path, backend=backend,
                    workers=n_workers, devices=device_list, settings=cfg, name=run["name"],
                    progress=progress, started=started,
                    done_steps=sum(m.step for m in scheduler.members.values()))
    finally:
        store.close()
    result = Result.load(run_path, storage)
    if summary if summary is not None else progress:
        print_summary(result)
    return result


def member_class_of(ref: dict[str, Any],
                    pass_it: str = "member=YourClass to torchpbt.resume") -> type:
    """The run's member class from its stored reference; ``pass_it`` says how to give it."""
    try:
        return ClassRef.from_dict(ref).resolve()
    except Exception as exc:
        raise StoreError(
            f"cannot import the run's member class {ref['qualname']} from "
            f"{ref['path'] or ref['module']} ({type(exc).__name__}: {exc}); make the file "
            f"importable again or pass {pass_it}."
        ) from exc
