"""Scores of different ages compared fairly: the learning curve and the shifted ranking.

Plain numbers only. The shifted ranking must answer every rank query exactly as a
plain ranking of the shifted scores would; the curve must shift by the cohort means
without the reporter, and predict an age nobody else has reached yet.
"""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from torchpbt.algorithm.curve import LearningCurve
from torchpbt.algorithm.exploit import Truncation
from torchpbt.algorithm.population import AgedRanking, Ranking
from torchpbt.algorithm.scheduler import AsyncScheduler, PBTConfig, Report
from torchpbt.algorithm.space import Float, Space

# few distinct values: ties within and across groups, failures (-inf) too
SCORES = st.sampled_from([-math.inf, 0.0, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0])
MEMBERS = st.dictionaries(st.integers(0, 30), st.tuples(SCORES, st.floats(0, 1), st.sampled_from([10, 20, 30])),
                          max_size=25)
# shifts that round (0.1 + 0.2 != 0.3) as well as exact ones, and scores that tie
# across groups once shifted
SHIFTS = st.fixed_dictionaries({10: st.sampled_from([0.0, 0.25, 0.1, 0.3, 1.0]),
                                20: st.sampled_from([0.0, -0.5, 0.2, 0.75]),
                                30: st.sampled_from([0.0, 0.05])})


@given(MEMBERS, SHIFTS)
def test_shifted_ranking_answers_as_a_plain_ranking_of_shifted_scores(members, shift):
    aged, flat = AgedRanking(), Ranking()
    for i, (score, order, age) in members.items():
        aged.set(i, score, order, age)
        flat.set(i, score + shift[age], order)
    view = aged.at(shift)
    assert len(view) == len(flat) and all(i in view for i in members)
    assert [view.best(r) for r in range(len(view))] == [flat.best(r) for r in range(len(flat))]
    assert all(view.rank_of(i) == flat.rank_of(i) for i in members)
    assert view.rank_of(99) is None
    assert [view.id_at(k) for k in range(len(view))] == sorted(members)
    for s in (-math.inf, 0.0, 0.3, 0.30000000000000004, 0.5, 1.0, 1.75, 3.0):
        assert view.count_above(s) == flat.count_above(s)
        assert view.count_at_least(s) == flat.count_at_least(s)


def test_groups_that_empty_are_dropped_and_copies_are_frozen():
    aged = AgedRanking()
    aged.set(0, 1.0, 0.0, 10)
    aged.set(1, 2.0, 0.0, 20)
    frozen = aged.copy()
    aged.set(0, 3.0, 0.0, 20)  # member 0 moves to age 20: group 10 is gone
    assert set(aged.groups) == {20} and aged.age[0] == 20
    assert set(frozen.groups) == {10, 20} and frozen.at({}).best(0) == 1
    aged.discard(1)
    aged.discard(0)
    assert len(aged) == 0 and not aged.groups


def test_curve_shifts_by_cohort_means_without_the_reporter():
    c = LearningCurve()
    for s in (1.0, 2.0, 3.0):
        c.record(10, s)
    for s in (5.0, 7.0, math.nan, -math.inf):  # non-finite scores are not recorded
        c.record(20, s)
    # reporter scored 7 at age 20: its cohort without it is {5}, pooled with the
    # prediction from age 10 (the only age before: no trend) = (5 + 2) / 2
    shifts = c.shifts([10, 20], 20, 7.0)
    assert shifts == {10: 3.5 - 2.0, 20: 0.0}
    assert c.shifts([10, 20, 15], 20, 7.0)[15] == 0.0  # an age the curve never saw


def test_curve_predicts_an_age_nobody_else_has_reached():
    c = LearningCurve()
    for age, s in ((10, 1.0), (20, 3.0), (30, 9.0)):
        c.record(age, s)
    # only the reporter is at 30: level = 3 + (3 - 1) = 5 (the trend of 10 -> 20)
    assert c.shifts([20, 30], 30, 9.0) == {20: 2.0, 30: 0.0}
    assert LearningCurve().shifts([10], 10, 1.0) == {}  # nothing known: no shift
    one = LearningCurve()
    one.record(10, 4.0)
    assert one.shifts([10], 10, 4.0) == {}  # the reporter alone is no cohort


def test_curve_state_round_trips():
    c = LearningCurve()
    for i in range(20):
        c.record(random.Random(i).choice([10, 20, 30]), random.Random(i).random())
    d = LearningCurve()
    d.load(c.state())
    assert d.state() == c.state() and d.shifts([10, 20], 30, 0.5) == c.shifts([10, 20], 30, 0.5)


def test_a_leader_is_compared_with_the_others_at_its_own_age():
    """Member 0 runs one interval ahead on a curve that rises 10 per interval. Its raw
    score is the best, but at its own age it is the worst: it copies."""
    space = Space({"lr": Float(1e-3, 1.0, log=True)})
    s = AsyncScheduler(space, PBTConfig(4, 10, 100), Truncation(0.25), None, seed=0)
    s.start()
    for i, score in enumerate((10.5, 10.0, 10.2, 10.4)):
        s.report(Report(i, 10, score, f"c{i}@10"))
    for i, score in enumerate((20.5, 20.0, 20.2, 20.4)):
        s.report(Report(i, 20, score, f"c{i}@20"))
    s.report(Report(1, 30, 30.0, "c1@30"))
    out = s.report(Report(0, 30, 25.0, "c0@30"))  # a poor interval, at the front
    assert s.snapshot().ranking.rank_of(0) == 1  # raw, only member 1 beats it
    assert s.snapshot(s.members[0]).ranking.rank_of(0) == 3  # at age 30 it is the worst
    # its donor (best at age 30) is member 1, or one still at 20 that it waits for
    assert [d.action for d in out] == ["exploit"] or s.members[0].awaiting is not None


def test_the_curve_is_not_committed_with_each_step_but_replayed_from_the_scores():
    """The curve changes with every report, so the per-step global state leaves it out;
    replaying the logged (step, score) pairs, failures and a minimised score included,
    gives the same curve bit for bit."""
    space = Space({"lr": Float(1e-3, 1.0, log=True)})
    s = AsyncScheduler(space, PBTConfig(4, 10, 60, mode="min"), Truncation(0.25), None, seed=3)
    s.start()
    rng, log = random.Random(0), []
    for step in range(10, 61, 10):
        for i in range(4):
            failed = rng.random() < 0.1
            score = math.nan if failed else rng.random() * step
            s.report(Report(i, step, score, None if failed else f"c{i}@{step}", failed))
            log.append((step, None if failed else score))
    assert "curve" not in s.global_state() and s.curve.state()
    t = AsyncScheduler(space, PBTConfig(4, 10, 60, mode="min"), Truncation(0.25), None, seed=3)
    t.replay_scores(log)
    assert t.curve.state() == s.curve.state()
    t.replay_scores(log)  # a second replay starts over
    assert t.curve.state() == s.curve.state()
    u = AsyncScheduler(space, PBTConfig(4, 10, 60, mode="min"), Truncation(0.25), None, seed=3)
    u.load_state_dict(s.state_dict())  # the whole state in one dict still holds it
    assert u.curve.state() == s.curve.state()
