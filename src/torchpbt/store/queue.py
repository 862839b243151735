"""The task queue between a controller and ``torchpbt worker`` processes, in the store.

Every operation is one short statement or transaction, and each is guarded by the
row's status (and the claiming worker's name), so two parties can never both win:
a claim takes a queued row once; a worker can finish or release only a row it
still holds; the controller declares a row lost only if its heartbeat count is
the one it last saw. Payloads and outcomes are plain JSON; what they mean is the
backends' business.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine

from .models import Run, TaskRow

OPEN = ("queued", "running", "done")


class TaskQueue:
    def __init__(self, engine: Engine, run_id: int) -> None:
        self.engine, self.run_id = engine, run_id
        self._skip_locked = engine.dialect.name == "postgresql"

    # -- controller side ----------------------------------------------------
    def put(self, member_id: int, start_step: int, payload: Mapping[str, Any]) -> int:
        with self.engine.begin() as c:
            return int(c.execute(insert(TaskRow).returning(TaskRow.id), {
                "run_id": self.run_id, "member_id": member_id, "start_step": start_step,
                "payload": dict(payload), "status": "queued", "beats": 0}).scalar_one())

    def poll(self, ids: Iterable[int]) -> list[dict[str, Any]]:
        """id, status, worker and beats of the given rows (outcome only where done)."""
        ids = list(ids)
        if not ids:
            return []
        with self.engine.connect() as c:
            rows = c.execute(select(TaskRow.id, TaskRow.status, TaskRow.worker, TaskRow.beats)
                             .where(TaskRow.run_id == self.run_id, TaskRow.id.in_(ids))).all()
        return [r._asdict() for r in rows]

    def collect(self, task_id: int) -> dict[str, Any] | None:
        """Take a finished row's outcome (once)."""
        with self.engine.begin() as c:
            out = c.execute(update(TaskRow).where(
                TaskRow.id == task_id, TaskRow.status == "done").values(status="collected")
                .returning(TaskRow.outcome)).first()
        return None if out is None else out[0]

    def mark_lost(self, task_id: int, beats: int) -> bool:
        """Give up on a running row whose heartbeat count has not moved from ``beats``."""
        with self.engine.begin() as c:
            return c.execute(update(TaskRow).where(
                TaskRow.id == task_id, TaskRow.status == "running", TaskRow.beats == beats
            ).values(status="lost")).rowcount == 1

    def cancel_open(self) -> int:
        """Cancel every queued or running row of the run (a controller stopping or
        resuming); a worker still training one will find its result refused."""
        with self.engine.begin() as c:
            return c.execute(update(TaskRow).where(
                TaskRow.run_id == self.run_id, TaskRow.status.in_(("queued", "running"))
            ).values(status="cancelled")).rowcount

    # -- worker side ----------------------------------------------------------
    def claim(self, worker: str) -> tuple[int, dict[str, Any]] | None:
        """The least-advanced queued row (lowest start step, then the oldest), now ours;
        None if there is none."""
        pick = (select(TaskRow.id).where(TaskRow.run_id == self.run_id,
                                         TaskRow.status == "queued")
                .order_by(TaskRow.start_step, TaskRow.id).limit(1))
        if self._skip_locked:  # concurrent claimers pass over each other's rows
            pick = pick.with_for_update(skip_locked=True)
        with self.engine.begin() as c:
            row = c.execute(update(TaskRow).where(
                TaskRow.id == pick.scalar_subquery(), TaskRow.status == "queued"
            ).values(status="running", worker=worker, beats=0)
                .returning(TaskRow.id, TaskRow.payload)).first()
        return None if row is None else (int(row[0]), row[1])

    def beat(self, task_id: int, worker: str) -> bool:
        """Say we are alive; False once the row is no longer ours (lost or cancelled)."""
        with self.engine.begin() as c:
            return c.execute(update(TaskRow).where(
                TaskRow.id == task_id, TaskRow.status == "running", TaskRow.worker == worker
            ).values(beats=TaskRow.beats + 1)).rowcount == 1

    def finish(self, task_id: int, worker: str, outcome: Mapping[str, Any]) -> bool:
        """Hand in the outcome; False if the row was taken from us meanwhile."""
        with self.engine.begin() as c:
            return c.execute(update(TaskRow).where(
                TaskRow.id == task_id, TaskRow.status == "running", TaskRow.worker == worker
            ).values(status="done", outcome=dict(outcome))).rowcount == 1

    def release(self, task_id: int, worker: str) -> bool:
        """Put a row we hold back in the queue (the worker is being stopped)."""
        with self.engine.begin() as c:
            return c.execute(update(TaskRow).where(
                TaskRow.id == task_id, TaskRow.status == "running", TaskRow.worker == worker
            ).values(status="queued", worker=None, beats=0)).rowcount == 1

    def run_status(self) -> str | None:
        with self.engine.connect() as c:
            return c.execute(select(Run.status).where(Run.id == self.run_id)).scalar()

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as c:
            rows = c.execute(select(TaskRow.status, func.count()).where(
                TaskRow.run_id == self.run_id).group_by(TaskRow.status)).all()
        return {s: int(n) for s, n in rows}
