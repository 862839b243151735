"""Schema 4: the ``tasks`` table, the queue that ``torchpbt worker`` processes claim from.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Why: with ``backend="workers"`` the controller and the processes that train may
sit on different hosts that share only the database and a checkpoint directory.
The controller inserts each interval as a row; a worker claims one with a single
``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`` (on
SQLite the database's write lock does the same), beats while it trains, and
writes the outcome back into the row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("start_step", big, nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("beats", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_tasks_run_status", "tasks", ["run_id", "status", "id"])
    op.execute(sa.text("UPDATE torchpbt_meta SET value = '4' WHERE key = 'schema_version'"))


def downgrade() -> None:
    op.drop_index("ix_tasks_run_status", table_name="tasks")
    op.drop_table("tasks")
    op.execute(sa.text("UPDATE torchpbt_meta SET value = '3' WHERE key = 'schema_version'"))
