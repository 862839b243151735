"""The values the scheduler exchanges and keeps: reports in, decisions out, the
per-member state and the run's PBT settings (validated here, before any work)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple


@dataclass(frozen=True)
class Report:
    """A member reached a ready point (or its interval failed)."""

    member_id: int
    step: int
    score: float
    checkpoint: str | None
    failed: bool = False
    error: str | None = None
    bad_checkpoint: str | None = None  # the interval's start checkpoint could not be loaded


Action = Literal["start", "continue", "explore", "exploit", "reinit", "stop"]


@dataclass(frozen=True)
class Decision:
    """What a member does next (``action``): start, continue (same hparams), explore (new
    hparams, own weights), exploit (a donor's weights, maybe new hparams), reinit (fresh
    weights and hparams) or stop.

    ``step`` is the member's step when it was decided (its report's). The next
    interval starts at :attr:`start_step`, the age of the weights it starts from: a
    copy carries the donor's weights *and their age* (``from_step`` = the donor's
    step), a reinit starts again at 0, and a member whose interval failed goes on
    from the age of its last good checkpoint. So every member's final weights have
    trained exactly ``steps`` steps.
    """

    member_id: int
    step: int
    action: Action
    hparams: dict[str, Any]
    checkpoint: str | None
    train_steps: int
    donor_id: int | None = None
    donor_step: int | None = None
    old_hparams: dict[str, Any] | None = None
    operations: dict[str, str] | None = None
    reason: str = ""
    score: float | None = None  # the member's latest score (as reported), for the audit
    donor_score: float | None = None
    # architecture change (torchpbt.nas): second parent, per-gene origin, shrink-perturb λ/γ
    mix: dict[str, Any] | None = None
    from_step: int | None = None  # where the next interval starts, when not at ``step``

    @property
    def start_step(self) -> int:
        return self.step if self.from_step is None else self.from_step


def plan_reads(mix: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The checkpoints a NAS child's interval reads besides its base: the second parent's."""
    donor = mix.get("donor_checkpoint") if mix else None
    return (donor,) if donor else ()


class Donor(NamedTuple):
    """What a copy takes from its donor, as of the decision's snapshot."""

    checkpoint: str | None
    hparams: dict[str, Any]
    step: int
    history: list[float]
    lineage: int  # the initial member the donor's weights descend from


HISTORY = 100  # scores kept per member for exploit (TTest uses the last `window`)


class PlanRef(NamedTuple):
    """What the scheduler keeps of an architecture strategy's plan (torchpbt.nas.Plan)."""

    base: int
    donor: int | None
    kind: str


@dataclass
class MemberState:
    member_id: int
    hparams: dict[str, Any]
    step: int = 0  # the age of ``checkpoint``: where its next (or running) interval starts
    checkpoint: str | None = None
    history: list[float] = field(default_factory=list)  # oriented: higher is better
    done: bool = False
    tiebreak: float = 0.0  # set at each report: how it ranks among equal scores
    # oriented score of the weights the running interval started from (None: unknown or
    # failed), so the interval's improvement is measured against what it really began with
    baseline: float | None = None
    reported: int = 0  # the step of its latest report (where a decision on it is logged)
    # async: the donor whose interval in progress it waits for, to copy weights as old as
    # its own (instead of older ones it would have to train again); and why it copies
    awaiting: int | None = None
    await_reason: str = ""
    await_plan: PlanRef | None = None  # an architecture strategy's plan, kept while it waits
    # the initial member its weights descend from (a copy takes the donor's; fresh
    # weights start their own): what Truncation(max_lineage_share=...) counts
    lineage: int = -1

    def __post_init__(self) -> None:
        if self.lineage < 0:
            self.lineage = self.member_id

    @property
    def latest(self) -> float | None:
        """What exploit ranks it by: its latest reported score. A copy and a reinit keep
        their history, so every member that has reported holds exactly one score."""
        return self.history[-1] if self.history else None


def member_to_json(m: MemberState, scored: bool) -> dict[str, Any]:
    """One member's state as strict JSON (``scored``: it has reported a score once)."""
    return {"member_id": m.member_id, "hparams": m.hparams, "step": m.step,
            "checkpoint": m.checkpoint, "done": m.done, "tiebreak": m.tiebreak,
            "baseline": m.baseline, "reported": m.reported, "scored": scored,
            "awaiting": m.awaiting, "await_reason": m.await_reason,
            "await_plan": None if m.await_plan is None else list(m.await_plan),
            "lineage": m.lineage,
            # strict JSON has no -Infinity (PostgreSQL rejects it): a failure is null
            "history": [x if math.isfinite(x) else None for x in m.history]}


def member_from_json(d: Mapping[str, Any], hparams: dict[str, Any]) -> tuple[MemberState, bool]:
    """The inverse of :func:`member_to_json` (``hparams`` already coerced to the space);
    fields older runs did not keep get what those runs meant."""
    m = MemberState(
        d["member_id"], hparams, d["step"], d["checkpoint"],
        [-math.inf if x is None else float(x) for x in d["history"]], d["done"],
        float(d.get("tiebreak", 0.0)),  # schema 2 drew none: ties fall to member ids
        d.get("baseline"),
    )
    m.reported = int(d.get("reported", m.step))
    m.lineage = int(d.get("lineage", m.member_id))  # older runs kept none: its own
    m.awaiting, m.await_reason = d.get("awaiting"), d.get("await_reason", "")
    m.await_plan = PlanRef(*d["await_plan"]) if d.get("await_plan") else None
    return m, bool(d.get("scored", m.step > 0))


@dataclass(frozen=True)
class PBTConfig:
    population: int
    ready_every: int
    steps: int
    mode: str = "max"
    burn_in: int = 0
    inherit_hparams: bool = True
    explore_when: str = "exploit"  # or "ready": explore at every ready point

    def __post_init__(self) -> None:
        for name in ("population", "ready_every", "steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name}={v!r} must be an int; give a whole number, e.g. {name}=10.")
        if self.population < 2:
            raise ValueError(
                f"population={self.population}: PBT needs at least 2 members to exploit; "
                "pass population=2 or more."
            )
        if self.ready_every <= 0:
            raise ValueError(
                f"ready_every={self.ready_every}: give a positive number of steps between ready points."
            )
        if self.steps <= 0:
            raise ValueError(f"steps={self.steps}: give a positive per-member step budget.")
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode={self.mode!r}: use 'max' (higher score is better) or 'min'.")
        if isinstance(self.burn_in, bool) or not isinstance(self.burn_in, int) or self.burn_in < 0:
            raise ValueError(f"burn_in={self.burn_in!r}: give a non-negative number of steps.")
        if self.explore_when not in ("exploit", "ready"):
            raise ValueError(
                f"explore_when={self.explore_when!r}: use 'exploit' (explore after a copy) or 'ready'."
            )
