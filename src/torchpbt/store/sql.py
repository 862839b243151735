"""The SQLAlchemy implementation of the store contract (SQLite now, PostgreSQL by URL)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import create_engine, event, insert, inspect, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..faults import crash_point
from .base import SCHEMA_VERSION, BaseStore, EventRecord, IntervalRecord, MemberUpdate, StoreError
from .models import (
    Base,
    CheckpointRow,
    EventRow,
    IntervalRow,
    MemberRow,
    Meta,
    Run,
    ScoreRow,
    utcnow,
)


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers (status/report) never block the run
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _row(obj: Any) -> dict[str, Any]:
    out = {c.key: getattr(obj, c.key) for c in inspect(obj).mapper.column_attrs}
    for k, v in out.items():
        if hasattr(v, "isoformat"):
            out[k] = v.isoformat()
    return out


class SQLStore(BaseStore):
    """Store on any SQLAlchemy URL; ``sqlite:///path/torchpbt.db`` by default."""

    def __init__(self, url: str, create: bool = True) -> None:
        self.url = url
        try:
            self.engine: Engine = create_engine(url, future=True)
        except Exception as exc:  # bad URL syntax or missing driver
            raise StoreError(
                f"cannot use store URL {url!r}: {exc}. Use sqlite:///PATH or "
                "postgresql+psycopg://USER@HOST/DB."
            ) from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._check_schema(create)
        except OperationalError as exc:
            self.engine.dispose()  # no open connection (and no -wal file) left behind
            raise StoreError(
                f"cannot connect to store {url!r}: {exc.orig}. Check the URL, that the "
                "database server runs and that the directory is writable."
            ) from exc
        except BaseException:
            self.engine.dispose()
            raise

    def _check_schema(self, create: bool) -> None:
        insp = inspect(self.engine)
        if insp.has_table(Meta.__tablename__):
            with Session(self.engine) as s:
                row = s.get(Meta, "schema_version")
            version = int(row.value) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.url!r} has schema version {version}, newer than this "
                    f"torchpbt's {SCHEMA_VERSION}; upgrade torchpbt to read it."
                )
            return
        if not create:
            raise StoreError(f"store {self.url!r} holds no torchpbt run; check the path.")
        Base.metadata.create_all(self.engine)
        with Session(self.engine) as s, s.begin():
            s.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))

    # -- writes -------------------------------------------------------------
    def create_run(
        self, name: str, config: Mapping[str, Any], space: Mapping[str, Any],
        members: Sequence[MemberUpdate], events: Sequence[EventRecord] = (),
        scheduler_state: Mapping[str, Any] | None = None,
    ) -> int:
        try:
            with self._session() as s, s.begin():
                run = Run(name=name, config=dict(config), space=dict(space),
                          scheduler_state=dict(scheduler_state) if scheduler_state else None)
                s.add(run)
                s.flush()
                for m in members:
                    s.add(MemberRow(run_id=run.id, member_id=m.member_id, hparams=dict(m.hparams),
                                    step=m.step, checkpoint=m.checkpoint, status=m.status))
                for ev in events:
                    s.add(EventRow(run_id=run.id, kind=ev.kind, member_id=ev.member_id,
                                   step=ev.step, new_hparams=ev.new_hparams, detail=dict(ev.detail)))
                s.flush()
                crash_point("store_commit")
                return run.id
        except IntegrityError:
            raise StoreError(
                f"a run named {name!r} already exists in {self.url}; resume it or pick a new name."
            ) from None

    def record(
        self,
        run_id: int,
        interval: IntervalRecord | None,
        events: Sequence[EventRecord],
        members: Sequence[MemberUpdate],
        scheduler_state: Mapping[str, Any] | None = None,
        deleted_checkpoints: Sequence[str] = (),
        status: str | None = None,
    ) -> None:
        # Core statements, not ORM objects: this runs once per interval and its cost
        # is pure overhead on top of training.
        with self.engine.begin() as c:
            if interval is not None:
                self._record_interval(c, run_id, interval)
            if events:
                c.execute(insert(EventRow), [
                    {"run_id": run_id, "kind": ev.kind, "member_id": ev.member_id,
                     "step": ev.step, "donor_id": ev.donor_id, "donor_step": ev.donor_step,
                     "old_hparams": ev.old_hparams, "new_hparams": ev.new_hparams,
                     "operations": ev.operations, "detail": dict(ev.detail)}
                    for ev in events])
            for m in members:
                values: dict[str, Any] = {"hparams": dict(m.hparams), "step": m.step,
                                          "checkpoint": m.checkpoint, "status": m.status}
                if m.exploited:
                    values.update(parent_id=m.parent_id, exploits=MemberRow.exploits + 1)
                if interval is not None and m.member_id == interval.member_id:
                    values["score"] = _finite(interval.score)
                done = c.execute(update(MemberRow).where(
                    MemberRow.run_id == run_id, MemberRow.member_id == m.member_id
                ).values(**values))
                if done.rowcount != 1:
                    raise StoreError(f"run {run_id} has no member {m.member_id}")
            if deleted_checkpoints:
                c.execute(update(CheckpointRow).where(
                    CheckpointRow.run_id == run_id, CheckpointRow.key.in_(list(deleted_checkpoints))
                ).values(deleted=True))
            run_values: dict[str, Any] = {"updated_at": utcnow()}
            if scheduler_state is not None:
                run_values["scheduler_state"] = dict(scheduler_state)
            if status is not None:
                run_values["status"] = status
            if c.execute(update(Run).where(Run.id == run_id).values(**run_values)).rowcount != 1:
                raise StoreError(f"no run with id {run_id} in {self.url}")
            crash_point("store_commit")

    @staticmethod
    def _record_interval(c: Any, run_id: int, iv: IntervalRecord) -> None:
        score = _finite(iv.score)
        c.execute(insert(IntervalRow), {
            "run_id": run_id, "member_id": iv.member_id, "start_step": iv.start_step,
            "end_step": iv.end_step, "hparams": dict(iv.hparams),
            "start_checkpoint": iv.start_checkpoint, "end_checkpoint": iv.end_checkpoint,
            "score": score, "loss": _finite(iv.loss), "duration_s": iv.duration_s,
            "worker": iv.worker, "error": iv.error, "extra": iv.extra})
        c.execute(insert(ScoreRow), {"run_id": run_id, "member_id": iv.member_id,
                                     "step": iv.end_step, "score": score,
                                     "valid": score is not None})
        if iv.end_checkpoint:
            seen = c.execute(select(CheckpointRow.key).where(
                CheckpointRow.run_id == run_id, CheckpointRow.key == iv.end_checkpoint)).first()
            if seen is None:
                c.execute(insert(CheckpointRow), {
                    "run_id": run_id, "key": iv.end_checkpoint, "member_id": iv.member_id,
                    "step": iv.end_step, "size": iv.checkpoint_size})
            else:  # identical content written again (dedup): it is live again
                c.execute(update(CheckpointRow).where(
                    CheckpointRow.run_id == run_id, CheckpointRow.key == iv.end_checkpoint
                ).values(deleted=False))

    # -- reads --------------------------------------------------------------
    def find_run(self, name: str | None = None, run_dir: str | None = None) -> dict[str, Any]:
        """The latest run (named ``name``; whose run directory is ``run_dir``, for a store
        shared by many runs)."""
        with self._session() as s:
            q = select(Run).order_by(Run.id.desc())
            if name is not None:
                q = q.where(Run.name == name)
            runs = list(s.scalars(q))
        if run_dir is not None:
            runs = [r for r in runs if (r.config or {}).get("run_dir") == run_dir]
        if not runs:
            where = f" named {name!r}" if name else ""
            where += f" of run directory {run_dir}" if run_dir else ""
            raise StoreError(f"no run{where} in {self.url}; check the path.")
        return _row(runs[0])

    def _all(self, model: Any, run_id: int, *order: Any, **where: Any) -> list[dict[str, Any]]:
        with self._session() as s:
            q = select(model).where(model.run_id == run_id)
            for k, v in where.items():
                q = q.where(getattr(model, k) == v)
            return [_row(r) for r in s.scalars(q.order_by(*order))]

    def members(self, run_id: int) -> list[dict[str, Any]]:
        return self._all(MemberRow, run_id, MemberRow.member_id)

    def intervals(self, run_id: int) -> list[dict[str, Any]]:
        return self._all(IntervalRow, run_id, IntervalRow.id)

    def scores(self, run_id: int) -> list[dict[str, Any]]:
        return self._all(ScoreRow, run_id, ScoreRow.id)

    def events(self, run_id: int) -> list[dict[str, Any]]:
        return self._all(EventRow, run_id, EventRow.id)

    def checkpoints(self, run_id: int, include_deleted: bool = False) -> list[dict[str, Any]]:
        where = {} if include_deleted else {"deleted": False}
        return self._all(CheckpointRow, run_id, CheckpointRow.created_at, **where)

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, create: bool = True) -> SQLStore:
    return SQLStore(url, create=create)
