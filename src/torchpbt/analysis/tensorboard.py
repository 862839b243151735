"""TensorBoard scalars from a run's store: ``torchpbt export RUN --format tensorboard``.

Each member gets its own TensorBoard run (``LOGDIR/member_03``) with its score
(``score``) and every numeric hyperparameter (``hparams/lr``, ...) against its
own step: hyperparameters at the step an interval started, the score at the
step it ended. It reads the store only, so it works for any backend, for
resumed runs and for a run that is still going: an export is incremental (it
remembers the last interval it wrote in ``LOGDIR/.torchpbt-tensorboard.json``),
so calling it again, or ``--watch``, appends only what is new. Needs the
``tensorboard`` package (``pip install 'torchpbt[tensorboard]'``).
"""

from __future__ import annotations

import datetime as dt
import json
import numbers
import time
from pathlib import Path
from typing import Any

from ..store import StoreError
from .result import Result

STATE = ".torchpbt-tensorboard.json"


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise StoreError(
            f"TensorBoard export needs the tensorboard package ({exc}); install it with "
            "pip install 'torchpbt[tensorboard]' (or pip install tensorboard)."
        ) from None
    return SummaryWriter


def _walltime(stamp: Any) -> float | None:
    if not stamp:
        return None
    t = dt.datetime.fromisoformat(str(stamp))
    if t.tzinfo is None:  # SQLite keeps no offset; the store writes UTC
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def _numeric(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


class TensorBoardExport:
    """Writes a run's new intervals as scalars each time :meth:`update` is called."""

    def __init__(self, run_dir: str | Path, logdir: str | Path | None = None,
                 storage: str | None = None) -> None:
        self.run_dir, self.storage = Path(run_dir), storage
        self.logdir = Path(logdir) if logdir is not None else self.run_dir / "tensorboard"
        self._writer_cls = _summary_writer()
        self._writers: dict[int, Any] = {}
        self.last_id = 0
        self.run_name: str | None = None
        state = self.logdir / STATE
        if state.is_file():
            saved = json.loads(state.read_text())
            self.run_name, self.last_id = saved.get("run"), int(saved.get("last_interval", 0))

    def update(self) -> Result:
        """Write every interval recorded since the last update; return the run as read."""
        result = Result.load(self.run_dir, self.storage)
        if self.run_name is not None and self.run_name != result.run["name"]:
            raise StoreError(
                f"{self.logdir} holds the TensorBoard export of run {self.run_name}, not "
                f"{result.run['name']}; give another logdir."
            )
        self.run_name = result.run["name"]
        width = len(str(max((m["member_id"] for m in result.members), default=0)))
        new = [iv for iv in result.intervals if iv["id"] > self.last_id]
        for iv in new:
            w = self._writers.get(iv["member_id"])
            if w is None:
                w = self._writers[iv["member_id"]] = self._writer_cls(
                    log_dir=str(self.logdir / f"member_{iv['member_id']:0{width}d}"))
            when = _walltime(iv.get("created_at"))
            for name, value in iv["hparams"].items():
                if _numeric(value):
                    w.add_scalar(f"hparams/{name}", float(value), iv["start_step"], walltime=when)
            if iv["score"] is not None:
                w.add_scalar("score", float(iv["score"]), iv["end_step"], walltime=when)
        if new:
            self.last_id = new[-1]["id"]
            for w in self._writers.values():
                w.flush()
        self.logdir.mkdir(parents=True, exist_ok=True)
        (self.logdir / STATE).write_text(json.dumps({"run": self.run_name,
                                                     "last_interval": self.last_id}))
        return result

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()

    def __enter__(self) -> TensorBoardExport:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LiveTensorBoard:
    """``torchpbt.run(..., tensorboard=True)``: the export, kept up to date during the run
    (at most every ``every`` seconds, and once more at the end)."""

    def __init__(self, run_dir: str | Path, logdir: str | Path | None = None,
                 storage: str | None = None, every: float = 5.0) -> None:
        self.export = TensorBoardExport(run_dir, logdir, storage)
        self.every, self._last = every, 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self.export.update()

    def close(self) -> None:
        self.export.update()
        self.export.close()


def check_tensorboard() -> None:
    """Fail before the run starts if tensorboard is missing."""
    _summary_writer()


def export_tensorboard(run_dir: str | Path, logdir: str | Path | None = None,
                       storage: str | None = None) -> Path:
    """Write the run's scores and numeric hparams as TensorBoard scalars, one TensorBoard
    run per member, under ``logdir`` (default ``RUN_DIR/tensorboard``); only intervals
    not written by an earlier export to the same ``logdir``. Returns ``logdir``."""
    with TensorBoardExport(run_dir, logdir, storage) as export:
        export.update()
        return export.logdir
