"""The SQLAlchemy implementation of the store contract: SQLite (a file in the run
directory) or PostgreSQL (``postgresql+psycopg://USER@HOST/DB``, shared by many runs).

What differs between the two is handled here, so both keep the same contract:
PostgreSQL's JSON rejects NaN/Infinity (non-finite floats in JSON fields are
stored as null on both), enforces string lengths (run names are checked first),
rejects NUL characters in text, and returns time-zone-aware datetimes where
SQLite returns naive UTC ones (reads give ISO strings with ``+00:00`` on both).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import bindparam, create_engine, event, insert, inspect, select, text, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import sessionmaker

from ..faults import crash_point
from .base import BaseStore, EventRecord, MemberUpdate, StepRecord, StoreError
from .migrate import ensure_schema
from .models import (
    CheckpointRow,
    EventRow,
    IntervalRow,
    MemberRow,
    MemberStateRow,
    Run,
    ScoreRow,
    utcnow,
)

NAME_LENGTH = Run.__table__.c.name.type.length
_RUN_LOCK = 0x74706275  # advisory lock class for "controls run N" ("tpbu")


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _strict(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def json_dumps(obj: Any) -> str:
    """Strict JSON for every JSON column: PostgreSQL refuses ``NaN``/``Infinity``, and
    SQLite stores the same text so both backends give back the same values."""
    try:
        return json.dumps(obj, allow_nan=False)
    except ValueError:  # a non-finite float somewhere: rare, so only then walk the value
        return json.dumps(_strict(obj), allow_nan=False)


def _text(s: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters (a traceback might)."""
    return s.replace("\x00", "\\x00") if s else s


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
        if isinstance(v, datetime):  # UTC, with its offset, on both backends
            v = v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)
            out[k] = v.isoformat()
    return out


# The statements a step runs, built once: building and hashing a statement costs more
# than SQLite takes to run it (~0.1-0.7 ms each), and a step runs several.
_UPDATE_STATE = update(MemberStateRow).where(
    MemberStateRow.run_id == bindparam("r"), MemberStateRow.member_id == bindparam("m")
).values(state=bindparam("state"))
_INSERT_INTERVAL, _INSERT_SCORE, _INSERT_EVENT = insert(IntervalRow), insert(ScoreRow), insert(EventRow)
_FLAG_DELETED = update(CheckpointRow).where(
    CheckpointRow.run_id == bindparam("r"), CheckpointRow.key.in_(bindparam("keys", expanding=True))
).values(deleted=True)


def _member_update(exploited: bool, scored: bool) -> Any:
    values: dict[str, Any] = {c: bindparam(f"v_{c}") for c in ("hparams", "step", "checkpoint",
                                                              "status")}
    if exploited:
        values.update(parent_id=bindparam("v_parent_id"), exploits=MemberRow.exploits + 1)
    if scored:
        values["score"] = bindparam("v_score")
    return update(MemberRow).where(MemberRow.run_id == bindparam("r"),
                                   MemberRow.member_id == bindparam("m")).values(**values)


_UPDATE_MEMBER = {(e, s): _member_update(e, s) for e in (False, True) for s in (False, True)}


def _run_update(state: bool, status: bool) -> Any:
    values: dict[str, Any] = {"updated_at": bindparam("v_updated_at")}
    if state:
        values["scheduler_state"] = bindparam("v_state")
    if status:
        values["status"] = bindparam("v_status")
    return update(Run).where(Run.id == bindparam("r")).values(**values)


_UPDATE_RUN = {(a, b): _run_update(a, b) for a in (False, True) for b in (False, True)}
_UPDATE_SCORE = update(MemberRow).where(
    MemberRow.run_id == bindparam("r"), MemberRow.member_id == bindparam("m")
).values(score=bindparam("v_score"))


class _StepRows:
    """A batch of steps as rows per statement, in the order the steps would write them."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.intervals: list[dict[str, Any]] = []
        self.scores: list[dict[str, Any]] = []
        # one row per key: a second write of the same content only makes it live again,
        # which the first row's upsert already does (PostgreSQL refuses one statement
        # that updates a row twice)
        self.checkpoints: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.members: list[tuple[Any, dict[str, Any]]] = []

    def add(self, step: StepRecord) -> None:
        r, iv = self.run_id, step.interval
        if iv is not None:
            score = _finite(iv.score)
            self.intervals.append({
                "run_id": r, "member_id": iv.member_id, "start_step": iv.start_step,
                "end_step": iv.end_step, "hparams": dict(iv.hparams),
                "start_checkpoint": iv.start_checkpoint, "end_checkpoint": iv.end_checkpoint,
                "score": score, "loss": _finite(iv.loss), "duration_s": iv.duration_s,
                "worker": iv.worker, "error": _text(iv.error), "extra": iv.extra})
            self.scores.append({"run_id": r, "member_id": iv.member_id, "step": iv.end_step,
                                "score": score, "valid": score is not None})
            if iv.end_checkpoint:
                self.checkpoints.setdefault(iv.end_checkpoint, {
                    "run_id": r, "key": iv.end_checkpoint, "member_id": iv.member_id,
                    "step": iv.end_step, "size": iv.checkpoint_size})
        self.events += [
            {"run_id": r, "kind": ev.kind, "member_id": ev.member_id, "step": ev.step,
             "donor_id": ev.donor_id, "donor_step": ev.donor_step,
             "old_hparams": ev.old_hparams, "new_hparams": ev.new_hparams,
             "operations": ev.operations, "detail": dict(ev.detail)}
            for ev in step.events]
        for m in step.members:
            values: dict[str, Any] = {"r": r, "m": m.member_id, "v_hparams": dict(m.hparams),
                                      "v_step": m.step, "v_checkpoint": m.checkpoint,
                                      "v_status": m.status}
            if m.exploited:
                values["v_parent_id"] = m.parent_id
            scored = iv is not None and m.member_id == iv.member_id
            if scored:
                values["v_score"] = _finite(iv.score)  # type: ignore[union-attr]
            self.members.append((_UPDATE_MEMBER[m.exploited, scored], values))
        if iv is not None and iv.member_id not in {m.member_id for m in step.members}:
            # no decision for it yet (sync mode waits for the generation): its score is
            # still its latest
            self.members.append((_UPDATE_SCORE, {"r": r, "m": iv.member_id,
                                                 "v_score": _finite(iv.score)}))

    def member_runs(self) -> list[tuple[Any, list[dict[str, Any]]]]:
        """Member updates in order, each run of one statement as one executemany (the
        same member may be updated twice in a batch: the later write must win)."""
        runs: list[tuple[Any, list[dict[str, Any]]]] = []
        for statement, values in self.members:
            if runs and runs[-1][0] is statement:
                runs[-1][1].append(values)
            else:
                runs.append((statement, [values]))
        return runs


def _upsert_checkpoint(dialect: str) -> Any:
    """Insert a checkpoint row; identical content written again (dedup) is live again."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(CheckpointRow).on_conflict_do_update(
        index_elements=["run_id", "key"], set_={"deleted": False})


class SQLStore(BaseStore):
    """Store on any SQLAlchemy URL; ``sqlite:///path/torchpbt.db`` by default."""

    def __init__(self, url: str, create: bool = True) -> None:
        self.url = url
        use = "Use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB."
        try:
            backend = make_url(url).get_backend_name()
        except Exception as exc:  # bad URL syntax
            raise StoreError(f"cannot use store URL {url!r}: {exc}. {use}") from exc
        if backend not in ("sqlite", "postgresql"):
            raise StoreError(f"cannot use store URL {url!r}: {backend} is not supported (the "
                             f"store is tested on SQLite and PostgreSQL only). {use}")
        try:
            self.engine: Engine = create_engine(url, json_serializer=json_dumps)
        except Exception as exc:  # missing driver
            hint = (" (install the driver: pip install 'torchpbt[postgres]')"
                    if "psycopg" in str(exc) else "")
            raise StoreError(f"cannot use store URL {url!r}: {exc}{hint}. {use}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._upsert_checkpoint = _upsert_checkpoint(self.engine.dialect.name)
        try:
            ensure_schema(self.engine, url, create)
        except OperationalError as exc:
            self.engine.dispose()  # no open connection (and no -wal file) left behind
            where = ("the directory is writable" if self.engine.dialect.name == "sqlite"
                     else "the database exists (createdb NAME)")
            reason = " ".join(str(exc.orig).split())  # psycopg's messages span lines
            raise StoreError(
                f"cannot connect to store {url!r}: {reason}. Check the URL, that the "
                f"database server runs and that {where}."
            ) from exc
        except BaseException:
            self.engine.dispose()
            raise

    # -- writes -------------------------------------------------------------
    def create_run(
        self, name: str, config: Mapping[str, Any], space: Mapping[str, Any],
        members: Sequence[MemberUpdate], events: Sequence[EventRecord] = (),
        scheduler_state: Mapping[str, Any] | None = None,
        member_states: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> int:
        if len(name) > NAME_LENGTH:  # PostgreSQL would refuse it mid-transaction; SQLite not
            raise StoreError(f"run name {name[:40]!r}... is {len(name)} characters long; "
                             f"give a name of at most {NAME_LENGTH}.")
        try:
            with self._session() as s, s.begin():
                run = Run(name=name, config=dict(config), space=dict(space),
                          scheduler_state=dict(scheduler_state) if scheduler_state else None,
                          run_dir=config.get("run_dir"))
                s.add(run)
                s.flush()
                for m in members:
                    s.add(MemberRow(run_id=run.id, member_id=m.member_id, hparams=dict(m.hparams),
                                    step=m.step, checkpoint=m.checkpoint, status=m.status))
                for ev in events:
                    s.add(EventRow(run_id=run.id, kind=ev.kind, member_id=ev.member_id,
                                   step=ev.step, new_hparams=ev.new_hparams, detail=dict(ev.detail)))
                s.flush()
                if member_states:
                    s.execute(insert(MemberStateRow), [
                        {"run_id": run.id, "member_id": i, "state": dict(st)}
                        for i, st in member_states.items()])
                crash_point("store_commit")
                return run.id
        except IntegrityError:
            raise StoreError(
                f"a run named {name!r} already exists in {self.url}; resume it or pick a new name."
            ) from None

    def record_steps(
        self,
        run_id: int,
        steps: Sequence[StepRecord],
        scheduler_state: Mapping[str, Any] | None = None,
        deleted_checkpoints: Sequence[str] = (),
        status: str | None = None,
        member_states: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> None:
        # Core statements, not ORM objects: this runs once per interval and its cost
        # is pure overhead on top of training. A batch of steps (outcomes that arrived
        # together) runs each statement once, over all its rows.
        rows = _StepRows(run_id)
        for step in steps:
            rows.add(step)
        with self.engine.begin() as c:
            for statement, params in ((_INSERT_INTERVAL, rows.intervals),
                                      (_INSERT_SCORE, rows.scores),
                                      (self._upsert_checkpoint, list(rows.checkpoints.values())),
                                      (_INSERT_EVENT, rows.events)):
                if params:
                    c.execute(statement, params)
            for statement, params in rows.member_runs():
                ids = sorted({p["m"] for p in params})
                self._expect(c, statement, params, f"run {run_id} has no member {ids[0]}"
                             if len(ids) == 1 else f"run {run_id} lacks a member among {ids}")
            if deleted_checkpoints:
                c.execute(_FLAG_DELETED, {"r": run_id, "keys": list(deleted_checkpoints)})
            if member_states:
                self._expect(c, _UPDATE_STATE, [{"r": run_id, "m": i, "state": dict(st)}
                                                for i, st in member_states.items()],
                             f"run {run_id} lacks the state of a member among "
                             f"{sorted(member_states)}")
            run_values: dict[str, Any] = {"r": run_id, "v_updated_at": utcnow()}
            if scheduler_state is not None:
                run_values["v_state"] = dict(scheduler_state)
            if status is not None:
                run_values["v_status"] = status
            statement = _UPDATE_RUN[scheduler_state is not None, status is not None]
            if c.execute(statement, run_values).rowcount != 1:
                raise StoreError(f"no run with id {run_id} in {self.url}")
            crash_point("store_commit")

    @staticmethod
    def _expect(c: Any, statement: Any, params: list[dict[str, Any]], missing: str) -> None:
        """Run an UPDATE over ``params``; each must have matched its one row."""
        done = c.execute(statement, params)
        if done.rowcount != len(params) and (len(params) == 1
                                             or c.dialect.supports_sane_multi_rowcount):
            raise StoreError(missing)

    # -- reads --------------------------------------------------------------
    def find_run(self, name: str | None = None, run_dir: str | None = None) -> dict[str, Any]:
        """The latest run (named ``name``; whose run directory is ``run_dir``, for a store
        shared by many runs)."""
        q = select(Run).order_by(Run.id.desc()).limit(1)
        if name is not None:
            q = q.where(Run.name == name)
        if run_dir is not None:
            q = q.where(Run.run_dir == run_dir)
        with self._session() as s:
            run = s.scalars(q).first()
        if run is None:
            where = f" named {name!r}" if name else ""
            where += f" of run directory {run_dir}" if run_dir else ""
            raise StoreError(f"no run{where} in {self.url}; check the path.")
        return _row(run)

    def _all(self, model: Any, run_id: int, *order: Any, **where: Any) -> list[dict[str, Any]]:
        with self._session() as s:
            q = select(model).where(model.run_id == run_id)
            for k, v in where.items():
                q = q.where(getattr(model, k) == v)
            return [_row(r) for r in s.scalars(q.order_by(*order))]

    def member_states(self, run_id: int) -> dict[int, dict[str, Any]]:
        with self.engine.connect() as c:
            rows = c.execute(select(MemberStateRow.member_id, MemberStateRow.state).where(
                MemberStateRow.run_id == run_id).order_by(MemberStateRow.member_id))
            return {member_id: state for member_id, state in rows}

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
        return self._all(CheckpointRow, run_id, CheckpointRow.created_at, CheckpointRow.step,
                         CheckpointRow.key, **where)

    @contextmanager
    def exclusive(self, run_id: int) -> Iterator[None]:
        """One controller per run across hosts: on PostgreSQL an advisory lock held by a
        connection of our own, which the server drops if this process dies. (SQLite is
        on one host, where the run directory's flock already says the same.)"""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        conn = self.engine.connect()
        try:
            key = {"a": _RUN_LOCK, "b": run_id}
            got = conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"), key).scalar()
            conn.commit()
            if not got:
                raise StoreError(
                    f"run {run_id} in {self.url} is being controlled by another process "
                    "(maybe on another host); wait for it to finish or stop it before "
                    "resuming this run."
                )
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), key)
                conn.commit()
        finally:
            conn.close()

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, create: bool = True) -> SQLStore:
    return SQLStore(url, create=create)
