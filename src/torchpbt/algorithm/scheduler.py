"""PBT decisions: reports in, decisions out. No I/O, no torch.

A worker trains a member for one interval and *reports* (step, score,
checkpoint key). The scheduler answers with *decisions*: train on, copy a donor
(exploit) and explore, re-initialise, or stop. Two small classes share the
bookkeeping: ``AsyncScheduler`` (the paper's: a ready member decides at once
against the latest scores of the others) and ``SyncScheduler`` (generational:
decisions wait for the whole generation and use one frozen snapshot).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

from .curve import LearningCurve
from .exploit import MemberView, pick_replacement, quantile_count
from .explore import ExploreContext, Observation, apply_explore, history_size
from .population import AgedRanking, Population
from .rng_state import RngEncoder, decode_rng
from .scheduler_types import HISTORY, Decision, Donor, MemberState, PBTConfig, PlanRef, Report
from .space import Space
from .strategies import ArchitectureStrategy, ExploitStrategy, ExploreStrategy, PlanLike


def orient(score: float, mode: str) -> float:
    """Higher-is-better view of a score; NaN/inf and non-numbers rank last."""
    try:
        s = float(score)
    except (TypeError, ValueError):
        return -math.inf
    if not math.isfinite(s):
        return -math.inf
    return s if mode == "max" else -s


class _Scheduler:
    def __init__(
        self,
        space: Space,
        config: PBTConfig,
        exploit: ExploitStrategy | None,
        explore: ExploreStrategy | None,
        seed: int = 0,
        initial_hparams: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self.space, self.config = space, config
        self.exploit, self.explore = exploit, explore
        self.rng = random.Random(seed)
        self._encode_rng = RngEncoder()
        self.seed = seed
        if initial_hparams is not None:
            if len(initial_hparams) != config.population:
                raise ValueError(
                    f"initial_hparams has {len(initial_hparams)} entries; give one per member "
                    f"(population={config.population})."
                )
            hps = [space.validate(h, f"initial_hparams[{i}]") for i, h in enumerate(initial_hparams)]
        else:
            hps = [space.sample(self.rng) for _ in range(config.population)]
        self.members = {i: MemberState(i, hp) for i, hp in enumerate(hps)}
        self.bad_checkpoints: set[str] = set()  # never handed out again
        # what each interval achieved, kept only for an explore that asks (torchpbt.PB2)
        self.history_size = history_size(explore)
        self.observations: list[Observation] = []
        # kept up to date per report, so no decision scans the whole population
        self.ranking = AgedRanking()  # members exploit may compare with (see snapshot)
        self.curve = LearningCurve()  # so scores of different ages compare fairly
        self._unscored = set(self.members)  # members that have not reported yet
        self._done: set[int] = set()
        self.failures_in_a_row = 0  # reports, across members, since the last success
        # (member, step, error) of this process's first failure: what NoProgress shows;
        # a message only, so not part of the saved state
        self.first_failure: tuple[int, int, str] | None = None
        self._waiters: dict[int, set[int]] = {}  # donor -> members waiting for its report

    # -- public -------------------------------------------------------------
    def start(self) -> list[Decision]:
        return [
            Decision(m.member_id, 0, "start", dict(m.hparams), None, self._next_steps(m))
            for m in self.members.values()
        ]

    def report(self, report: Report) -> list[Decision]:
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        return len(self._done) == len(self.members)

    # -- state: one small global part, and one part per member ----------------
    # The controller commits the global part and the parts of the members a step
    # touched (the reporting member and every member decided), so a step costs the
    # same with 10 members or 10,000.
    def global_state(self) -> dict[str, Any]:
        """JSON-able state shared by all members: the RNG, the refused checkpoints and what
        an explore that learns (torchpbt.PB2) has observed (bounded by its history size).

        Not the learning curve: it changes with every report, and it is a function of the
        scores reported, which the store logs anyway; :meth:`replay_scores` rebuilds it."""
        return {"rng": self._encode_rng(self.rng), "bad_checkpoints": sorted(self.bad_checkpoints),
                "observations": [[o.time, o.hparams, o.improvement]
                                 for o in self.observations],
                "failures_in_a_row": self.failures_in_a_row}

    def member_state(self, member_id: int) -> dict[str, Any]:
        """JSON-able state of one member; changes only when it reports or is decided."""
        m = self.members[member_id]
        return {"member_id": m.member_id, "hparams": m.hparams, "step": m.step,
                "checkpoint": m.checkpoint, "done": m.done, "tiebreak": m.tiebreak,
                "baseline": m.baseline, "reported": m.reported,
                "scored": m.member_id not in self._unscored,
                # strict JSON has no -Infinity (PostgreSQL rejects it): a failure is null
                "awaiting": m.awaiting, "await_reason": m.await_reason,
                "await_plan": None if m.await_plan is None else list(m.await_plan),
                "lineage": m.lineage,
                "history": [x if math.isfinite(x) else None for x in m.history]}

    def load_global_state(self, state: Mapping[str, Any]) -> None:
        decode_rng(self.rng, state["rng"])
        self.bad_checkpoints = set(state.get("bad_checkpoints", []))
        self.observations = [Observation(t, self.space.coerce(h), y)
                             for t, h, y in state.get("observations", [])]
        self.failures_in_a_row = int(state.get("failures_in_a_row", 0))

    def replay_scores(self, scores: Iterable[tuple[int, float | None]]) -> None:
        """Rebuild the learning curve from every ``(step, score)`` reported so far, in the
        order reported (the store's score log; None: a failed interval), so a resumed run
        compares ages exactly as the uninterrupted one did."""
        self.curve.load([])
        for step, score in scores:
            if score is not None:
                self.curve.record(step, orient(score, self.config.mode))  # skips non-finite

    def load_member_state(self, d: Mapping[str, Any]) -> None:
        """Load one member (after :meth:`load_global_state`: its refused checkpoints)."""
        prev = self.members.get(d["member_id"])
        if prev is not None and prev.awaiting is not None:
            self._waiters.get(prev.awaiting, set()).discard(prev.member_id)
        m = self.members[d["member_id"]] = MemberState(
            d["member_id"], self.space.coerce(d["hparams"]), d["step"], d["checkpoint"],
            [-math.inf if x is None else float(x) for x in d["history"]], d["done"],
            float(d.get("tiebreak", 0.0)),  # schema 2 drew none: ties fall to member ids
            d.get("baseline"),
        )
        m.reported = int(d.get("reported", m.step))
        m.lineage = int(d.get("lineage", m.member_id))  # older runs kept none: its own
        m.awaiting, m.await_reason = d.get("awaiting"), d.get("await_reason", "")
        m.await_plan = PlanRef(*d["await_plan"]) if d.get("await_plan") else None
        if m.awaiting is not None:
            self._waiters.setdefault(m.awaiting, set()).add(m.member_id)
        scored = d.get("scored", m.step > 0)
        (self._unscored.discard if scored else self._unscored.add)(m.member_id)
        (self._done.add if m.done else self._done.discard)(m.member_id)
        self._rank(m)

    def state_dict(self) -> dict[str, Any]:
        """The whole state in one JSON-able dict, so a crashed controller can resume."""
        return {**self.global_state(), "curve": self.curve.state(),
                "members": [self.member_state(i) for i in self.members]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.load_global_state(state)
        self.curve.load(state.get("curve", []))
        for d in state["members"]:
            self.load_member_state(d)

    # -- shared decision logic -----------------------------------------------
    def _next_steps(self, m: MemberState) -> int:
        return min(self.config.ready_every, self.config.steps - m.step)

    def _record(self, report: Report) -> MemberState:
        m = self.members[report.member_id]
        if m.done:
            raise ValueError(f"member {m.member_id} reported after it finished")
        m.reported = report.step
        self._unscored.discard(m.member_id)
        score = -math.inf if report.failed else orient(report.score, self.config.mode)
        if math.isfinite(score):
            self.curve.record(report.step, score)
            m.step, m.checkpoint = report.step, report.checkpoint
            self.failures_in_a_row = 0
        else:
            # failed, or a NaN/inf score (weights that may be NaN): the member keeps its
            # last good checkpoint, and the age of those weights
            self.failures_in_a_row += 1
            if self.first_failure is None:
                self.first_failure = (m.member_id, report.step, report.error or
                                      f"score {report.score!r} is not a finite number")
        m.history.append(score)
        del m.history[:-HISTORY]  # bounded: state saved at every step stays small
        # a hash of (seed, member, step), not a draw from the RNG: in generational mode the
        # order members report in (which a parallel backend does not fix) must not matter
        m.tiebreak = _tiebreak(self.seed, m.member_id, m.step)
        if report.bad_checkpoint and report.bad_checkpoint not in self.bad_checkpoints:
            self.bad_checkpoints.add(report.bad_checkpoint)
            for other in self.members.values():  # rare: a scan is fine
                if other.checkpoint == report.bad_checkpoint:
                    self._rank(other)
        self._rank(m)
        self._check_progress(m)
        latest = m.history[-1] if math.isfinite(m.history[-1]) else None
        if self.history_size:
            self._observe(m, latest)
        m.baseline = latest  # a member that trains on starts from these weights
        return m

    def _check_progress(self, m: MemberState) -> None:
        """Stop a run that cannot finish: every recent interval failed, or one member's
        last ``MAX_FAILURES`` did (it would retry for ever: failures do not age weights)."""
        streak = len(m.history) - next(
            (i + 1 for i in range(len(m.history) - 1, -1, -1) if math.isfinite(m.history[i])), 0)
        everyone = self.failures_in_a_row >= 3 * len(self.members)
        if streak >= MAX_FAILURES or everyone:
            who = (f"the last {self.failures_in_a_row} intervals (of every member)" if everyone
                   else f"member {m.member_id}'s last {streak} intervals")
            first = self.first_failure
            last_line = (first[2].strip().splitlines() or [""])[-1] if first else ""
            seen = f" The first failure (member {first[0]}, step {first[1]}): {last_line.rstrip('.')}." \
                if first else ""
            raise NoProgress(
                f"{who} failed, so the run cannot make progress.{seen} Fix the member or narrow "
                "the search space, then start a new run; every failure's error is in the run's "
                "events (torchpbt status RUN_DIR).", traceback=first[2] if first else None)

    def _observe(self, m: MemberState, score: float | None) -> None:
        """Record what the interval just reported achieved with its hparams.

        A failed interval is kept (improvement None: the worst, for PB2); an interval
        whose starting score is unknown (a member's first, or after a reinit) is not.
        """
        if score is not None and m.baseline is None:
            return
        tunable: Mapping[str, Any] = self.space.tunable() or {}
        self.observations.append(Observation(
            m.reported / self.config.ready_every, {n: m.hparams[n] for n in tunable},
            None if score is None else score - m.baseline))  # type: ignore[operator]
        del self.observations[:-self.history_size]

    def _context(self, m: MemberState) -> ExploreContext:
        """The history an explore asked for, and what every other member is training with."""
        tunable: Mapping[str, Any] = self.space.tunable() or {}
        every = self.config.ready_every
        pending = [((o.step + self._next_steps(o)) / every, {n: o.hparams[n] for n in tunable})
                   for o in self.members.values()
                   if o.member_id != m.member_id and not o.done and o.step < self.config.steps]
        return ExploreContext((m.step + self._next_steps(m)) / every, list(self.observations),
                              pending)


    def _rank(self, m: MemberState) -> None:
        """Keep the ranking equal to the members :meth:`snapshot` shows."""
        if m.history and m.checkpoint is not None and m.checkpoint not in self.bad_checkpoints:
            self.ranking.set(m.member_id, m.history[-1], -m.tiebreak, m.reported)
        else:
            self.ranking.discard(m.member_id)

    def _view(self, member_id: int, shift: float = 0.0) -> MemberView:
        m = self.members[member_id]
        score = -math.inf if m.latest is None else m.latest + shift
        return MemberView(m.member_id, m.step, score, m.history, m.tiebreak, m.lineage)

    def _shifts(self, ranking: AgedRanking, m: MemberState | None) -> Mapping[int, float]:
        if m is None or len(ranking.groups) < 2:
            return {}
        own = m.history[-1] if m.history else -math.inf
        return self.curve.shifts(ranking.groups, m.reported, own)

    def snapshot(self, m: MemberState | None = None) -> Population:
        """Latest score of every member that has one and a usable checkpoint: the
        population exploit sees, ranked, live (it changes as members report).

        Scores are as seen from ``m`` (the deciding member): one measured at another
        age than its own is shifted by the population's gain between the two (see
        ``curve.py``). None: raw scores.
        """
        shift = self._shifts(self.ranking, m)
        return Population(self.ranking.at(shift), lambda i: self._view(
            i, shift.get(self.ranking.age[i], 0.0)))

    def frozen_snapshot(self) -> _Frozen:
        """The same, frozen: later reports and copies do not change it (O(n))."""
        ranking = self.ranking.copy()
        return _Frozen(self, ranking, {i: self._view(i) for i in self.members if i in ranking})

    def _frozen(self) -> dict[int, Donor]:
        """Donor states as of the snapshot, so copies made in a batch cannot leak into it."""
        return {m.member_id: _donor_of(m, copy=True) for m in self.members.values()}

    def _everyone_scored(self) -> bool:
        """Exploit waits for every member's first score: ranking a partial first
        generation would make early reporters copy whoever happened to finish first."""
        return not self._unscored

    def _decide(
        self,
        m: MemberState,
        population: Population,
        frozen: Mapping[int, Donor] | None = None,
    ) -> list[Decision]:
        cfg = self.config
        at = m.reported
        if m.step >= cfg.steps:
            return [self._stop(m)]
        me = population.get(m.member_id) or self._view(m.member_id)
        failed = not math.isfinite(me.score)
        donor_id, reason = None, ""
        if failed:
            q = getattr(self.exploit, "quantile", 0.25) or 0.25
            donor_id = pick_replacement(me, population, self.rng, q)
            reason = "failed"
            if donor_id is None:
                if m.checkpoint is None or m.checkpoint in self.bad_checkpoints:
                    return [self._reinit(m)]
                reason = "failed, no other member has a checkpoint: its own last weights"
        plan = None
        if not failed and m.step >= cfg.burn_in and self.exploit is not None \
                and self._everyone_scored():
            picked = self.exploit(me, population, self.rng)
            # an architecture strategy's plan (the cheap int/None test first: the
            # Protocol check costs microseconds)
            plan = None if picked is None or isinstance(picked, int) else \
                picked if isinstance(picked, PlanLike) else None
            # anything else is refused by _check_donor just below
            donor_id = plan.base if plan is not None else cast("int | None", picked)
            reason = getattr(plan, "kind", "exploit")
            self._check_donor(donor_id, m.member_id)
        if donor_id is None:
            if (failed or cfg.explore_when == "ready") and self.explore is not None:
                old = dict(m.hparams)
                m.hparams, ops = self._explore(m.hparams, m)
                return [Decision(m.member_id, at, "explore", dict(m.hparams), m.checkpoint,
                                 self._next_steps(m), old_hparams=old, operations=ops,
                                 reason=reason, from_step=m.step)]
            return [Decision(m.member_id, at, "continue", dict(m.hparams), m.checkpoint,
                             self._next_steps(m), reason=reason, from_step=m.step)]
        if not failed and self._wait_for(m, donor_id, frozen):
            m.awaiting, m.await_reason = donor_id, reason
            m.await_plan = None if plan is None else PlanRef(plan.base, plan.donor, plan.kind)
            self._waiters.setdefault(donor_id, set()).add(m.member_id)
            return []
        return self._copy(m, donor_id, reason, self._raw(me.score), plan, frozen)

    def _check_donor(self, donor_id: object, member_id: int) -> None:
        """A custom exploit's answer must name another member: say which strategy erred."""
        ok = donor_id is None or (isinstance(donor_id, int) and not isinstance(donor_id, bool)
                                  and donor_id in self.members and donor_id != member_id)
        if not ok:
            raise ValueError(
                f"exploit {self.exploit!r} returned {donor_id!r} for member {member_id}; return "
                f"None (keep training) or the id of another member, one of {sorted(self.members)}.")

    def _wait_for(self, m: MemberState, donor_id: int,
                  frozen: Mapping[int, Donor] | None) -> bool:
        """Copy later? Only the async scheduler waits (for a donor still behind)."""
        return False

    def _copy(self, m: MemberState, donor_id: int, reason: str, score: float | None,
              plan: PlanLike | None = None,
              frozen: Mapping[int, Donor] | None = None) -> list[Decision]:
        """``m`` takes the donor's weights, their age and (by default) its hparams."""
        cfg = self.config
        at = m.reported
        d_ckpt, d_hparams, d_step, d_history, d_lineage = self._donor(donor_id, frozen)
        finished = d_step >= cfg.steps  # a finished donor: the copy is finished too
        old = dict(m.hparams)
        base = dict(d_hparams) if cfg.inherit_hparams or finished else dict(m.hparams)
        # the weights come from the donor, so its architecture does too
        base.update({g: d_hparams[g] for g in self.space.genes})
        mix = None
        if plan is not None and plan.kind != "copy" and not finished:
            other = self._donor(plan.donor, frozen) if plan.donor is not None else None
            arch: ArchitectureStrategy = self.exploit  # type: ignore[assignment]  # a plan came from one
            genome, origin = arch.child(self.space, d_hparams, other[1] if other else None,
                                        self.rng)
            base.update(genome)
            mix = {"kind": plan.kind, "origin": origin, "lam": arch.lam,
                   "gamma": arch.gamma, "donor_id": plan.donor,
                   "donor_step": other[2] if other else None,
                   "donor_checkpoint": other[0] if other else None}
        ops: dict[str, str] = {}
        if self.explore is not None and not finished:
            base, ops = self._explore(base, m)
        # the copy carries the donor's weights and their age; it keeps its own latest score
        # (not the donor's) until it reports: see "How exploit ranks" in the README
        m.hparams, m.checkpoint, m.step, m.lineage = base, d_ckpt, d_step, d_lineage
        m.baseline = d_history[-1] if d_history and math.isfinite(d_history[-1]) else None
        self._rank(m)
        out = [Decision(m.member_id, at, "exploit", dict(base), d_ckpt,
                        self._next_steps(m), donor_id=donor_id, donor_step=d_step,
                        old_hparams=old, operations=ops, reason=reason,
                        score=score, donor_score=self._raw(d_history[-1]),
                        mix=mix, from_step=d_step)]
        if finished:
            out.append(self._stop(m))
        return out

    def _stop(self, m: MemberState) -> Decision:
        m.done = True
        self._done.add(m.member_id)
        return Decision(m.member_id, m.step, "stop", dict(m.hparams), m.checkpoint, 0)

    def _donor(self, donor_id: int, frozen: Mapping[int, Donor] | None) -> Donor:
        # async: one decision at a time, the live state is the snapshot's
        donor = frozen[donor_id] if frozen is not None else _donor_of(self.members[donor_id])
        if donor.checkpoint is None:
            raise RuntimeError(f"donor {donor_id} has no checkpoint")  # snapshot guarantees one
        return donor

    def _explore(self, hparams: dict[str, Any],
                 m: MemberState) -> tuple[dict[str, Any], dict[str, str]]:
        """Explore the hyperparameters only: architecture genes are left to the strategy."""
        sub = self.space.tunable()
        if sub is None or self.explore is None:
            return dict(hparams), {}
        context = self._context(m) if self.history_size else None
        new, ops = apply_explore(self.explore, {n: hparams[n] for n in sub}, sub, self.rng,
                                 context)
        return {**hparams, **new}, ops

    def _raw(self, oriented: float) -> float | None:
        if not math.isfinite(oriented):
            return None
        return oriented if self.config.mode == "max" else -oriented

    def _reinit(self, m: MemberState) -> Decision:
        """No healthy member to copy: start this one afresh from the prior."""
        old = dict(m.hparams)
        # fresh weights are 0 steps old: they train the whole budget again
        m.hparams, m.checkpoint, m.step = self.space.sample(self.rng), None, 0
        m.lineage = m.member_id  # fresh weights descend from no one
        m.baseline = None
        self._rank(m)
        return Decision(m.member_id, m.reported, "reinit", dict(m.hparams), None,
                        self._next_steps(m), old_hparams=old,
                        operations={n: "resample" for n in self.space},
                        reason="failed, no member has a checkpoint", from_step=0)


class AsyncScheduler(_Scheduler):
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
        pinned = _Pinned(self.members, m.member_id, _donor_of(m, copy=True))
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


class SyncScheduler(_Scheduler):
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


class _Pinned(Mapping[int, Donor]):
    """Donor states: one member's as pinned, every other member's live."""

    def __init__(self, members: Mapping[int, MemberState], member_id: int, state: Donor) -> None:
        self._members, self._id, self._state = members, member_id, state

    def __getitem__(self, member_id: int) -> Donor:
        if member_id == self._id:
            return self._state
        return _donor_of(self._members[member_id])

    def __iter__(self):
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)


class _Frozen:
    """A ranking and its views, frozen before a generation's copies; ``at`` an age."""

    def __init__(self, scheduler: _Scheduler, ranking: AgedRanking,
                 views: dict[int, MemberView]) -> None:
        self._scheduler, self._ranking, self._views = scheduler, ranking, views

    def at(self, m: MemberState) -> Population:
        shift = self._scheduler._shifts(self._ranking, m)

        def view(i: int) -> MemberView:
            v = self._views[i]
            d = shift.get(self._ranking.age[i], 0.0)
            return v if d == 0.0 else replace(v, score=v.score + d)

        return Population(self._ranking.at(shift), view)


class NoProgress(RuntimeError):
    """Intervals keep failing: the run stops instead of retrying for ever. ``traceback``
    is the first failure's error as the worker reported it (None if unknown)."""

    def __init__(self, message: str, traceback: str | None = None) -> None:
        super().__init__(message)
        self.traceback = traceback


MAX_FAILURES = 10  # failed intervals in a row after which one member stops the run


def make_scheduler(sync: bool, *args: Any, **kwargs: Any) -> _Scheduler:
    return (SyncScheduler if sync else AsyncScheduler)(*args, **kwargs)


__all__ = [
    "AsyncScheduler", "Decision", "MemberState", "NoProgress", "PBTConfig", "Report", "SyncScheduler",
    "make_scheduler", "orient", "quantile_count",
]


def _donor_of(m: MemberState, copy: bool = False) -> Donor:
    """What a copy of ``m`` would take; ``copy``: a snapshot later changes cannot reach."""
    if copy:
        return Donor(m.checkpoint, dict(m.hparams), m.step, list(m.history), m.lineage)
    return Donor(m.checkpoint, m.hparams, m.step, m.history, m.lineage)


def _tiebreak(seed: int, member_id: int, step: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, member, step)."""
    digest = hashlib.sha256(f"tiebreak:{seed}:{member_id}:{step}".encode()).digest()
    return int.from_bytes(digest[:7], "little") / 2**56
