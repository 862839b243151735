"""PBT decisions: reports in, decisions out. No I/O, no torch.

A worker trains a member for one interval and *reports* (step, score,
checkpoint key). The scheduler answers with *decisions*: train on, copy a donor
(exploit) and explore, re-initialise, or stop. Two small classes share the
bookkeeping of ``scheduler_base.py``: ``AsyncScheduler`` (the paper's: a ready
member decides at once against the latest scores of the others) and
``SyncScheduler`` (generational: decisions wait for the whole generation and use
one frozen snapshot).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .exploit import MemberView, quantile_count
from .population import AgedRanking, Population
from .progress import MAX_FAILURES, NoProgress
from .scheduler_base import Scheduler, donor_of, orient
from .scheduler_types import Decision, Donor, MemberState, PBTConfig, Report


class AsyncScheduler(Scheduler):
    """The paper's asynchronous PBT: decide at once against the latest scores.

    One refinement: a member that decides to copy a donor whose latest weights are
    younger than its own (the donor is still training towards the receiver's step)
    waits for that interval, then copies the donor's new weights. Copying the older
    ones would make it train those steps again, and the members that copied would
    report sooner than the rest: that timing alone biases every later ranking.
    """

    def report(self, report: Report) -> list[Decision]:
        m = self._record(report)
        waiters = sorted(self._waiters.pop(m.member_id, ()))
        # the members that waited copy what this report brought, whatever the reporter
        # decides next; and it decides first, while they still hold their own weights
        # (released first, a waiter would hold the reporter's weights under its own older
        # score, and the reporter could pick it as a donor: a copy of itself)
        if not waiters:
            return self._decide(m, self.snapshot(m))
        pinned = _Pinned(self.members, m.member_id, donor_of(m, copy=True))
        own = self._decide(m, self.snapshot(m))
        released = [d for r in waiters for d in self._release(self.members[r], m, pinned)]
        return released + own

    def _wait_for(self, m: MemberState, donor_id: int,
                  frozen: Mapping[int, Donor] | None) -> bool:
        d = self.members[donor_id]
        # a member not done reports again: if it waits itself, once its own donor has
        # reported and it has trained. Waits never form a cycle (each waits for a strictly
        # younger member), and copying younger weights would train steps twice
        return d.step < m.step and not d.done

    def _release(self, m: MemberState, donor: MemberState,
                 donors: Mapping[int, Donor]) -> list[Decision]:
        if donors[donor.member_id].step < m.step and not donor.done:
            # its weights are still younger (it failed, or has just copied younger
            # ones itself): wait for its next report
            self._waiters.setdefault(donor.member_id, set()).add(m.member_id)
            return []
        m.awaiting, reason, plan = None, m.await_reason, m.await_plan
        m.await_reason, m.await_plan = "", None
        return self._copy(m, donor.member_id, reason, self._raw(m.history[-1]), plan, donors)


class SyncScheduler(Scheduler):
    """Generational PBT: decide for a whole generation at once from one frozen snapshot.

    A failed interval still reports (as a failure), so one dead member never
    hangs the generation.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: dict[int, MemberState] = {}

    def report(self, report: Report) -> list[Decision]:
        m = self._record(report)
        self._waiting[m.member_id] = m
        if len(self._waiting) < len(self.members) - len(self._done):
            return []
        population, frozen = self.frozen_snapshot(), self._frozen()  # before any copy
        batch, self._waiting = sorted(self._waiting.values(), key=lambda x: x.member_id), {}
        return [d for x in batch for d in self._decide(x, population.at(x), frozen)]

    def member_state(self, member_id: int) -> dict[str, Any]:
        return {**super().member_state(member_id), "waiting": member_id in self._waiting}

    def load_member_state(self, d: Mapping[str, Any]) -> None:
        super().load_member_state(d)
        self._waiting.pop(d["member_id"], None)
        if d.get("waiting"):
            self._waiting[d["member_id"]] = self.members[d["member_id"]]

    def frozen_snapshot(self) -> _Frozen:
        """Like :meth:`snapshot`, but frozen: later reports and copies do not change it (O(n))."""
        ranking = self.ranking.copy()
        return _Frozen(self, ranking, {i: self._view(i) for i in self.members if i in ranking})

    def _frozen(self) -> dict[int, Donor]:
        """Donor states as of the snapshot, so copies made in a batch cannot leak into it."""
        return {m.member_id: donor_of(m, copy=True) for m in self.members.values()}


class _Pinned(Mapping[int, Donor]):
    """Donor states: one member's as pinned, every other member's live."""

    def __init__(self, members: Mapping[int, MemberState], member_id: int, state: Donor) -> None:
        self._members, self._id, self._state = members, member_id, state

    def __getitem__(self, member_id: int) -> Donor:
        if member_id == self._id:
            return self._state
        return donor_of(self._members[member_id])

    def __iter__(self):
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)


class _Frozen:
    """A ranking and its views, frozen before a generation's copies; ``at`` an age."""

    def __init__(self, scheduler: Scheduler, ranking: AgedRanking,
                 views: dict[int, MemberView]) -> None:
        self._scheduler, self._ranking, self._views = scheduler, ranking, views

    def at(self, m: MemberState) -> Population:
        shift = self._scheduler._shifts(self._ranking, m)

        def view(i: int) -> MemberView:
            v = self._views[i]
            d = shift.get(self._ranking.age[i], 0.0)
            return v if d == 0.0 else replace(v, score=v.score + d)

        return Population(self._ranking.at(shift), view)


def make_scheduler(sync: bool, *args: Any, **kwargs: Any) -> Scheduler:
    return (SyncScheduler if sync else AsyncScheduler)(*args, **kwargs)


__all__ = [
    "MAX_FAILURES", "AsyncScheduler", "Decision", "MemberState", "NoProgress", "PBTConfig",
    "Report", "Scheduler", "SyncScheduler", "make_scheduler", "orient", "quantile_count",
]
