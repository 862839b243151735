"""Search-space domains: sample, perturb, resample, clip, validation, JSON types."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchpbt.algorithm.space import Choice, Float, Int, Space, SpaceError

PROPS = settings(max_examples=200, deadline=None, derandomize=True)


# -- strategies -----------------------------------------------------------------

@st.composite
def floats_dom(draw) -> Float:
    log = draw(st.booleans())
    if log:
        low = draw(st.floats(1e-8, 1e6))
        high = low * draw(st.floats(1.001, 1e6))
    else:
        low = draw(st.floats(-1e6, 1e6))
        high = low + draw(st.floats(1e-3, 1e6))
    return Float(low, high, log=log)


@st.composite
def ints_dom(draw) -> Int:
    log = draw(st.booleans())
    if log:
        low = draw(st.integers(1, 10**6))
    else:
        low = draw(st.integers(-(10**6), 10**6))
    high = low + draw(st.one_of(st.integers(1, 10**4), st.integers(1, 10**18)))
    return Int(low, high, log=log)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
)


@st.composite
def choices_dom(draw) -> Choice:
    vals = draw(st.lists(scalars, min_size=1, max_size=8, unique_by=lambda v: (type(v), v)))
    return Choice(vals, ordered=draw(st.booleans()))


domains = st.one_of(floats_dom(), ints_dom(), choices_dom())
factors = st.one_of(st.floats(1e-6, 1e6), st.floats(1e-300, 1e300), st.sampled_from([0.8, 1.2]))


def value_in(draw, dom) -> object:
    """A legal value of ``dom``, bounds included."""
    if isinstance(dom, Choice):
        return draw(st.sampled_from(dom.values))
    if isinstance(dom, Int):
        return draw(st.one_of(st.integers(dom.low, dom.high), st.sampled_from([dom.low, dom.high])))
    return draw(st.one_of(st.floats(dom.low, dom.high), st.sampled_from([dom.low, dom.high])))


def same_type(dom, value) -> bool:
    if isinstance(dom, Int):
        return type(value) is int
    if isinstance(dom, Float):
        return type(value) is float
    return any(type(v) is type(value) and v == value for v in dom.values)


def json_round_trip(space: Space, hparams: dict) -> dict:
    return space.coerce(json.loads(json.dumps(hparams)))


# -- invalid definitions ----------------------------------------------------------

@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: Float(1.0, 1.0), "low must be < high"),
        (lambda: Float(2.0, 1.0), "low must be < high"),
        (lambda: Int(5, 5), "low must be < high"),
        (lambda: Int(10, 0), "low must be < high"),
        (lambda: Float(0.0, 1.0, log=True), "log scale needs low > 0"),
        (lambda: Float(-1.0, 1.0, log=True), "log scale needs low > 0"),
        (lambda: Int(0, 10, log=True), "log scale needs low > 0"),
        (lambda: Float(float("nan"), 1.0), "low must be a finite number"),
        (lambda: Float(0.0, float("inf")), "high must be a finite number"),
        (lambda: Float("0", 1.0), "low must be a finite number"),
        (lambda: Float(True, 2.0), "low must be a finite number"),
        (lambda: Int(0.5, 10), "low must be an int"),
        (lambda: Int(0, 10.0), "high must be an int"),
        (lambda: Int(False, 10), "low must be an int"),
        (lambda: Choice([]), "at least one value"),
        (lambda: Choice([1, 2, 1]), "repeated values"),
        (lambda: Choice([[1, 2]]), "only str, int, float, bool"),
        (lambda: Choice([object()]), "only str, int, float, bool"),
    ],
)
def test_invalid_domain_definitions_raise_a_clear_error(make, needle):
    with pytest.raises(SpaceError, match=needle):
        make()


def test_space_error_is_a_value_error():
    assert issubclass(SpaceError, ValueError)


@pytest.mark.parametrize(
    ("domains", "needle"),
    [({}, "non-empty dict"), ([("lr", Float(0, 1))], "non-empty dict"),
     ({"": Float(0, 1)}, "non-empty string"), ({3: Float(0, 1)}, "non-empty string"),
     ({"lr": (0.0, 1.0)}, "wrap it as torchpbt.Float")],
)
def test_invalid_space_raises(domains, needle):
    with pytest.raises(SpaceError, match=needle):
        Space(domains)


def space3() -> Space:
    return Space({"lr": Float(1e-4, 1e-1, log=True), "layers": Int(1, 8),
                  "act": Choice(["relu", "tanh", "gelu"])})


def test_check_names_names_the_unknown_hparams():
    space = space3()
    space.check_names(["lr", "layers"], "x")  # a subset is fine
    with pytest.raises(SpaceError) as err:
        space.check_names(["lr", "momentum", "beta"], "my explore")
    msg = str(err.value)
    assert "my explore" in msg and "'beta'" in msg and "'momentum'" in msg and "'lr'" in msg


@pytest.mark.parametrize(
    ("hparams", "needle"),
    [
        ({"lr": 0.01, "layers": 2, "act": "relu", "wd": 0.1}, r"unknown hyperparameter.*'wd'"),
        ({"lr": 0.01, "layers": 2}, r"lacks hyperparameter.*'act'"),
        ({"lr": 0.5, "layers": 2, "act": "relu"}, r"lr=0\.5 is outside"),
        ({"lr": 0.01, "layers": 9, "act": "relu"}, "layers=9 is outside"),
        ({"lr": 0.01, "layers": 0, "act": "relu"}, "layers=0 is outside"),
        ({"lr": float("nan"), "layers": 2, "act": "relu"}, "lr=nan is outside"),
        ({"lr": "0.01", "layers": 2, "act": "relu"}, "lr='0.01' is outside"),
        ({"lr": 0.01, "layers": True, "act": "relu"}, "layers=True is outside"),
        ({"lr": 0.01, "layers": 2.5, "act": "relu"}, "layers=2.5 is not a whole number"),
        ({"lr": 0.01, "layers": 2, "act": "elu"}, "act='elu' is not one of"),
    ],
)
def test_validate_rejects_bad_hparams_and_names_the_problem(hparams, needle):
    with pytest.raises(SpaceError, match=needle):
        space3().validate(hparams, "initial_hparams[0]")


def test_validate_restores_declared_types():
    out = Space({"lr": Float(0.0, 1.0), "n": Int(1, 8), "c": Choice([1, 2.5])}).validate(
        {"lr": 1, "n": 3.0, "c": 1.0})
    assert out == {"lr": 1.0, "n": 3, "c": 1}
    assert type(out["lr"]) is float and type(out["n"]) is int and type(out["c"]) is int


# -- sample / clip / contains -----------------------------------------------------

@PROPS
@given(dom=domains, seed=st.integers(0, 2**32))
def test_sample_and_resample_are_inside_and_typed(dom, seed):
    rng = random.Random(seed)
    for v in (dom.sample(rng), dom.resample(rng)):
        assert dom.contains(v) and same_type(dom, v)


def test_sample_is_reproducible_from_the_seed():
    a = [space3().sample(random.Random(7)) for _ in range(2)]
    assert a[0] == a[1]
    assert a[0] != space3().sample(random.Random(8))


def test_int_sample_covers_every_value_linear_and_log():
    rng = random.Random(0)
    assert {Int(3, 7).sample(rng) for _ in range(500)} == {3, 4, 5, 6, 7}
    assert {Int(1, 4, log=True).sample(rng) for _ in range(500)} == {1, 2, 3, 4}


def test_log_float_sample_is_log_uniform():
    dom, rng = Float(1e-4, 1.0, log=True), random.Random(0)
    xs = [dom.sample(rng) for _ in range(4000)]
    below = sum(x < 1e-2 for x in xs)  # half of the log range, 2,000 expected
    assert abs(below - 2000) < 4 * math.sqrt(4000 * 0.25)


def test_clip_forces_values_into_bounds_with_the_declared_type():
    assert Float(0.0, 1.0).clip(-3) == 0.0 and type(Float(0.0, 1.0).clip(-3)) is float
    assert Float(0.0, 1.0).clip(7) == 1.0
    assert Float(0.0, 1.0).clip(float("inf")) == 1.0
    assert Float(0.0, 1.0).clip(0.25) == 0.25
    assert Int(0, 10).clip(11.7) == 10 and type(Int(0, 10).clip(3.0)) is int
    assert Int(0, 10).clip(-4) == 0
    assert Int(0, 10).clip(3.6) == 4
    assert Choice([1, 2, 3]).clip(2.0) == 2 and type(Choice([1, 2, 3]).clip(2.0)) is int
    with pytest.raises(SpaceError, match="not one of"):
        Choice(["a", "b"]).clip("c")


def test_clip_refuses_nan_instead_of_passing_it_through():
    with pytest.raises(SpaceError, match="NaN"):
        Float(0.0, 1.0).clip(float("nan"))
    with pytest.raises(SpaceError, match="NaN"):
        Int(0, 10).clip(float("nan"))


def test_int_clip_is_exact_for_big_ints():
    assert Int(0, 10**18).clip(10**18 - 1) == 10**18 - 1


def test_contains_checks_type_and_bounds():
    assert Float(0.0, 1.0).contains(0.5) and not Float(0.0, 1.0).contains(1)
    assert not Float(0.0, 1.0).contains(1.5)
    assert Int(0, 3).contains(3) and not Int(0, 3).contains(3.0) and not Int(0, 3).contains(True)
    assert Choice([1, "a"]).contains("a") and not Choice([1, "a"]).contains("b")
    assert not Choice([1, 2]).contains(True)  # a bool is not the int 1


# -- perturb ----------------------------------------------------------------------

@PROPS
@given(data=st.data(), dom=domains, factor=factors, seed=st.integers(0, 2**32))
def test_perturb_stays_inside_keeps_type_and_survives_json(data, dom, factor, seed):
    value = value_in(data.draw, dom)
    new = dom.perturb(value, factor, random.Random(seed))
    assert dom.contains(new), (dom, value, factor, new)
    assert same_type(dom, new)
    space = Space({"h": dom})
    back = json_round_trip(space, {"h": new})["h"]
    assert back == new and same_type(dom, back)


@pytest.mark.parametrize(
    ("value", "factor", "expected"),
    [(1, 0.8, 0), (1, 1.2, 2), (0, 1.2, 1), (0, 0.8, 0), (10, 1.2, 10), (10, 0.8, 8),
     (5, 0.8, 4), (5, 1.2, 6), (2, 0.5, 1), (9, 1.2, 10), (4, 1.0, 4)],
)
def test_int_perturb_examples_no_ratchet(value, factor, expected):
    assert Int(0, 10).perturb(value, factor, random.Random(0)) == expected


def test_int_perturb_does_not_ratchet_to_the_lower_bound():
    dom, rng, x = Int(0, 10), random.Random(0), 1
    walk = []
    for _ in range(400):  # a random walk must reach both ends, not stick at 0
        x = dom.perturb(x, rng.choice((0.8, 1.2)), rng)
        walk.append(x)
    assert {0, 1, 2, 3, 4, 5, 10} <= set(walk)
    assert walk.count(0) < len(walk) // 3


@PROPS
@given(data=st.data(), dom=ints_dom(), up=st.floats(1.0, 1e6, exclude_min=True),
       down=st.floats(1e-6, 1.0, exclude_max=True))
def test_int_moves_both_ways_from_any_inner_value(data, dom, up, down):
    rng = random.Random(0)
    x = data.draw(st.integers(dom.low, dom.high))
    if x < dom.high:
        assert dom.perturb(x, up, rng) > x
    if x > dom.low:
        assert dom.perturb(x, down, rng) < x
    # moves by at least one unit: from the bound it still leaves the bound
    assert dom.perturb(dom.low, up, rng) >= dom.low + 1
    assert dom.perturb(dom.high, down, rng) <= dom.high - 1


def test_int_perturb_survives_huge_factors():
    rng = random.Random(0)
    assert Int(0, 10).perturb(10, 1e308, rng) == 10
    assert Int(0, 10).perturb(5, 1e308, rng) == 10
    assert Int(1, 10, log=True).perturb(5, 1e308, rng) == 10
    assert Int(0, 10).perturb(5, 1e-308, rng) == 0


def test_log_int_perturbs_multiplicatively():
    dom, rng = Int(1, 10**6, log=True), random.Random(0)
    assert dom.perturb(1000, 1.2, rng) == 1200
    assert dom.perturb(1000, 0.5, rng) == 500
    assert dom.perturb(1, 1.2, rng) == 2  # at least one unit


def test_linear_float_at_zero_still_moves_both_ways():
    dom, rng = Float(-1.0, 1.0), random.Random(0)
    assert dom.perturb(0.0, 1.2, rng) > 0.0
    assert dom.perturb(0.0, 0.8, rng) < 0.0
    assert Float(0.0, 1.0).perturb(0.0, 1.2, rng) > 0.0
    assert Float(0.0, 1.0).perturb(0.0, 0.8, rng) == 0.0  # clipped at the bound


@PROPS
@given(data=st.data(), low=st.floats(-1e3, 1e3), width=st.floats(1e-2, 1e3),
       up=st.floats(1.05, 10.0), down=st.floats(0.1, 0.95))
def test_linear_float_moves_in_the_factors_direction(data, low, width, up, down):
    dom, rng = Float(low, low + width), random.Random(0)
    x = data.draw(st.floats(dom.low, dom.high))
    assert dom.perturb(x, up, rng) > x or x == dom.high
    assert dom.perturb(x, down, rng) < x or x == dom.low


@PROPS
@given(x=st.floats(1e-3, 1e3), factor=st.floats(0.01, 100.0))
def test_log_float_perturbs_multiplicatively(x, factor):
    dom = Float(1e-6, 1e6, log=True)
    assert dom.perturb(x, factor, random.Random(0)) == pytest.approx(x * factor, rel=1e-12)


def test_log_float_perturb_differs_from_linear_near_zero():
    rng = random.Random(0)
    # multiplicative: 1e-5 * 0.8; linear would take a step of 1% of the range
    assert Float(1e-6, 1.0, log=True).perturb(1e-5, 0.8, rng) == pytest.approx(8e-6)
    assert Float(0.0, 1.0).perturb(1e-5, 0.8, rng) == 0.0


@pytest.mark.parametrize(
    ("value", "factor", "expected"),
    [("a", 1.2, "b"), ("b", 1.2, "c"), ("c", 1.2, "d"), ("d", 1.2, "c"),
     ("d", 0.8, "c"), ("b", 0.8, "a"), ("a", 0.8, "b")],
)
def test_ordered_choice_moves_to_a_neighbour(value, factor, expected):
    dom = Choice(["a", "b", "c", "d"], ordered=True)
    assert dom.perturb(value, factor, random.Random(0)) == expected


@PROPS
@given(data=st.data(), dom=choices_dom(), factor=factors)
def test_ordered_choice_perturb_is_always_an_adjacent_value(data, dom, factor):
    if len(dom.values) < 2 or factor == 1.0:  # a neutral factor keeps the value
        return
    ordered = Choice(dom.values, ordered=True)
    i = data.draw(st.integers(0, len(dom.values) - 1))
    new = ordered.perturb(dom.values[i], factor, random.Random(0))
    j = next(k for k, v in enumerate(dom.values) if type(v) is type(new) and v == new)
    assert abs(i - j) == 1


def test_neutral_factor_keeps_every_domain_unchanged():
    rng = random.Random(0)
    assert Choice(["a", "b", "c"]).perturb("b", 1.0, rng) == "b"
    assert Choice(["a", "b", "c"], ordered=True).perturb("b", 1.0, rng) == "b"
    assert Int(0, 10).perturb(4, 1.0, rng) == 4
    assert Float(0.0, 1.0).perturb(0.25, 1.0, rng) == 0.25


def test_ordered_choice_finds_value_after_json_int_float_mix():
    dom = Choice([1.0, 2.0, 4.0], ordered=True)
    assert dom.perturb(2, 1.2, random.Random(0)) == 4.0  # 2 (int) read back for 2.0


def test_unordered_choice_resamples():
    dom, rng = Choice(["a", "b", "c", "d"]), random.Random(0)
    seen = {dom.perturb("a", 1.2, rng) for _ in range(200)}
    assert seen == {"a", "b", "c", "d"}  # not just the neighbour "b"
    assert Choice(["x"], ordered=True).perturb("x", 1.2, rng) == "x"


# -- JSON types ---------------------------------------------------------------------

@PROPS
@given(data=st.data(), doms=st.lists(domains, min_size=1, max_size=4), seed=st.integers(0, 99))
def test_json_round_trip_keeps_types(data, doms, seed):
    space = Space({f"h{i}": d for i, d in enumerate(doms)})
    hp = space.sample(random.Random(seed))
    back = json_round_trip(space, hp)
    assert back == hp
    for name, dom in space.items():
        assert same_type(dom, back[name])
    assert space.validate(back) == hp


def test_whole_float_stays_float_after_json():
    space = Space({"wd": Float(0.0, 2.0), "n": Int(0, 9)})
    back = json_round_trip(space, {"wd": 1.0, "n": 3})
    assert type(back["wd"]) is float and type(back["n"]) is int
    # even if the JSON writer wrote 1 for 1.0 (some do), coerce restores the float
    assert type(space.coerce({"wd": 1, "n": 3.0})["wd"]) is float
    assert type(space.coerce({"wd": 1, "n": 3.0})["n"]) is int


def test_choice_keeps_int_float_bool_distinct_through_json():
    space = Space({"c": Choice([1, 1.0, True, None, "1"])})
    for v in (1, 1.0, True, None, "1"):
        back = json_round_trip(space, {"c": v})["c"]
        assert back == v and type(back) is type(v)


def test_space_to_dict_from_dict_round_trip():
    space = Space({"lr": Float(1e-4, 1e-1, log=True), "m": Float(0.0, 0.99),
                   "bs": Int(16, 256, log=True), "k": Int(-3, 3),
                   "act": Choice(["relu", "tanh"]), "w": Choice([1, 2.5, None], ordered=True)})
    data = json.loads(json.dumps(space.to_dict()))
    back = Space.from_dict(data)
    assert back.to_dict() == space.to_dict()
    assert list(back) == list(space)
    assert repr(back) == repr(space)
    assert back.sample(random.Random(3)) == space.sample(random.Random(3))
    assert back["w"].ordered and not back["act"].ordered and back["bs"].log
    assert type(back["bs"].low) is int and type(back["m"].low) is float


def test_space_mapping_and_copy():
    space = space3()
    assert len(space) == 3 and set(space) == {"lr", "layers", "act"}
    assert Space(space).to_dict() == space.to_dict()
    assert isinstance(space["layers"], Int)
    with pytest.raises(KeyError):
        space["nope"]
