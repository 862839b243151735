"""What a run leaves behind, read back from its store."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.settings import RunSettings
from ..store import SQLStore, StoreError
from . import lineage, tables

if TYPE_CHECKING:
    import pandas

    from .schedule import Schedule

DB_NAME = "torchpbt.db"


def store_url_for(run_dir: str | Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / DB_NAME}"


def open_run_store(run_dir: str | Path, storage: str | None = None) -> SQLStore:
    """Open an existing run's store, with a clear message if there is none."""
    run_dir = Path(run_dir)
    if storage is None:
        if not run_dir.is_dir():
            raise StoreError(f"run directory {run_dir} does not exist; check the path.")
        if not (run_dir / DB_NAME).is_file():
            raise StoreError(
                f"{run_dir} holds no {DB_NAME}, so it is not a torchpbt run directory; pass "
                "the run_dir a run was written to (or its storage URL)."
            )
        storage = store_url_for(run_dir)
    return SQLStore(storage, create=False)


def find_run_of(store: SQLStore, run_dir: str | Path, storage: str | None,
                name: str | None = None) -> dict[str, Any]:
    """The run a directory holds: its own SQLite has one; a shared store is searched by
    the directory's path, so one run directory never picks up another run."""
    if storage is None:
        return store.find_run(name)
    return store.find_run(name, run_dir=str(Path(run_dir).resolve()))


@dataclass
class Result:
    """A finished (or running) run: members, scores, exploits, schedules."""

    run_dir: Path
    storage: str
    run: dict[str, Any]
    members: list[dict[str, Any]]
    intervals: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    events: list[dict[str, Any]]

    @classmethod
    def load(cls, run_dir: str | Path, storage: str | None = None, name: str | None = None) -> Result:
        run_dir = Path(run_dir).expanduser()
        store = open_run_store(run_dir, storage)
        try:
            run = find_run_of(store, run_dir, storage, name)
            rid = run["id"]
            return cls(Path(run_dir), store.url, run, store.members(rid), store.intervals(rid),
                       store.scores(rid), store.events(rid))
        finally:
            store.close()

    @property
    def settings(self) -> RunSettings:
        """The run's settings as it stored them (a typed view of ``run["config"]``)."""
        return RunSettings.from_dict(self.run["config"])

    @property
    def mode(self) -> str:
        return self.settings.mode

    def _key(self, score: float | None) -> float:
        if score is None or not math.isfinite(score):
            return -math.inf
        return score if self.mode == "max" else -score

    @property
    def best_member(self) -> dict[str, Any]:
        """The member with the best latest score (ties: lowest id)."""
        return max(self.members, key=lambda m: (self._key(m["score"]), -m["member_id"]))

    @property
    def best_member_id(self) -> int:
        return self.best_member["member_id"]

    @property
    def best_score(self) -> float | None:
        return self.best_member["score"]

    @property
    def best_hparams(self) -> dict[str, Any]:
        return dict(self.best_member["hparams"])

    @property
    def best_checkpoint(self) -> Path | None:
        key = self.best_member["checkpoint"]
        return self.run_dir / "checkpoints" / f"{key}.pt" if key else None

    def member(self, member_id: int | None = None, *, device: str = "cpu",
               member_class: type | None = None) -> Any:
        """A ready member of the run's class (default: the best): ``setup`` with its final
        hparams, its final weights loaded, the hparams applied (e.g. dropout), on ``device``.

        ``member_class`` overrides the class stored in the run (if it cannot be imported).
        """
        from ..engine.checkpoints import CheckpointDir
        from ..engine.resume import member_class_of

        ids = sorted(m["member_id"] for m in self.members)
        row = self.best_member if member_id is None else next(
            (m for m in self.members if m["member_id"] == member_id), None)
        if row is None:
            raise ValueError(f"member_id={member_id!r}: the run's members are {ids}.")
        if row["checkpoint"] is None:
            raise ValueError(f"member {row['member_id']} has no checkpoint yet (it never "
                             "finished an interval); pick another member or let the run go on.")
        cls = member_class or member_class_of(
            self.settings.member, "member_class=YourClass to Result.member")
        inst = cls()
        inst.device = device
        inst.setup(dict(row["hparams"]))
        inst.load_state_dict(CheckpointDir(self.run_dir / "checkpoints").load(
            row["checkpoint"], map_location=device))
        inst.apply_hparams(dict(row["hparams"]))  # as a worker does: after the load
        return inst

    def save_best(self, path: str | Path, *, member_class: type | None = None) -> Path:
        """Write the best member's final weights as a plain ``torch.save`` file that loads
        without torchpbt: ``model.state_dict()`` for a TorchMember (``torch.load(path,
        weights_only=True)`` then ``model.load_state_dict``), else the member's state_dict."""
        import torch

        inst = self.member(member_class=member_class)
        model = getattr(inst, "model", None)
        state = model.state_dict() if isinstance(model, torch.nn.Module) else inst.state_dict()
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
        return path

    @property
    def member_steps(self) -> int:
        """The compute the run spent: steps trained over every interval that reported,
        failed ones included (an interval whose worker died reported nothing). Compare
        methods at equal member-steps; with exploits it differs from population × steps,
        since a copy carries its donor's age (see README, "How steps count")."""
        return sum(iv["end_step"] - iv["start_step"] for iv in self.intervals)

    @property
    def exploits(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == "exploit"]

    def checkpoint_of(self, member_id: int) -> str | None:
        """The key of the weights ``member_id`` holds now."""
        return next((m["checkpoint"] for m in self.members if m["member_id"] == member_id), None)

    def trace(self, member_id: int | None = None) -> list[dict[str, Any]]:
        """The intervals that made the member's current weights (default: the best's)."""
        member_id = self.best_member_id if member_id is None else member_id
        return lineage.trace(self.intervals, member_id, self.checkpoint_of(member_id))

    def schedule(self, member_id: int | None = None) -> Schedule:
        """The hparams the member's final weights were trained with, across exploits
        (default: the best member's), equal neighbouring intervals merged: see
        :meth:`Schedule.merged`; :meth:`Schedule.from_result` keeps every interval."""
        from .schedule import Schedule

        return Schedule.from_result(self, member_id).merged()

    def lineage(self, member_id: int | None = None) -> list[int]:
        member_id = self.best_member_id if member_id is None else member_id
        return lineage.ancestors(self.intervals, member_id, self.checkpoint_of(member_id))

    def member_scores(self, member_id: int) -> list[tuple[int, float | None]]:
        return [(s["step"], s["score"]) for s in self.scores if s["member_id"] == member_id]

    def hparam_history(self, member_id: int) -> list[tuple[int, dict[str, Any]]]:
        """The member's own hparams per interval (its slot, not its weights' lineage)."""
        return [(iv["start_step"], iv["hparams"]) for iv in self.intervals
                if iv["member_id"] == member_id]

    def dataframe(self, kind: str = "intervals") -> pandas.DataFrame:
        """One row per record of ``kind`` ("intervals", "scores" or "events"), each
        hparam a column (``hparams.lr``); needs pandas (``torchpbt[dataframe]``).
        ``torchpbt export --format csv`` writes the same tables."""
        return tables.dataframe(self, kind)

    def initial_scores(self) -> list[float]:
        """Each member's first valid score: how the initial population did."""
        first: dict[int, float] = {}
        for s in self.scores:
            if s["score"] is not None and s["member_id"] not in first:
                first[s["member_id"]] = s["score"]
        return list(first.values())
