"""``run()``'s up-front checks: every argument is refused with the problem and the fix
before any directory, store or process is made (README, "Bad input")."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from ..algorithm.exploit import check_exploit
from ..algorithm.explore import check_explore
from ..algorithm.space import Space
from ..algorithm.strategies import ArchitectureStrategy
from ..analysis.result import DB_NAME, store_url_for
from ..store import SQLStore, StoreError
from .extension import options_class
from .preflight import PreflightError

BAD_INPUT = "_torchpbt_bad_input"


@contextmanager
def bad_input() -> Iterator[None]:
    """Tag errors of the up-front checks, so the CLI prints them as one line (exit 2)
    instead of a traceback; the exception's type and message stay as they are."""
    try:
        yield
    except (ValueError, TypeError, OSError, PreflightError) as exc:
        setattr(exc, BAD_INPUT, True)
        raise


def sqlite_in(storage: str, run_path: Path) -> bool:
    """Is ``storage`` an SQLite file directly inside ``run_path``?"""
    try:
        url = make_url(storage)
    except Exception:  # a bad URL: SQLStore says what is wrong with it
        return False
    db = url.database
    return (url.get_backend_name() == "sqlite" and db not in (None, "", ":memory:")
            and Path(db).expanduser().resolve().parent == run_path.resolve())


def prepare_run_dir(run_dir: str | Path | None, member_cls: type) -> Path:
    if run_dir is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        run_dir = Path("runs") / f"{member_cls.__name__.lower()}-{stamp}"
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"run_dir={run_dir!r} ({type(run_dir).__name__}) is not a path; give a folder "
                        "path (a str or pathlib.Path), e.g. run_dir='runs/my-run'.")
    run_dir = Path(run_dir).expanduser()  # "~/runs/x" means the home folder, as in a shell
    if (run_dir / DB_NAME).exists() and _holds_a_run(run_dir):
        raise FileExistsError(
            f"{run_dir} already holds a run; continue it with `torchpbt resume {run_dir}` "
            "(torchpbt.resume) or pass a new run_dir, so nothing is overwritten."
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"run_dir {run_dir} is a file; give a directory path.")
    parent = next((p for p in run_dir.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise NotADirectoryError(
            f"run_dir {run_dir}: {parent} is a file; give a run_dir inside a directory."
        )
    return run_dir


def _holds_a_run(run_dir: Path) -> bool:
    """A store killed while creating its run holds no run: safe to start again in it."""
    try:
        store = SQLStore(store_url_for(run_dir), create=False)
    except StoreError:
        return True  # unreadable or newer: never touch it
    try:
        store.find_run()
        return True
    except StoreError:
        return False
    finally:
        store.close()


def check_options(member: type, space: Space, *, exploit: Any, explore: Any,
                  knowledge_sharing: Any, ready_every: int, steps: int, burn_in: int,
                  seed: Any, workers: Any, sync: Any, inherit_hparams: Any, tensorboard: Any,
                  max_retries: Any, worker_timeout: Any, population: int) -> None:
    """The options ``PBTConfig`` and ``Space`` do not check themselves."""
    # the scheduler copes (one interval to the end), but a user asking for PBT wants it
    if ready_every > steps:
        raise ValueError(
            f"ready_every={ready_every} > steps={steps}: no member would ever be ready, so "
            f"PBT could never exploit; give ready_every <= steps, e.g. "
            f"ready_every={max(1, steps // 10)}.")
    if burn_in >= steps:
        raise ValueError(
            f"burn_in={burn_in} >= steps={steps}: no exploit could ever happen; give "
            f"burn_in < steps, e.g. burn_in={steps // 4}.")
    check_exploit(exploit)
    if isinstance(exploit, ArchitectureStrategy):  # torchpbt.nas.Mixing/Mutation
        if not space.genes:
            raise ValueError(
                f"exploit={exploit!r} changes architectures but the space has no genes; add "
                "them: space = {..., **arch.genes()} with a torchpbt.nas.ArchSpace."
            )
        if not callable(getattr(member, "mix_from", None)):
            raise TypeError(
                f"exploit={exploit!r} needs a member that can be mixed; subclass "
                f"torchpbt.nas.NASMember for {member.__name__}."
            )
    check_explore(explore, space)
    if knowledge_sharing is not None:
        if not isinstance(knowledge_sharing, options_class("knowledge_sharing")):
            raise TypeError(
                f"knowledge_sharing={knowledge_sharing!r}: pass torchpbt.KnowledgeSharing(...)."
            )
        knowledge_sharing.validate(space, population)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an int; give e.g. seed=0.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers={workers!r}: give a positive int (default: number of cores).")
    for flag, value in (("sync", sync), ("inherit_hparams", inherit_hparams)):
        if not isinstance(value, bool):
            raise ValueError(f"{flag}={value!r}: give True or False.")
    if tensorboard is not None and tensorboard is not False:
        if not isinstance(tensorboard, (bool, str, os.PathLike)):
            raise ValueError(f"tensorboard={tensorboard!r}: give True or a log directory.")
        from ..analysis.tensorboard import check_tensorboard

        check_tensorboard()
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries={max_retries!r}: give an int >= 0 (default 2).")
    if isinstance(worker_timeout, bool) or not isinstance(worker_timeout, (int, float)) \
            or not worker_timeout > 0:
        raise ValueError(f"worker_timeout={worker_timeout!r}: give seconds > 0 (default 60).")


def check_vectorized(member: type, space: Space, exploit: Any, knowledge: Any) -> None:
    """What the vectorized backend cannot do, refused before any work."""
    from ..backends.vectorized.member import VectorMember, check_vector_member

    if not issubclass(member, VectorMember):
        raise TypeError(
            f"backend='vectorized' trains a population as one batched model and needs a "
            f"torchpbt.VectorMember; {member.__name__} is not one. Subclass VectorMember "
            "(build, train_data, loss, score) or use backend='serial'/'local'.")
    check_vector_member(member)
    if knowledge is not None or isinstance(exploit, ArchitectureStrategy):
        raise ValueError(
            "backend='vectorized' does not do knowledge sharing or architecture mixing "
            "(members must share one architecture); use backend='serial' or 'local'.")
    for name, dom in space.items():
        choices = getattr(dom, "values", None)
        if choices is not None and not all(isinstance(c, (int, float)) and
                                           not isinstance(c, bool) for c in choices):
            raise ValueError(
                f"backend='vectorized' gives each member its hparams as tensors, but "
                f"{name!r} has non-numeric choices {list(choices)}; encode them as numbers "
                "or use backend='serial'/'local'.")
