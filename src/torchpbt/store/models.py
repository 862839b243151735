"""SQLAlchemy 2 tables. Portable types only (JSON, Float, Integer, String) so the
same models serve SQLite and PostgreSQL; every table carries ``run_id`` so one
PostgreSQL database can hold many runs.

The schema is made and changed by the alembic revisions in ``migrations/``, never
by ``create_all``: a change here needs a new revision (``tests/test_migrations.py``
checks that the two agree on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# Steps and byte sizes may pass 2**31 (frames in RL, checkpoints over 2 GiB):
# 64-bit on PostgreSQL; SQLite's INTEGER is 64-bit already (revision 0002 leaves it).
Big = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "torchpbt_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    status: Mapped[str] = mapped_column(String(32), default="running")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    config: Mapped[dict] = mapped_column(JSON)
    space: Mapped[dict] = mapped_column(JSON)
    # the controller's global state (RNG, counters); per member: member_states (schema 3)
    scheduler_state: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # the run directory, for finding a run in a store shared by many (schema 2)
    run_dir: Mapped[str | None] = mapped_column(Text, nullable=True, index=True)


class MemberRow(Base):
    __tablename__ = "members"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    member_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hparams: Mapped[dict] = mapped_column(JSON)
    step: Mapped[int] = mapped_column(Big, default=0)
    checkpoint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default="training")
    parent_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exploits: Mapped[int] = mapped_column(Integer, default=0)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)


class MemberStateRow(Base):
    """The controller's resume state of one member (schema 3): its scheduler state, the
    interval it runs and its retries. Rewritten only for the members a step touches, so
    a step's commit does not grow with the population."""

    __tablename__ = "member_states"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    member_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[dict] = mapped_column(JSON)


class IntervalRow(Base):
    __tablename__ = "intervals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    member_id: Mapped[int] = mapped_column(Integer)
    start_step: Mapped[int] = mapped_column(Big)
    end_step: Mapped[int] = mapped_column(Big)
    hparams: Mapped[dict] = mapped_column(JSON)
    start_checkpoint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    end_checkpoint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    worker: Mapped[str] = mapped_column(String(128), default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    extra: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # e.g. knowledge version
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (Index("ix_intervals_run_member", "run_id", "member_id"),)


class ScoreRow(Base):
    __tablename__ = "scores"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    member_id: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Big)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    valid: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (Index("ix_scores_run_member", "run_id", "member_id"),)


class EventRow(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    kind: Mapped[str] = mapped_column(String(32))
    member_id: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Big)
    donor_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    donor_step: Mapped[int | None] = mapped_column(Big, nullable=True)
    old_hparams: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    new_hparams: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    operations: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (Index("ix_events_run", "run_id", "id"),)


class CheckpointRow(Base):
    __tablename__ = "checkpoints"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Big)
    size: Mapped[int] = mapped_column(Big, default=0)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TaskRow(Base):
    """The queue between a controller and ``torchpbt worker`` processes (schema 4).

    ``status`` goes queued → running (a worker claimed it) → done (its outcome is
    here) → collected (the controller has it); or → lost (the worker stopped
    beating), → cancelled (the controller stopped or resumed). ``beats`` counts a
    worker's heartbeats: the controller judges liveness by whether it moves, on its
    own clock, so hosts' clocks never have to agree."""

    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    member_id: Mapped[int] = mapped_column(Integer)
    start_step: Mapped[int] = mapped_column(Big)
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    beats: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (Index("ix_tasks_run_status", "run_id", "status", "id"),)
