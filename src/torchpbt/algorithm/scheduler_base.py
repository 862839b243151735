"""What both schedulers share: the members' state, how a report is recorded, and how
one member decides (continue, explore, copy a donor, re-initialise or stop). No I/O,
no torch. The two ways of deciding (asynchronous and generational) are in
``scheduler.py``.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from .curve import LearningCurve
from .exploit import MemberView, pick_replacement
from .explore import ExploreContext, Observation, apply_explore, history_size
from .population import AgedRanking, Population
from .progress import check_progress
from .rng_state import RngEncoder, decode_rng
from .scheduler_types import (
    HISTORY,
    Decision,
    Donor,
    MemberState,
    PBTConfig,
    PlanRef,
    Report,
    member_from_json,
    member_to_json,
)
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


class Scheduler:
    """The shared part of both schedulers; ``report`` is each one's own."""

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
        return member_to_json(self.members[member_id], member_id not in self._unscored)

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
        m, scored = member_from_json(d, self.space.coerce(d["hparams"]))
        self.members[m.member_id] = m
        if m.awaiting is not None:
            self._waiters.setdefault(m.awaiting, set()).add(m.member_id)
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
        check_progress(m.member_id, m.history, self.failures_in_a_row, len(self.members),
                       self.first_failure)
        latest = m.history[-1] if math.isfinite(m.history[-1]) else None
        if self.history_size:
            self._observe(m, latest)
        m.baseline = latest  # a member that trains on starts from these weights
        return m

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
            donor_id = pick_replacement(me, population, self.rng, q,
                                        getattr(self.exploit, "max_lineage_share", None))
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
        donor = frozen[donor_id] if frozen is not None else donor_of(self.members[donor_id])
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


def donor_of(m: MemberState, copy: bool = False) -> Donor:
    """What a copy of ``m`` would take; ``copy``: a snapshot later changes cannot reach."""
    if copy:
        return Donor(m.checkpoint, dict(m.hparams), m.step, list(m.history), m.lineage)
    return Donor(m.checkpoint, m.hparams, m.step, m.history, m.lineage)


def _tiebreak(seed: int, member_id: int, step: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, member, step)."""
    digest = hashlib.sha256(f"tiebreak:{seed}:{member_id}:{step}".encode()).digest()
    return int.from_bytes(digest[:7], "little") / 2**56
