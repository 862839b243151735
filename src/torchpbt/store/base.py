"""The store contract: what every storage backend promises.

Rules every implementation keeps (a shared test case checks each one):

1. **One writer per run.** Only the controller writes a run; readers
   (``status``, ``export``, reports) may read while it runs.
2. **Atomic steps.** :meth:`BaseStore.record` writes an interval, its score,
   its checkpoint, the decisions it led to, the members' new state and the
   controller's state (the global part, and the parts of the members the step
   touched) in *one* transaction: after a crash the store holds
   either all of a step or none of it.
3. **Types survive.** Hyperparameters are stored as JSON and come back with
   the same Python types (int stays int, float stays float). Non-finite scores
   are stored as ``None`` with ``valid=False``; nothing is silently dropped.
   Non-finite floats inside JSON fields come back as ``None`` (strict JSON, which
   PostgreSQL requires); integers are 64-bit.
4. **Append-only history.** Intervals, scores and events are never updated or
   deleted; only ``members``, ``member_states``, ``runs.scheduler_state`` and
   checkpoint ``deleted`` flags change.
5. **Versioned schema.** A store refuses to open a database written by a
   newer schema version, with a message saying to upgrade torchpbt; an older
   one is upgraded on open (alembic, one transaction: all or nothing).
6. **Reads return plain dicts** of JSON-able values, ordered by insertion.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# == the alembic head revision (store/migrations/versions/000N_*.py); bump both together
SCHEMA_VERSION = 4


class StoreError(RuntimeError):
    """The store cannot be opened or does not hold what was asked for."""


@dataclass
class IntervalRecord:
    member_id: int
    start_step: int
    end_step: int
    hparams: dict[str, Any]
    start_checkpoint: str | None
    end_checkpoint: str | None
    score: float | None
    loss: float | None = None
    duration_s: float = 0.0
    worker: str = ""
    error: str | None = None
    checkpoint_size: int = 0
    extra: dict[str, Any] | None = None


@dataclass
class EventRecord:
    kind: str  # start | continue | explore | exploit | reinit | stop | fail
    member_id: int
    step: int
    donor_id: int | None = None
    donor_step: int | None = None
    old_hparams: dict[str, Any] | None = None
    new_hparams: dict[str, Any] | None = None
    operations: dict[str, str] | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepRecord:
    """One controller step: an interval (or none), its events, the members it changed."""

    interval: IntervalRecord | None
    events: Sequence[EventRecord] = ()
    members: Sequence[MemberUpdate] = ()


@dataclass
class MemberUpdate:
    member_id: int
    hparams: dict[str, Any]
    step: int
    checkpoint: str | None
    status: str  # training | done | failed
    parent_id: int | None = None
    exploited: bool = False


class BaseStore(abc.ABC):
    """Persistent record of PBT runs. See the module docstring for the rules."""

    url: str

    @abc.abstractmethod
    def create_run(
        self, name: str, config: Mapping[str, Any], space: Mapping[str, Any],
        members: Sequence[MemberUpdate], events: Sequence[EventRecord] = (),
        scheduler_state: Mapping[str, Any] | None = None,
        member_states: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> int:
        """Create a run, its members, first events and state in one transaction;
        refuse a name that exists."""

    @abc.abstractmethod
    def find_run(self, name: str | None = None, run_dir: str | None = None) -> dict[str, Any]:
        """The run called ``name`` (or the latest), restricted to ``run_dir`` if given."""

    def record(
        self,
        run_id: int,
        interval: IntervalRecord | None,
        events: Sequence[EventRecord],
        members: Sequence[MemberUpdate],
        scheduler_state: Mapping[str, Any] | None = None,
        deleted_checkpoints: Sequence[str] = (),
        status: str | None = None,
        member_states: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> None:
        """Write one step of the run atomically (rule 2)."""
        self.record_steps(run_id, [StepRecord(interval, events, members)], scheduler_state,
                          deleted_checkpoints, status, member_states)

    @abc.abstractmethod
    def record_steps(
        self,
        run_id: int,
        steps: Sequence[StepRecord],
        scheduler_state: Mapping[str, Any] | None = None,
        deleted_checkpoints: Sequence[str] = (),
        status: str | None = None,
        member_states: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> None:
        """Write steps, in order, in one transaction (rule 2: all of them or none), e.g.
        every outcome one ``Backend.wait()`` returned. ``scheduler_state`` replaces the
        run's global state; ``member_states`` replaces the given members' states;
        ``deleted_checkpoints`` are flagged after the steps' checkpoints are written."""

    @abc.abstractmethod
    def member_states(self, run_id: int) -> dict[int, dict[str, Any]]:
        """Every member's resume state, by member id."""

    @abc.abstractmethod
    def members(self, run_id: int) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def intervals(self, run_id: int) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def scores(self, run_id: int) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def events(self, run_id: int) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def checkpoints(self, run_id: int, include_deleted: bool = False) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def close(self) -> None: ...
