"""PBT-NAS's interval hook: a child is built from two checkpoints, not loaded from one.

The scheduler's plan (``Decision.mix``) travels as the task's ``"mix"`` payload:
the base is the task's checkpoint, the donor's is named in the payload (and in
``Task.also_reads``, so it is not collected while the interval runs).
"""

from __future__ import annotations

from typing import Any

from ...backends.base import Task
from ...engine.extension import IntervalHook


class MixHook(IntervalHook):
    sets_weights = True

    def load(self, member: Any, task: Task, payload: Any) -> None:
        if task.checkpoint is None:
            raise ValueError(f"member {task.member_id}: a NAS child needs a base checkpoint")
        donor = payload.get("donor_checkpoint")
        member.mix_from(self.checkpoints.load(task.checkpoint),
                        self.checkpoints.load(donor) if donor else None,
                        payload["origin"], payload["lam"], payload["gamma"])
