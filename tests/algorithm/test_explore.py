"""Explore strategies: (new_hparams, operations), bounds and types, user callables."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchpbt.algorithm.explore import Perturb, Resample, apply_explore, check_explore
from torchpbt.algorithm.space import Choice, Float, Int, Space, SpaceError

PROPS = settings(max_examples=200, deadline=None, derandomize=True)


def space() -> Space:
    return Space({
        "lr": Float(1e-4, 1e-1, log=True), "momentum": Float(0.0, 0.99),
        "batch": Int(16, 256, log=True), "layers": Int(1, 8),
        "act": Choice(["relu", "tanh", "gelu"]), "width": Choice([32, 64, 128], ordered=True),
    })


HP = {"lr": 0.01, "momentum": 0.5, "batch": 64, "layers": 4, "act": "tanh", "width": 64}


def typed_inside(sp: Space, hp: dict) -> bool:
    for name, dom in sp.items():
        v = hp[name]
        if isinstance(dom, Int) and type(v) is not int:
            return False
        if isinstance(dom, Float) and type(v) is not float:
            return False
        if not dom.contains(v):
            return False
    return set(hp) == set(sp)


# -- Perturb ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs",
    [{"factors": ()}, {"factors": (0.0, 1.2)}, {"factors": (-0.8,)}, {"factors": ("0.8",)},
     {"factors": "0.8"}, {"factors": (True,)}, {"factors": (float("nan"),)},
     {"factors": (float("inf"),)}, {"resample_probability": -0.1},
     {"resample_probability": 1.5}, {"resample_probability": float("nan")},
     {"resample_probability": "0.25"}],
)
def test_perturb_bad_args_raise(kwargs):
    with pytest.raises(ValueError, match="Perturb"):
        Perturb(**kwargs)


def test_perturb_returns_an_operation_per_hparam():
    sp = space()
    new, ops = Perturb()(HP, sp, random.Random(0))
    assert set(new) == set(ops) == set(sp)
    assert set(ops.values()) <= {"*0.8", "*1.2", "resample"}
    assert typed_inside(sp, new)


def test_perturb_operations_describe_the_move():
    sp, rng = Space({"x": Float(0.0, 100.0), "n": Int(0, 100)}), random.Random(0)
    for _ in range(200):
        new, ops = Perturb(resample_probability=0.0)({"x": 50.0, "n": 50}, sp, rng)
        assert ops["x"] in ("*0.8", "*1.2") and ops["n"] in ("*0.8", "*1.2")
        assert new["x"] == pytest.approx(60.0 if ops["x"] == "*1.2" else 40.0)
        assert new["n"] == (60 if ops["n"] == "*1.2" else 40)


def test_perturb_factors_are_used_and_both_chosen():
    sp, rng = Space({"x": Float(0.0, 100.0)}), random.Random(0)
    seen = {Perturb((0.5, 2.0), 0.0)({"x": 10.0}, sp, rng)[0]["x"] for _ in range(100)}
    assert seen == {5.0, 20.0}
    new, ops = Perturb((1.2,), 0.0)(HP, space(), rng)
    assert ops == {**dict.fromkeys(HP, "*1.2"), "act": "resample"}  # unordered: no direction
    assert new["lr"] == pytest.approx(0.012) and new["layers"] == 5 and new["batch"] > 64
    assert new["width"] == 128 and new["momentum"] == pytest.approx(0.6)


def test_perturb_resample_probability_is_honoured():
    sp, rng, draws = Space({"x": Float(0.0, 1.0), "n": Int(0, 10)}), random.Random(0), 4000
    p = 0.25
    resampled = {"x": 0, "n": 0}
    for _ in range(draws):
        _, ops = Perturb(resample_probability=p)({"x": 0.5, "n": 5}, sp, rng)
        for name in resampled:
            resampled[name] += ops[name] == "resample"
    band = 4 * math.sqrt(draws * p * (1 - p))
    for count in resampled.values():
        assert abs(count - draws * p) < band


@pytest.mark.parametrize(("p", "expected"), [(0.0, 0), (1.0, 500)])
def test_perturb_resample_probability_extremes(p, expected):
    sp, rng = Space({"x": Float(0.0, 1.0)}), random.Random(0)
    ops = [Perturb(resample_probability=p)({"x": 0.5}, sp, rng)[1]["x"] for _ in range(500)]
    assert sum(o == "resample" for o in ops) == expected


def test_perturb_does_not_mutate_its_input():
    hp = dict(HP)
    Perturb()(hp, space(), random.Random(0))
    assert hp == HP


def test_perturb_is_deterministic_given_the_seed():
    a = Perturb()(HP, space(), random.Random(11))
    assert a == Perturb()(HP, space(), random.Random(11))
    assert any(Perturb()(HP, space(), random.Random(s)) != a for s in range(12, 20))


# -- Resample -------------------------------------------------------------------------

def test_resample_draws_every_hparam_afresh():
    sp = space()
    new, ops = Resample()(HP, sp, random.Random(0))
    assert ops == dict.fromkeys(sp, "resample")
    assert typed_inside(sp, new)
    # it ignores the old values: the same as a fresh sample with the same RNG state
    assert new == sp.sample(random.Random(0))
    assert Resample()({k: None for k in HP}, sp, random.Random(0))[0] == new


# -- properties over random spaces ----------------------------------------------------

@st.composite
def spaces(draw) -> Space:
    doms = {}
    for i in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["float", "logfloat", "int", "logint", "choice", "ordered"]))
        if kind in ("float", "logfloat"):
            low = draw(st.floats(1e-6 if kind == "logfloat" else -1e3, 1e3))
            doms[f"h{i}"] = Float(low, low * 10 + 1 if low > 0 else low + 5, log=kind == "logfloat")
        elif kind in ("int", "logint"):
            low = draw(st.integers(1 if kind == "logint" else -50, 50))
            doms[f"h{i}"] = Int(low, low + draw(st.integers(1, 1000)), log=kind == "logint")
        else:
            vals = draw(st.lists(st.one_of(st.integers(-9, 9), st.floats(-9, 9), st.text(max_size=3)),
                                 min_size=1, max_size=6, unique_by=lambda v: (type(v), v)))
            doms[f"h{i}"] = Choice(vals, ordered=kind == "ordered")
    return Space(doms)


explorers = st.one_of(
    st.builds(Perturb, st.lists(st.floats(0.01, 100.0), min_size=1, max_size=3),
              st.floats(0.0, 1.0)),
    st.just(Perturb()), st.just(Resample()),
)


@PROPS
@given(sp=spaces(), explore=explorers, seed=st.integers(0, 10**6), rounds=st.integers(1, 5))
def test_explored_values_stay_inside_and_typed_also_after_json(sp, explore, seed, rounds):
    rng = random.Random(seed)
    hp = sp.sample(rng)
    for _ in range(rounds):  # repeated explore, going through the store each time
        hp, ops = apply_explore(explore, hp, sp, rng)
        assert set(ops) == set(sp)
        assert typed_inside(sp, hp), (hp, ops)
        back = sp.coerce(json.loads(json.dumps(hp)))
        assert back == hp and typed_inside(sp, back)
        hp = back


# -- user callables -----------------------------------------------------------------------

def test_callable_returning_a_dict_is_clipped_into_the_space():
    sp = space()

    def wild(hp, space, rng):
        return {"lr": 5.0, "layers": -3.7, "momentum": 0.5, "batch": 100.4}

    new, ops = apply_explore(wild, HP, sp, random.Random(0))
    assert new == {**HP, "lr": 0.1, "layers": 1, "batch": 100}
    assert type(new["layers"]) is int and type(new["batch"]) is int
    assert typed_inside(sp, new)
    assert ops == {"lr": "custom", "layers": "custom", "batch": "custom"}  # momentum unchanged


def test_callable_returning_hparams_and_operations():
    def mine(hp, space, rng):
        return {"layers": hp["layers"] + 1, "act": "gelu"}, {"layers": "+1", "act": 7}

    new, ops = apply_explore(mine, HP, space(), random.Random(0))
    assert new == {**HP, "layers": 5, "act": "gelu"}
    assert ops == {"layers": "+1", "act": "7"}


def test_callable_gets_a_copy_and_the_rng():
    seen = {}

    def mine(hp, space, rng):
        seen["rng"] = rng
        hp["layers"] = 8  # must not leak into the caller's dict
        return {}

    hp, rng = dict(HP), random.Random(0)
    new, ops = apply_explore(mine, hp, space(), rng)
    assert hp == HP and new == HP and ops == {} and seen["rng"] is rng


def test_callable_naming_an_unknown_hparam_raises():
    with pytest.raises(SpaceError, match=r"unknown hyperparameter.*'dropout'"):
        apply_explore(lambda hp, s, r: {"dropout": 0.1}, HP, space(), random.Random(0))
    with pytest.raises(SpaceError, match=r"unknown hyperparameter.*'dropout'"):
        apply_explore(lambda hp, s, r: ({"dropout": 0.1}, {}), HP, space(), random.Random(0))


@pytest.mark.parametrize("out", [None, [("lr", 0.1)], 0.1, ({"lr": 0.1},), ("lr", 0.1)])
def test_callable_returning_something_else_raises(out):
    with pytest.raises(TypeError, match="return a dict of hparams"):
        apply_explore(lambda hp, s, r: out, HP, space(), random.Random(0))


def test_callable_returning_bad_values_raises():
    with pytest.raises(SpaceError, match="not one of"):
        apply_explore(lambda hp, s, r: {"act": "swish"}, HP, space(), random.Random(0))
    with pytest.raises(SpaceError, match="explore <function.*returned lr=nan; return finite"):
        apply_explore(lambda hp, s, r: {"lr": float("nan")}, HP, space(), random.Random(0))


def test_check_explore():
    for ok in (None, Perturb(), Resample(), lambda hp, s, r: hp):
        check_explore(ok)
    for bad in (0.25, "perturb"):
        with pytest.raises(ValueError, match="not a strategy"):
            check_explore(bad)


def test_reprs():
    assert repr(Perturb((0.5, 2), 0.1)) == "Perturb(factors=(0.5, 2.0), resample_probability=0.1)"
    assert repr(Resample()) == "Resample()"
