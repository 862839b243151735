"""Schema 3: the controller's resume state per member (``member_states``).

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03

Why: schema 2 kept the whole resume state (every member's scheduler state, every
running interval, the retries) as one JSON value on the run row, rewritten with
every step: a step cost O(population) (3.5 MB a step at 10,000 members). Now the
run row keeps only what all members share (the scheduler's RNG, refused
checkpoints, the knowledge table's version) and each member's part has a row of
its own, rewritten only when a step touches that member.

Existing runs are split here, so the code reads one layout only: the run row's
``{"scheduler": {"rng", "members", "bad_checkpoints", "waiting"?}, "in_flight",
"retries", "sharing"}`` becomes ``{"scheduler": {"rng", "bad_checkpoints"},
"sharing"}`` plus one ``{"scheduler": member, "task", "retries"}`` per member.
A run row holding anything else (no controller state) is left as it is.
Self-contained: nothing here imports torchpbt, which may change after this revision.
"""

from __future__ import annotations

import array
import base64
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

RUNS = sa.table("runs", sa.column("id", sa.Integer()), sa.column("scheduler_state", sa.JSON()))
STATES = sa.table("member_states", sa.column("run_id", sa.Integer()),
                  sa.column("member_id", sa.Integer()), sa.column("state", sa.JSON()))


def split(state: Any) -> tuple[dict[str, Any], dict[int, dict[str, Any]]] | None:
    """(run-row state, per-member states) of a schema-2 controller state; None if not one."""
    if not isinstance(state, dict) or not isinstance(state.get("scheduler"), dict) \
            or "members" not in state["scheduler"]:
        return None
    sched = state["scheduler"]
    tasks = {t["member_id"]: t for t in state.get("in_flight") or []}
    retries = {int(k): int(v) for k, v in (state.get("retries") or {}).items()}
    waiting = set(sched["waiting"]) if "waiting" in sched else None  # a sync scheduler's
    members = {}
    for m in sched["members"]:
        i = int(m["member_id"])
        part = dict(m)
        if waiting is not None:
            part["waiting"] = i in waiting
        members[i] = {"scheduler": part, "task": tasks.get(i), "retries": retries.get(i, 0)}
    run = {"scheduler": {"rng": sched["rng"],
                         "bad_checkpoints": list(sched.get("bad_checkpoints", []))},
           "sharing": state.get("sharing")}
    return run, members


def join(run: dict[str, Any], members: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The schema-2 layout again (for the downgrade)."""
    rng = run["scheduler"]["rng"]
    if isinstance(rng, str):  # schema 3 stores the RNG's words as base64
        words = array.array("I" if array.array("I").itemsize == 4 else "L")
        words.frombytes(base64.b64decode(rng))
        rng = [3, list(words), None]
    parts = [members[i]["scheduler"] for i in sorted(members)]
    sched: dict[str, Any] = {
        "rng": rng, "bad_checkpoints": run["scheduler"].get("bad_checkpoints", []),
        "members": [{k: v for k, v in p.items() if k not in ("waiting", "tiebreak")}
                    for p in parts]}
    if any("waiting" in p for p in parts):
        sched["waiting"] = sorted(p["member_id"] for p in parts if p.get("waiting"))
    return {"scheduler": sched,
            "in_flight": [members[i]["task"] for i in sorted(members) if members[i]["task"]],
            "retries": {str(i): m["retries"] for i, m in sorted(members.items())
                        if m.get("retries")},
            "sharing": run.get("sharing")}


def upgrade() -> None:
    op.create_table(
        "member_states",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("member_id", sa.Integer(), primary_key=True),
        sa.Column("state", sa.JSON(), nullable=False),
    )
    bind = op.get_bind()
    for run_id, state in bind.execute(sa.select(RUNS.c.id, RUNS.c.scheduler_state)).all():
        parts = split(state)
        if parts is None:
            continue
        run, members = parts
        if members:
            bind.execute(sa.insert(STATES), [{"run_id": run_id, "member_id": i, "state": s}
                                             for i, s in members.items()])
        bind.execute(sa.update(RUNS).where(RUNS.c.id == run_id).values(scheduler_state=run))
    op.execute(sa.text("UPDATE torchpbt_meta SET value = '3' WHERE key = 'schema_version'"))


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(STATES.c.run_id, STATES.c.member_id, STATES.c.state)).all()
    by_run: dict[int, dict[int, dict[str, Any]]] = {}
    for run_id, member_id, state in rows:
        by_run.setdefault(run_id, {})[member_id] = state
    for run_id, state in bind.execute(sa.select(RUNS.c.id, RUNS.c.scheduler_state)).all():
        if run_id in by_run and isinstance(state, dict) and "scheduler" in state:
            bind.execute(sa.update(RUNS).where(RUNS.c.id == run_id).values(
                scheduler_state=join(state, by_run[run_id])))
    op.drop_table("member_states")
    op.execute(sa.text("UPDATE torchpbt_meta SET value = '2' WHERE key = 'schema_version'"))
