"""Schema 2: ``runs.run_dir`` (indexed) and 64-bit steps and checkpoint sizes.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

Why: a PostgreSQL store is shared by many runs, and every ``load``/``status``/
``resume`` looks its run up by run directory; schema 1 kept the directory only
inside the ``config`` JSON, so the lookup read every run's config. The column is
filled from that JSON for existing runs. And PostgreSQL's INTEGER is 32-bit:
a checkpoint over 2 GiB, or a step count past 2**31 (RL members counting
environment frames), would not fit. SQLite's INTEGER is already 64-bit, so its
tables are left as they are (no table rebuild).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG = {
    "members": ("step",),
    "intervals": ("start_step", "end_step"),
    "scores": ("step",),
    "events": ("step", "donor_step"),
    "checkpoints": ("step", "size"),
}
NULLABLE = {("events", "donor_step")}


def _retype(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, columns in BIG.items():
        for column in columns:
            op.alter_column(table, column, type_=new, existing_type=old,
                            existing_nullable=(table, column) in NULLABLE)


def upgrade() -> None:
    op.add_column("runs", sa.Column("run_dir", sa.Text(), nullable=True))
    runs = sa.table("runs", sa.column("id", sa.Integer()), sa.column("config", sa.JSON()),
                    sa.column("run_dir", sa.Text()))
    bind = op.get_bind()
    for run_id, config in bind.execute(sa.select(runs.c.id, runs.c.config)).all():
        run_dir = config.get("run_dir") if isinstance(config, dict) else None
        if run_dir:
            bind.execute(sa.update(runs).where(runs.c.id == run_id).values(run_dir=run_dir))
    op.create_index("ix_runs_run_dir", "runs", ["run_dir"])
    _retype(sa.Integer(), sa.BigInteger())
    op.execute(sa.text("UPDATE torchpbt_meta SET value = '2' WHERE key = 'schema_version'"))


def downgrade() -> None:
    _retype(sa.BigInteger(), sa.Integer())
    op.drop_index("ix_runs_run_dir", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("run_dir")
    op.execute(sa.text("UPDATE torchpbt_meta SET value = '1' WHERE key = 'schema_version'"))
