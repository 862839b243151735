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
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import create_engine, event, insert, inspect, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import sessionmaker

from ..engine.faults import crash_point
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
from .step_sql import Prepared, StepRows, StepStatements

NAME_LENGTH = Run.__table__.c.name.type.length
UPDATED_AT_EVERY = 1.0  # seconds between writes of runs.updated_at alone
_RUN_LOCK = 0x74706275  # advisory lock class for "controls run N" ("tpbu")


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def json_dumps(obj: Any) -> str:
    """Strict JSON for every JSON column: PostgreSQL refuses ``NaN``/``Infinity``, and
    SQLite stores the same text so both backends give back the same values."""
    try:
        return _ENCODE(obj)
    except ValueError:  # a non-finite float somewhere: rare, so only then walk the value
        return _ENCODE(strict_json(obj))


# one encoder for every call: json.dumps with any option builds a new one each time
_ENCODE = json.JSONEncoder(allow_nan=False).encode


_BUSY_MS = 10_000


def _set_wal(cur: Any) -> None:
    """WAL mode, so readers (status/report) never block the run.

    Switching a new file to WAL needs an exclusive lock, and SQLite answers "database
    is locked" at once, without waiting on the busy timeout, while another connection
    opens the same new file: retry for as long as the busy timeout would have waited."""
    deadline = time.monotonic() + _BUSY_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
    _set_wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    # copy the log into the database every ~40 MB rather than 4 MB: pages a run rewrites
    # all the time (its members, the run row) are then copied once per checkpoint, not
    # ten times
    cur.execute("PRAGMA wal_autocheckpoint=10000")
    cur.close()


def _row(obj: Any) -> dict[str, Any]:
    out = {c.key: getattr(obj, c.key) for c in inspect(obj).mapper.column_attrs}
    for k, v in out.items():
        if isinstance(v, datetime):  # UTC, with its offset, on both backends
            v = v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)
            out[k] = v.isoformat()
    return out


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
        database = make_url(url).database
        if not create and backend == "sqlite" and database not in (None, "", ":memory:") \
                and not os.path.exists(database):
            # opening would create an empty file, which then looks like a broken run
            raise StoreError(f"store {url!r} holds no torchpbt run; check the path (there is "
                             f"no file {database}).")
        try:
            self.engine: Engine = create_engine(url, json_serializer=json_dumps)
        except Exception as exc:  # missing driver
            hint = (" (install the driver: pip install 'torchpbt[postgres]')"
                    if "psycopg" in str(exc) else "")
            raise StoreError(f"cannot use store URL {url!r}: {exc}{hint}. {use}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._steps = StepStatements(self.engine.dialect)
        self._writer: Any = None  # the pooled DB-API connection record_steps writes on
        self._clock = time.monotonic
        self._run_written = -math.inf  # self._clock() at the last write of runs.updated_at
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
        # Prepared statements on the driver's cursor (step_sql.py): this runs once per
        # interval and its cost is pure overhead on top of training. A batch of steps
        # (outcomes that arrived together) runs each statement once, over all its rows.
        now = utcnow()
        rows = StepRows(self._steps, run_id, now)
        for step in steps:
            rows.add(step)
        with self._writing() as cursor:
            for statement, params in rows.inserts():
                if params:
                    statement.run(cursor, params)
            for statement, params in rows.member_runs():
                ids = sorted({p["m"] for p in params})
                self._expect(cursor, statement, params, f"run {run_id} has no member {ids[0]}"
                             if len(ids) == 1 else f"run {run_id} lacks a member among {ids}")
            if deleted_checkpoints:
                self._steps.flag_deleted.run(cursor, [{"r": run_id, "k": k}
                                                      for k in deleted_checkpoints])
            if member_states:
                self._expect(cursor, self._steps.update_state,
                             [{"r": run_id, "m": i, "state": dict(st)}
                              for i, st in member_states.items()],
                             f"run {run_id} lacks the state of a member among "
                             f"{sorted(member_states)}")
            # the run row: its state and status when given; "last update" (for people)
            # at most once a second otherwise, a page less per step
            clock = self._clock()
            if scheduler_state is not None or status is not None or (
                    clock - self._run_written >= UPDATED_AT_EVERY):
                run_values: dict[str, Any] = {"r": run_id, "v_updated_at": now}
                if scheduler_state is not None:
                    run_values["v_state"] = dict(scheduler_state)
                if status is not None:
                    run_values["v_status"] = status
                update = self._steps.update_run[scheduler_state is not None, status is not None]
                if update.run(cursor, [run_values]) != 1:
                    raise StoreError(f"no run with id {run_id} in {self.url}")
                self._run_written = clock
            crash_point("store_commit")

    def _expect(self, cursor: Any, statement: Prepared, params: list[dict[str, Any]],
                missing: str) -> None:
        """Run an UPDATE over ``params``; each must have matched its one row."""
        done = statement.run(cursor, params)
        if done != len(params) and (len(params) == 1
                                    or self.engine.dialect.supports_sane_multi_rowcount):
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

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        """A transaction on the store's own writer connection, checked out of the pool once:
        a checkout per step, and the rollback the pool runs on its return, cost a visible
        share of a step's commit."""
        if self._writer is None:
            self._writer = self.engine.raw_connection()
        conn = self._writer
        try:
            yield conn.cursor()
            conn.commit()
        except BaseException:
            self._writer = None  # the next step takes a fresh connection: this one may be dead
            try:
                conn.rollback()
            except Exception:
                conn.invalidate()  # unusable (e.g. the server went away): never pooled again
            conn.close()
            raise

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()  # back to the pool, which dispose() then closes
            self._writer = None
        self.engine.dispose()


def open_store(url: str, create: bool = True) -> SQLStore:
    return SQLStore(url, create=create)
