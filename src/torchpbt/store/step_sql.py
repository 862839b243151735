"""The statements one controller step commits, compiled once and run on the driver.

A step's commit runs a few small statements, once per interval. SQLAlchemy's execution
machinery (cache key, execution context, result) costs more per statement than SQLite
takes to run one, and was most of the controller's time per event in a large
population (benchmarks/scale.py). So these few statements are compiled once per engine with SQLAlchemy
and handed to the DB-API cursor with the dialect's own bind processors: the SQL text
and the stored values are the ones SQLAlchemy would send, without the per-call cost.
Everything else in the store goes through SQLAlchemy as usual.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlalchemy.engine import Dialect

from .base import StepRecord
from .models import CheckpointRow, EventRow, IntervalRow, MemberRow, MemberStateRow, Run, ScoreRow


def finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def text_value(s: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters (a traceback might)."""
    return s.replace("\x00", "\\x00") if s else s


class Prepared:
    """One Core statement compiled for one dialect, run on a DB-API cursor.

    Only for plain statements: every value a row needs must be given (a column default
    left to SQLAlchemy, or an expanding IN, is refused when compiling, not silently
    dropped)."""

    def __init__(self, statement: Any, dialect: Dialect, keys: Sequence[str] | None = None
                 ) -> None:
        compiled = statement.compile(dialect=dialect,
                                     column_keys=list(keys) if keys is not None else None)
        if compiled.insert_prefetch or compiled.update_prefetch or "POSTCOMPILE" in compiled.string:
            raise ValueError(f"{statement} needs SQLAlchemy at run time (a default or an "
                             "expanding parameter): give every value")
        self.sql = compiled.string
        self.positional = compiled.positional
        names = list(compiled.positiontup) if compiled.positional else list(compiled.binds)
        # a literal in the statement (``exploits + 1``) is a bind with its value: a row
        # never names it, so it is given here
        constants = {n: b.value for n, b in compiled.binds.items() if not b.required}
        self.binds = [(n, compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect))
                      for n in names]
        self.constants = constants

    def run(self, cursor: Any, rows: Sequence[dict[str, Any]]) -> int:
        """Execute over ``rows`` (one executemany); return the rows it matched."""
        binds = self.binds
        if self.constants:
            rows = [{**self.constants, **row} for row in rows]
        if self.positional:
            params: list[Any] = [tuple(p(row[n]) if p else row[n] for n, p in binds)
                                 for row in rows]
        else:
            params = [{n: p(row[n]) if p else row[n] for n, p in binds} for row in rows]
        if len(params) == 1:
            cursor.execute(self.sql, params[0])
        else:
            cursor.executemany(self.sql, params)
        return cursor.rowcount


def _member_update(exploited: bool, scored: bool) -> Any:
    values: dict[str, Any] = {c: bindparam(f"v_{c}") for c in ("hparams", "step", "checkpoint",
                                                              "status")}
    if exploited:
        values.update(parent_id=bindparam("v_parent_id"), exploits=MemberRow.exploits + 1)
    if scored:
        values["score"] = bindparam("v_score")
    return _where_member(update(MemberRow)).values(**values)


def _where_member(statement: Any) -> Any:
    table = statement.table
    return statement.where(table.c.run_id == bindparam("r"), table.c.member_id == bindparam("m"))


def _run_update(state: bool, status: bool) -> Any:
    values: dict[str, Any] = {"updated_at": bindparam("v_updated_at")}
    if state:
        values["scheduler_state"] = bindparam("v_state")
    if status:
        values["status"] = bindparam("v_status")
    return update(Run).where(Run.id == bindparam("r")).values(**values)


def _upsert_checkpoint(dialect: str) -> Any:
    """Insert a checkpoint row; identical content written again (dedup) is live again."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(CheckpointRow).on_conflict_do_update(
        index_elements=["run_id", "key"], set_={"deleted": False})


_INTERVAL_KEYS = ("run_id", "member_id", "start_step", "end_step", "hparams", "start_checkpoint",
                  "end_checkpoint", "score", "loss", "duration_s", "worker", "error", "extra",
                  "created_at")
_SCORE_KEYS = ("run_id", "member_id", "step", "score", "valid", "created_at")
_CHECKPOINT_KEYS = ("run_id", "key", "member_id", "step", "size", "deleted", "created_at")
_EVENT_KEYS = ("run_id", "kind", "member_id", "step", "donor_id", "donor_step", "old_hparams",
               "new_hparams", "operations", "detail", "created_at")


class StepStatements:
    """Every statement a step may run, prepared for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.insert_interval = Prepared(insert(IntervalRow), dialect, _INTERVAL_KEYS)
        self.insert_score = Prepared(insert(ScoreRow), dialect, _SCORE_KEYS)
        self.upsert_checkpoint = Prepared(_upsert_checkpoint(dialect.name), dialect,
                                          _CHECKPOINT_KEYS)
        self.insert_event = Prepared(insert(EventRow), dialect, _EVENT_KEYS)
        self.update_member = {(e, s): Prepared(_member_update(e, s), dialect)
                              for e in (False, True) for s in (False, True)}
        self.update_score = Prepared(
            _where_member(update(MemberRow)).values(score=bindparam("v_score")), dialect)
        self.update_state = Prepared(
            _where_member(update(MemberStateRow)).values(state=bindparam("state")), dialect)
        self.update_run = {(a, b): Prepared(_run_update(a, b), dialect)
                           for a in (False, True) for b in (False, True)}
        self.flag_deleted = Prepared(update(CheckpointRow).where(
            CheckpointRow.run_id == bindparam("r"), CheckpointRow.key == bindparam("k")
        ).values(deleted=True), dialect)


class StepRows:
    """A batch of steps as rows per statement, in the order the steps would write them."""

    def __init__(self, statements: StepStatements, run_id: int, now: datetime) -> None:
        self.sql, self.run_id, self.now = statements, run_id, now
        self.intervals: list[dict[str, Any]] = []
        self.scores: list[dict[str, Any]] = []
        # one row per key: a second write of the same content only makes it live again,
        # which the first row's upsert already does (PostgreSQL refuses one statement
        # that updates a row twice)
        self.checkpoints: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.members: list[tuple[Prepared, dict[str, Any]]] = []

    def add(self, step: StepRecord) -> None:
        r, iv, now = self.run_id, step.interval, self.now
        if iv is not None:
            score = finite(iv.score)
            self.intervals.append({
                "run_id": r, "member_id": iv.member_id, "start_step": iv.start_step,
                "end_step": iv.end_step, "hparams": dict(iv.hparams),
                "start_checkpoint": iv.start_checkpoint, "end_checkpoint": iv.end_checkpoint,
                "score": score, "loss": finite(iv.loss), "duration_s": iv.duration_s,
                "worker": iv.worker, "error": text_value(iv.error), "extra": iv.extra,
                "created_at": now})
            self.scores.append({"run_id": r, "member_id": iv.member_id, "step": iv.end_step,
                                "score": score, "valid": score is not None, "created_at": now})
            if iv.end_checkpoint:
                self.checkpoints.setdefault(iv.end_checkpoint, {
                    "run_id": r, "key": iv.end_checkpoint, "member_id": iv.member_id,
                    "step": iv.end_step, "size": iv.checkpoint_size, "deleted": False,
                    "created_at": now})
        self.events += [
            {"run_id": r, "kind": ev.kind, "member_id": ev.member_id, "step": ev.step,
             "donor_id": ev.donor_id, "donor_step": ev.donor_step,
             "old_hparams": ev.old_hparams, "new_hparams": ev.new_hparams,
             "operations": ev.operations, "detail": dict(ev.detail), "created_at": now}
            for ev in step.events]
        for m in step.members:
            values: dict[str, Any] = {"r": r, "m": m.member_id, "v_hparams": dict(m.hparams),
                                      "v_step": m.step, "v_checkpoint": m.checkpoint,
                                      "v_status": m.status}
            if m.exploited:
                values["v_parent_id"] = m.parent_id
            scored = iv is not None and m.member_id == iv.member_id
            if scored:
                values["v_score"] = finite(iv.score)  # type: ignore[union-attr]
            self.members.append((self.sql.update_member[m.exploited, scored], values))
        if iv is not None and iv.member_id not in {m.member_id for m in step.members}:
            # no decision for it yet (sync mode waits for the generation): its score is
            # still its latest
            self.members.append((self.sql.update_score, {"r": r, "m": iv.member_id,
                                                         "v_score": finite(iv.score)}))

    def inserts(self) -> list[tuple[Prepared, list[dict[str, Any]]]]:
        sql = self.sql
        return [(sql.insert_interval, self.intervals), (sql.insert_score, self.scores),
                (sql.upsert_checkpoint, list(self.checkpoints.values())),
                (sql.insert_event, self.events)]

    def member_runs(self) -> list[tuple[Prepared, list[dict[str, Any]]]]:
        """Member updates in order, each run of one statement as one executemany (the
        same member may be updated twice in a batch: the later write must win)."""
        runs: list[tuple[Prepared, list[dict[str, Any]]]] = []
        for statement, values in self.members:
            if runs and runs[-1][0] is statement:
                runs[-1][1].append(values)
            else:
                runs.append((statement, [values]))
        return runs
