"""``torchpbt.run`` and ``torchpbt.resume``: validate everything, then tie scheduler,
backend, store and checkpoints together under one controller."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Any

from rich.console import Console
from sqlalchemy.engine import make_url

from .. import __version__
from ..algorithm.exploit import Truncation
from ..algorithm.explore import Perturb
from ..algorithm.scheduler import NoProgress, PBTConfig, make_scheduler
from ..algorithm.space import Domain, Space
from ..analysis.result import Result, store_url_for
from ..backends import (
    Backend,
    ClassRef,
    Task,
    WorkerSet,
    check_backend,
    default_workers,
    make_backend,
    resolve_devices,
    start_workers,
)
from ..store import SQLStore, StoreError
from ..ui.display import LiveDisplay, print_summary
from .checkpoints import CheckpointDir
from .controller import Controller, WorkersKeepDying
from .member import check_member_class
from .preflight import preflight
from .settings import RunSettings
from .specs import to_spec
from .validate import (
    bad_input,
    check_options,
    check_vectorized,
    prepare_run_dir,
    sqlite_in,
)

_DEFAULT = object()
# what `torchpbt run FILE --storage/--backend/--name ...` chose: it wins over the file's own.
# A context variable, not a mutable global: each value is set and reset as a whole, and a
# run in another thread or task never sees another's choices.
_CLI_CHOICES: ContextVar[Mapping[str, Any]] = ContextVar("torchpbt_cli_choices",
                                                         default=MappingProxyType({}))


@contextmanager
def run_overrides(**values: Any) -> Iterator[None]:
    """Let a command line choose where and how a job file's ``run`` goes, without the
    file knowing (``None`` values leave the file's choice)."""
    chosen = {**_CLI_CHOICES.get(), **{k: v for k, v in values.items() if v is not None}}
    token = _CLI_CHOICES.set(MappingProxyType(chosen))
    try:
        yield
    finally:
        _CLI_CHOICES.reset(token)


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
    backend: str | Backend | None = None,
    workers: int | None = None,
    devices: str | list[str] | None = None,
    progress: bool = True,
    summary: bool | None = None,
    knowledge_sharing: Any = None,
    max_retries: int = 2,
    check_member: bool = True,
    tensorboard: bool | str | os.PathLike[str] | None = None,
    worker_timeout: float = 60.0,
) -> Result:
    """Train a population with PBT and return its :class:`Result`.

    Every argument is checked before any directory, store or process is made.
    ``exploit``/``explore`` default to ``Truncation(0.2)`` / ``Perturb()``;
    ``None`` disables them (both ``None`` is random search). ``backend`` is
    ``"serial"`` (deterministic, in-process), ``"local"`` (``workers`` processes,
    default the number of cores), ``"ray"`` (``workers`` Ray actors, on a local Ray
    runtime or the cluster in ``RAY_ADDRESS``; ``pip install torchpbt[ray]``) or
    ``"vectorized"``; by default ``local`` when more than one worker is available. A
    :class:`torchpbt.backends.Backend` instance is used as given (built for this member
    class and ``RUN_DIR/checkpoints``; the run closes it); resume such a run with
    ``resume(..., backend=...)``. ``knowledge_sharing`` turns on distillation
    from the top members (see :class:`torchpbt.KnowledgeSharing`). An interval whose
    worker process dies is run again up to ``max_retries`` times before the member
    counts as failed. Ctrl-C stops cleanly; ``torchpbt.resume(run_dir)`` continues.
    ``check_member`` builds, scores and checkpoints one member in this process first
    (on the first device), so a broken member fails before anything is written; turn
    it off when that is too costly (a huge model) or impossible here.
    ``backend="workers"`` queues intervals in the store for ``torchpbt worker``
    processes on any hosts (see README, "Running on a cluster"); an interval whose
    worker sends no heartbeat for ``worker_timeout`` seconds is run again.
    ``tensorboard=True`` (or a log directory) keeps TensorBoard scalars per member
    (score, numeric hparams) up to date while the run goes, in ``RUN_DIR/tensorboard``.
    """
    cli = _CLI_CHOICES.get()
    storage = cli.get("storage", storage)
    backend = cli.get("backend", backend)
    name = cli.get("name", name)
    workers = cli.get("workers", workers)
    worker_timeout = cli.get("worker_timeout", worker_timeout)
    exploit = Truncation(0.2) if exploit is _DEFAULT else exploit
    explore = Perturb() if explore is _DEFAULT else explore
    with bad_input():  # these checks run before anything is written
        check_member_class(member)
        space = Space(space)
        config = PBTConfig(population, ready_every, steps, mode, burn_in, inherit_hparams,
                           explore_when)
        check_options(member, space, exploit=exploit, explore=explore,
                      knowledge_sharing=knowledge_sharing, ready_every=ready_every,
                      steps=steps, burn_in=burn_in, seed=seed, workers=workers, sync=sync,
                      inherit_hparams=inherit_hparams, tensorboard=tensorboard,
                      max_retries=max_retries, worker_timeout=worker_timeout,
                      population=population)
        n_workers = workers or default_workers()
        instance = backend if isinstance(backend, Backend) else None
        if instance is not None:  # built by the caller for this member and run directory
            backend = instance.name
            n_workers = workers or int(getattr(instance, "workers", 1))
        else:
            backend = check_backend(backend or ("local" if n_workers > 1 else "serial"))
        if backend == "vectorized" and instance is None:
            check_vectorized(member, space, exploit, knowledge_sharing)
            n_workers = population  # one batched model holds every member
        device_list = resolve_devices(devices)
        scheduler = make_scheduler(sync, space, config, exploit, explore, seed=seed,
                                   initial_hparams=initial_hparams)
    # the local backend's processes start now and warm up while preflight and the store
    # get ready; they are closed on the way out unless the backend adopted them
    with (start_workers(backend, member, n_workers, device_list) if instance is None
          else nullcontext()) as started:
        with bad_input():
            if check_member:
                preflight(member, scheduler.members[0].hparams, device_list[0])
            run_path = prepare_run_dir(run_dir, member)
        # a user-given store is opened first: if it cannot connect, nothing is created (but an
        # SQLite file inside the run directory needs that directory)
        if storage and sqlite_in(storage, run_path):
            run_path.mkdir(parents=True, exist_ok=True)
        store = SQLStore(storage) if storage else None
        run_path.mkdir(parents=True, exist_ok=True)
        settings = RunSettings(
            population=population, ready_every=ready_every, steps=steps, mode=mode, sync=sync,
            burn_in=burn_in, inherit_hparams=inherit_hparams, explore_when=explore_when,
            seed=seed, exploit=repr(exploit), explore=repr(explore),
            exploit_spec=to_spec(exploit), explore_spec=to_spec(explore), backend=backend,
            workers=n_workers, devices=device_list,
            member=ClassRef.of(member).to_dict(),
            run_dir=str(run_path.resolve()), torchpbt=__version__,
            knowledge_sharing=knowledge_sharing.to_dict() if knowledge_sharing else None,
            max_retries=max_retries, worker_timeout=float(worker_timeout),
            tensorboard=_tensorboard_dir(tensorboard, run_path),
        )
        try:
            with run_lock(run_path):
                store = store or SQLStore(store_url_for(run_path))
                controller = Controller(
                    scheduler, store, CheckpointDir(run_path / "checkpoints"), seed,
                    settings.extensions(run_path), max_retries)
                name = name or run_path.name
                tasks = controller.create(name, settings.to_dict(), space)
                add_listeners(controller, settings, run_path, storage)
                execute(controller, tasks, member=member, run_path=run_path, backend=backend,
                        workers=n_workers, devices=device_list, settings=settings, name=name,
                        progress=progress, started=started or instance)
        finally:
            if store is not None:
                store.close()
    result = Result.load(run_path, storage)
    if summary if summary is not None else progress:
        print_summary(result)
    return result


def _tensorboard_dir(tensorboard: bool | str | os.PathLike[str] | None,
                     run_path: Path) -> str | None:
    if tensorboard is None or tensorboard is False:
        return None
    return str(run_path / "tensorboard" if tensorboard is True else Path(tensorboard).resolve())


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run cleanly; it can be resumed."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(f"run interrupted; continue it with: torchpbt resume {run_dir}")
        self.run_dir = run_dir


def execute(controller: Controller, tasks: list[Task], *, member: type, run_path: Path,
            backend: str, workers: int, devices: list[str], settings: RunSettings, name: str,
            progress: bool, done_steps: int = 0,
            started: WorkerSet | Backend | None = None) -> None:
    """Drive a created or restored controller to the end; Ctrl-C leaves it resumable.
    ``backend``/``workers``/``devices`` may differ from the stored ``settings`` (resume);
    ``started``: the local backend's processes if they were started ahead, or a backend
    the caller built."""
    driving = False  # an error before the drive (e.g. the run is held elsewhere) marks nothing
    try:
        with controller.store.exclusive(controller.run_id), \
                _backend(controller, backend, member, run_path, workers, devices, name,
                         settings, progress, started) as be, \
                LiveDisplay(settings.total_steps, settings.steps, enabled=progress) as live:
            live.advance(done_steps)
            driving = True
            controller.drive(be, live, tasks)
    except KeyboardInterrupt:
        # every committed step is already durable: only mark the run, then say how to go on
        controller.store.record(controller.run_id, None, [], [], None, status="interrupted")
        raise RunInterrupted(run_path) from None
    except (NoProgress, WorkersKeepDying) as exc:
        # the last committed step stands; the run says why it stopped (torchpbt status)
        _mark_failed(controller, str(exc))
        raise
    except Exception as exc:
        if driving:  # e.g. a user strategy raised: say so instead of staying "running"
            _mark_failed(controller, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        controller.deleter.close()  # committed garbage: finish deleting it
        for listener in controller.listeners:
            listener.close()


def _mark_failed(controller: Controller, reason: str) -> None:
    """Record that the run stopped on an error; never hide that error behind another."""
    state = {**(controller._committed_global or controller.global_state()), "stopped": reason}
    with suppress(Exception):
        controller.store.record(controller.run_id, None, [], [], state, status="failed")


def _backend(controller: Controller, kind: str, member: type, run_path: Path, workers: int,
             devices: list[str], name: str, settings: RunSettings,
             progress: bool, started: WorkerSet | Backend | None) -> Backend:
    if isinstance(started, Backend):
        return started
    if kind != "workers":
        return make_backend(kind, member, str(run_path / "checkpoints"), workers, devices,
                            started if isinstance(started, WorkerSet) else None)
    from ..backends.queue import QueueBackend
    from ..backends.worker import task_to_json
    from ..store.queue import TaskQueue

    if progress:
        url = make_url(controller.store.url).render_as_string(hide_password=True)
        Console(stderr=True).print(
            f"intervals are queued in the store; start workers (any host that sees {run_path}):"
            f"\n  torchpbt worker --storage '{url}' --run '{name}'", soft_wrap=True)
    return QueueBackend(TaskQueue(controller.store.engine, controller.run_id), task_to_json,
                        run_path, settings.worker_timeout)


def add_listeners(controller: Controller, settings: RunSettings, run_path: Path,
                  storage: str | None) -> None:
    if settings.tensorboard:
        from ..analysis.tensorboard import LiveTensorBoard

        controller.listeners.append(LiveTensorBoard(run_path, settings.tensorboard, storage))


@contextmanager
def run_lock(run_path: Path) -> Iterator[None]:
    """One controller per run directory (store rule 1); the kernel drops the lock
    when the process dies, even by SIGKILL, so a crashed run is never locked out."""
    path = run_path / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise StoreError(
                f"{run_path} is being run by another process (pid {owner}); wait for it to "
                "finish or stop it before starting or resuming this run."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def load(run_dir: str | os.PathLike[str], storage: str | None = None) -> Result:
    """Read a run (finished or running) back from its directory or store URL."""
    return Result.load(Path(run_dir), storage)
