"""The incremental ranking and checkpoint references agree with recomputing from scratch."""

from __future__ import annotations

import math
import random

import pytest

from torchpbt.algorithm.exploit import Tournament, Truncation, pick_replacement
from torchpbt.algorithm.population import MemberView, Population, Ranking
from torchpbt.engine.controller import References


def _views(rng: random.Random, n: int) -> dict[int, MemberView]:
    scores = [-math.inf, 0.0, 0.5, 1.0]  # few values: many ties
    return {i: MemberView(i, 10, rng.choice(scores + [rng.random()]), (), rng.random())
            for i in rng.sample(range(3 * n), n)}


def _population(views: dict[int, MemberView]) -> Population:
    ranking = Ranking()
    for v in views.values():
        ranking.set(v.member_id, v.score, -v.tiebreak)
    return Population(ranking, views.__getitem__)


@pytest.mark.parametrize("seed", range(20))
def test_ranking_matches_a_sort_after_any_updates(seed):
    rng = random.Random(seed)
    ranking, live = Ranking(), {}
    for _ in range(300):
        i = rng.randrange(40)
        if rng.random() < 0.25:
            ranking.discard(i)
            live.pop(i, None)
        else:
            live[i] = (rng.choice([-math.inf, 1.0, 2.0, rng.random()]), rng.random())
            ranking.set(i, *live[i])
    order = sorted(live, key=lambda i: (-live[i][0], live[i][1], i))
    assert [ranking.best(r) for r in range(len(ranking))] == order
    assert all(ranking.rank_of(i) == r for r, i in enumerate(order))
    assert [ranking.id_at(k) for k in range(len(ranking))] == sorted(live)
    for s in (-math.inf, 0.5, 1.0, 2.0, 3.0):
        assert ranking.count_above(s) == sum(v[0] > s for v in live.values())
        assert ranking.count_at_least(s) == sum(v[0] >= s for v in live.values())
    frozen = ranking.copy()
    if order:
        ranking.discard(order[0])
    assert [frozen.best(r) for r in range(len(frozen))] == order


@pytest.mark.parametrize("seed", range(30))
def test_population_is_a_sequence_in_id_order(seed):
    views = _views(random.Random(seed), 12)
    pop = _population(views)
    assert list(pop) == [views[i] for i in sorted(views)] == pop[:]
    assert pop[-1] == views[max(views)] and pop.get(-5) is None
    mid = sorted(views)[5]
    assert [pop.other(k, mid).member_id for k in range(pop.others(mid))] == \
        [i for i in sorted(views) if i != mid]


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("copy_ties", [False, True])
def test_truncation_on_a_ranked_population_picks_like_the_definition(seed, copy_ties):
    rng = random.Random(seed)
    views = _views(rng, rng.randrange(2, 15))
    pop = _population(views)
    order = sorted(views.values(), key=lambda v: (-v.score, -v.tiebreak, v.member_id))
    strategy = Truncation(0.3, copy_ties=copy_ties)
    k = min(len(order) // 2, max(1, math.ceil(0.3 * len(order) - 1e-9)))
    for me in views.values():
        bottom = {v.member_id for v in order[-k:]}
        better = [v.member_id for v in order[:k] if v.score > me.score or (
            copy_ties and v.score == me.score and v.member_id != me.member_id)]
        expected = set(better) if me.member_id in bottom else set()
        picks = {strategy(me, pop, random.Random(s)) for s in range(60)}
        assert picks == (expected or {None})


@pytest.mark.parametrize("seed", range(30))
def test_replacement_and_tournament_on_a_ranked_population(seed):
    rng = random.Random(seed)
    views = _views(rng, rng.randrange(2, 12))
    pop = _population(views)
    me = rng.choice(list(views.values()))
    healthy = sorted((v for v in views.values()
                      if v.member_id != me.member_id and math.isfinite(v.score)),
                     key=lambda v: (-v.score, -v.tiebreak, v.member_id))
    k = max(1, math.ceil(0.5 * len(healthy)))
    picks = {pick_replacement(me, pop, random.Random(s), 0.5) for s in range(80)}
    assert picks == ({v.member_id for v in healthy[:k]} or {None})
    # Tournament draws the same "other" from a ranked population as from the plain list
    plain = [views[i] for i in sorted(views)]
    for s in range(20):
        assert Tournament()(me, pop, random.Random(s)) == Tournament()(me, plain, random.Random(s))


@pytest.mark.parametrize("seed", range(20))
def test_references_free_exactly_what_nobody_holds(seed):
    rng = random.Random(seed)
    refs, members, tasks = References(), {}, {}
    keys = [f"k{i}" for i in range(8)]
    for _ in range(200):
        freed = set()
        if rng.random() < 0.5:
            m = rng.randrange(5)
            members[m] = rng.choice(keys + [None])
            freed = refs.hold(m, members[m])
        elif tasks and rng.random() < 0.5:
            t = rng.choice(list(tasks))
            freed = refs.remove(tasks.pop(t))
        else:
            t = rng.randrange(100)
            if t not in tasks:
                tasks[t] = set(rng.sample(keys, rng.randrange(1, 3)))
                refs.add(tasks[t])
        held = {k for k in members.values() if k} | {k for ks in tasks.values() for k in ks}
        assert set(refs.count) == held and not (freed & held)
