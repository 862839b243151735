"""Knowledge sharing plugged into a run: the controller's half and the worker's half.

The task's ``"knowledge"`` payload names the table version the interval reads,
whether its member writes, and the options. The worker attaches a
:class:`SharedKnowledge` as ``member.knowledge`` for the interval (read by
``Member.knowledge_loss``) and returns a writer's predictions; the controller
merges them into the table and publishes new versions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ...backends.base import Outcome, Task
from ...engine.checkpoints import CheckpointDir
from ...engine.extension import IntervalHook
from ...store import EventRecord
from .sharing import KnowledgeSharing, KnowledgeTable, SharedKnowledge

NAME = "knowledge"


class KnowledgeRun:
    """The controller's side: who writes, merging, table versions."""

    name = NAME

    def __init__(self, options: KnowledgeSharing, run_path: Path) -> None:
        self.options = options
        self.table = KnowledgeTable(run_path / "knowledge")

    def payload(self, member_id: int, scheduler: Any) -> dict[str, Any]:
        # rank by latest score without touching the scheduler's RNG, so alpha=0
        # reproduces plain PBT's decisions exactly
        scored = [m for m in scheduler.members.values()
                  if m.history and math.isfinite(m.history[-1])]
        scored.sort(key=lambda m: (-m.history[-1], m.member_id))
        writers = {m.member_id for m in scored[: self.options.top_k]}
        return {"version": self.table.version, "writer": member_id in writers,
                "options": self.options.to_dict()}

    def on_outcome(self, task: Task, out: Outcome) -> tuple[dict[str, Any] | None,
                                                            list[EventRecord]]:
        sent = task.extras[NAME]
        extra = {"knowledge_version": sent["version"], "writer": sent["writer"]}
        written = out.extras.get(NAME)
        if written is None or out.failed or not self.table.merge(written,
                                                                 self.options.refresh_every):
            return extra, []
        return extra, [EventRecord("knowledge", out.member_id, out.end_step, detail={
            "version": self.table.version, "entries": self.table.entries,
            "written": int(len(written["indices"]))})]

    def state(self) -> dict[str, int]:
        return self.table.state()

    def restore(self, state: Any) -> None:
        self.table.restore(state)

    def after_commit(self, in_flight: Iterable[Task]) -> None:
        """After the commit, so a resumed interval still finds the version it read."""
        self.table.prune({t.extras[NAME]["version"] for t in in_flight if NAME in t.extras})


class KnowledgeHook(IntervalHook):
    """The worker's side; the table it last read stays cached in this process."""

    def __init__(self, checkpoints: CheckpointDir) -> None:
        super().__init__(checkpoints)
        self.path = checkpoints.path.parent / "knowledge"
        self._table: tuple[int, Any, Any] = (0, None, None)

    def before_train(self, member: Any, task: Task, payload: Any) -> None:
        options = KnowledgeSharing(**payload["options"])
        version = payload["version"]
        if version and self._table[0] != version:
            self._table = (version, *KnowledgeTable.load(self.path, version))
        _, probs, has = self._table if version else (0, None, None)
        member.knowledge = SharedKnowledge(options, probs, has, version, payload["writer"],
                                           options.alpha_for(task.hparams))

    def after_train(self, member: Any, task: Task, payload: Any) -> Any:
        shared, member.knowledge = member.knowledge, None
        return shared.contribution()
