"""PB2: the time-varying GP by hand, UCB on a known optimum, bounds, determinism, the
scheduler's observations, specs, and whole runs (end to end, SIGKILL + resume)."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SPACE, TinyNet
from hypothesis import given, settings
from hypothesis import strategies as st

import torchpbt as pbt
from torchpbt.algorithm.explore import ExploreContext, Observation, apply_explore, check_explore
from torchpbt.algorithm.pb2 import (
    GP,
    PB2,
    KernelParams,
    beta,
    decode,
    encode,
    fit_gp,
    neg_log_likelihood,
    standardize,
    tv_kernel,
)
from torchpbt.algorithm.scheduler import AsyncScheduler, PBTConfig, Report, SyncScheduler
from torchpbt.algorithm.space import Choice, Float, Int, Space
from torchpbt.engine.specs import from_spec, to_spec

TESTS = Path(__file__).parent
EXAMPLES = TESTS.parents[1] / "examples"
H = Space({"h": Float(0.0, 1.0)})


def point(x: float, t: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    return np.array([[x]]), np.array([t])


# -- the GP, computed by hand --------------------------------------------------------------

def test_one_point_posterior_by_hand():
    p = KernelParams(lengthscale=0.2, variance=1.0, noise=0.25, epsilon=0.19)
    gp = GP(*point(0.5), np.array([1.0]), p)
    # at the data point: k* = 1, K + noise = 1.25
    mean, var = gp.predict(*point(0.5))
    assert mean[0] == pytest.approx(1 / 1.25) and var[0] == pytest.approx(1 - 1 / 1.25)
    # two intervals later: k* = (1 - 0.19)^(2/2) = 0.81, the old point counts less
    mean, var = gp.predict(*point(0.5, 2.0))
    assert mean[0] == pytest.approx(0.81 / 1.25) and var[0] == pytest.approx(1 - 0.81**2 / 1.25)
    # one length scale away: k* = exp(-1/2)
    k = math.exp(-0.5)
    mean, var = gp.predict(*point(0.7))
    assert mean[0] == pytest.approx(k / 1.25) and var[0] == pytest.approx(1 - k**2 / 1.25)


def test_two_points_posterior_by_hand():
    p = KernelParams(lengthscale=1.0, variance=2.0, noise=0.5, epsilon=0.0)
    x, t = np.array([[0.0], [1.0]]), np.zeros(2)
    y = np.array([1.0, -1.0])
    gp = GP(x, t, y, p)
    c = 2.0 * math.exp(-0.5)  # covariance of the two points
    K = np.array([[2.5, c], [c, 2.5]])
    ks = np.array([2.0 * math.exp(-0.125), 2.0 * math.exp(-0.125)])  # both 0.5 away
    mean, var = gp.predict(np.array([[0.5]]), np.zeros(1))
    assert mean[0] == pytest.approx(0.0, abs=1e-12)  # symmetric data, midpoint
    assert var[0] == pytest.approx(2.0 - ks @ np.linalg.solve(K, ks))


def test_pending_points_shrink_the_variance_not_the_mean():
    p = KernelParams(0.2, 1.0, 0.1, 0.0)
    gp = GP(*point(0.2), np.array([1.0]), p)
    busy = gp.with_pending(np.array([[0.8]]), np.array([0.0]))
    m0, v0 = gp.predict(*point(0.8))
    _, v1 = busy.predict(*point(0.8))
    assert v1[0] < 0.2 * v0[0]  # someone is already trying 0.8
    _, far = busy.predict(*point(0.2))
    assert far[0] == pytest.approx(gp.predict(*point(0.2))[1][0], rel=1e-3)
    assert gp.with_pending(np.zeros((0, 1)), np.zeros(0)) is gp and m0[0] > 0


def test_kernel_is_se_times_time_decay():
    p = KernelParams(0.5, 3.0, 0.1, 0.36)
    k = tv_kernel(np.array([[0.1, 0.2]]), np.array([1.0]), np.array([[0.4, 0.6]]),
                  np.array([5.0]), p)
    d2 = 0.3**2 + 0.4**2
    assert k[0, 0] == pytest.approx(3.0 * math.exp(-d2 / (2 * 0.25)) * 0.64**2)


def test_likelihood_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    x, t, y = rng.uniform(size=(12, 2)), np.arange(12) / 3, rng.normal(size=12)
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    dt = np.abs(t[:, None] - t[None])
    theta = np.array([math.log(0.4), math.log(1.3), math.log(0.2), 0.1])
    _, grad = neg_log_likelihood(theta, d2, dt, y)
    for i in range(4):
        e = np.zeros(4)
        e[i] = 1e-6
        fd = (neg_log_likelihood(theta + e, d2, dt, y)[0]
              - neg_log_likelihood(theta - e, d2, dt, y)[0]) / 2e-6
        assert grad[i] == pytest.approx(fd, rel=1e-4, abs=1e-6)


def test_fit_finds_forgetting_when_the_function_flips_over_time():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(60, 1))
    t = np.repeat(np.arange(12.0), 5)
    steady = np.sin(6 * x[:, 0])
    flipping = np.where(t % 4 < 2, 1.0, -1.0) * steady  # the best h changes with time
    assert fit_gp(x, t, standardize(flipping)).params.epsilon > \
        fit_gp(x, t, standardize(steady)).params.epsilon + 0.05


def test_beta_grows_like_log_n():
    assert beta(1) == pytest.approx(0.2)  # log(0.4) < 0 is cut at 0
    assert beta(100) == pytest.approx(0.2 + math.log(40))
    assert beta(1000) - beta(100) == pytest.approx(math.log(10))


def test_standardize_clips_outliers_and_survives_a_constant_series():
    z = standardize(np.array([0.0] * 20 + [1000.0]))
    assert z.max() == 3.0 and abs(z[:20].mean()) < 0.3
    assert not standardize(np.full(5, 2.0)).any()


# -- hparams <-> unit cube -----------------------------------------------------------------

def test_encode_uses_log_space_and_decode_rounds_ints():
    sp = Space({"lr": Float(1e-4, 1e-0, log=True), "m": Float(0.0, 0.5),
                "n": Int(1, 9), "b": Int(16, 256, log=True)})
    u = encode(sp, {"lr": 1e-2, "m": 0.25, "n": 5, "b": 64})
    assert u == pytest.approx([0.5, 0.5, 0.5, 0.5])
    back = decode(sp, np.array([0.5, 0.5, 0.56, 0.5]))
    assert back["lr"] == pytest.approx(1e-2) and back["n"] == 5 and type(back["n"]) is int
    assert back["b"] == 64 and type(back["m"]) is float


def test_an_ordered_choice_is_modelled_by_its_index():
    sp = Space({"unroll": Choice([8, 16, 32], ordered=True), "one": Choice(["a"], ordered=True)})
    assert encode(sp, {"unroll": 16, "one": "a"}) == pytest.approx([0.5, 0.0])
    assert encode(sp, {"unroll": 32, "one": "a"}) == pytest.approx([1.0, 0.0])
    assert [decode(sp, np.array([u, 0.7]))["unroll"] for u in (0.0, 0.24, 0.26, 0.74, 0.76, 1.0)] \
        == [8, 8, 16, 16, 32, 32]
    assert decode(sp, np.array([0.0, 1.0]))["one"] == "a"


# -- UCB on a function with a known optimum ------------------------------------------------

def _bandit(seed: int, method: str, rounds: int = 20) -> list[float]:
    """Improvement = -(h - 0.3)^2 + noise; each round picks h, then observes it."""
    rng, obs, picks = random.Random(seed), [], []
    for i in range(rounds):
        if method == "pb2":
            ctx = ExploreContext(i + 1.0, list(obs), ())
            h = PB2(min_points=3)({"h": 0.5}, H, rng, context=ctx)[0]["h"]
        else:
            h = rng.random()
        obs.append(Observation(i + 1.0, {"h": h}, -(h - 0.3) ** 2 + rng.gauss(0, 0.01)))
        picks.append(h)
    return picks


def test_ucb_finds_the_known_optimum_better_than_random():
    pb2 = [np.mean([abs(h - 0.3) for h in _bandit(s, "pb2")[-8:]]) for s in range(5)]
    rand = [np.mean([abs(h - 0.3) for h in _bandit(s, "random")[-8:]]) for s in range(5)]
    assert max(pb2) < 0.1 and np.mean(pb2) < np.mean(rand) / 4


def test_ucb_settles_on_the_best_value_of_an_ordered_choice():
    sp = Space({"b": Choice([1, 2, 4, 8, 16, 32, 64], ordered=True)})
    rng, obs, picks = random.Random(0), [], []
    for i in range(20):
        b = PB2(min_points=3)({"b": 1}, sp, rng, context=ExploreContext(i + 1.0, list(obs), ()))[0]["b"]
        obs.append(Observation(i + 1.0, {"b": b}, -(math.log2(b) - 3) ** 2 + rng.gauss(0, 0.05)))
        picks.append(b)
    assert picks[-6:].count(8) >= 4, picks


def test_pending_members_push_the_pick_elsewhere():
    # data only on [0, 0.4]: the UCB peak is in the unexplored far end
    obs = [Observation(1.0, {"h": float(h)}, float(np.sin(20 * h)))
           for h in np.linspace(0, 0.4, 12)]
    picks: list[float] = []
    for _ in range(3):  # each pick goes on training while the next member is exploited
        busy = [(2.0, {"h": h}) for h in picks]
        new, _ = PB2()({"h": 0.1}, H, random.Random(0), context=ExploreContext(2.0, obs, busy))
        picks.append(new["h"])
    assert picks[0] > 0.8
    assert min(abs(a - b) for i, a in enumerate(picks) for b in picks[:i]) > 0.15


def test_fallback_until_enough_points_and_without_context():
    obs = [Observation(1.0, {"h": 0.5}, 0.1)] * 3
    new, ops = PB2(min_points=4)({"h": 0.5}, H, random.Random(0),
                                 context=ExploreContext(2.0, obs, ()))
    assert ops["h"].startswith("fallback ") and 0 <= new["h"] <= 1
    _, ops = PB2(fallback=pbt.Resample())({"h": 0.5}, H, random.Random(0))
    assert ops == {"h": "fallback resample"}
    new, ops = PB2(fallback=halve)({"h": 0.5}, H, random.Random(0))  # a plain dict is fine
    assert new == {"h": 0.25} and ops == {"h": "fallback custom"}
    failed_only = [Observation(1.0, {"h": 0.5}, None)] * 10
    _, ops = PB2()({"h": 0.5}, H, random.Random(0), context=ExploreContext(2.0, failed_only))
    assert ops["h"].startswith("fallback")


def halve(hparams, space, rng):
    return {k: v / 2 for k, v in hparams.items()}


def test_failed_intervals_count_as_the_worst():
    obs = [Observation(1.0, {"h": h}, 0.0) for h in (0.1, 0.2, 0.3, 0.4)]
    obs += [Observation(1.0, {"h": h}, None) for h in (0.7, 0.8, 0.9, 1.0)]
    new, _ = PB2()({"h": 0.5}, H, random.Random(0), context=ExploreContext(2.0, obs, ()))
    assert new["h"] < 0.6


MIXED = Space({"lr": Float(1e-5, 1.0, log=True), "m": Float(-1.0, 1.0),
               "n": Int(1, 4), "b": Int(8, 512, log=True),
               "u": Choice([8, 16, 32], ordered=True)})


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 12), scale=st.floats(1e-9, 1e9),
       pending=st.integers(0, 3))
def test_pb2_always_returns_typed_values_within_bounds(seed, n, scale, pending):
    rng = random.Random(seed)
    obs = [Observation(float(rng.randrange(5)), MIXED.sample(rng),
                       None if rng.random() < 0.2 else rng.gauss(0, scale)) for _ in range(n)]
    busy = [(5.0, MIXED.sample(rng)) for _ in range(pending)]
    start = MIXED.sample(rng)
    new, ops = apply_explore(PB2(min_points=2), start, MIXED, rng,
                             ExploreContext(5.0, obs, busy))
    assert set(new) == set(ops) == set(MIXED)
    for name, dom in MIXED.items():
        assert dom.contains(new[name]) and type(new[name]) is type(start[name])


def test_same_inputs_same_seed_same_pick():
    rng = random.Random(3)
    obs = [Observation(float(i // 4), MIXED.sample(rng), rng.gauss(0, 1)) for i in range(20)]
    ctx = ExploreContext(6.0, obs, [(6.0, MIXED.sample(rng))])
    picks = [PB2()(MIXED.sample(random.Random(0)), MIXED, random.Random(42), context=ctx)
             for _ in range(2)]
    assert picks[0] == picks[1] and set(picks[0][1].values()) == {"pb2"}


# -- options, spaces, specs ----------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"min_points": 0}, r"PB2\(min_points=0\): give an int >= 1"),
    ({"max_points": 1}, r"PB2\(max_points=1\): give an int >= 2"),
    ({"min_points": 5, "max_points": 4}, r"max_points must be >= min_points"),
    ({"fallback": "perturb"}, r"explore='perturb' is not a strategy"),
    ({"fallback": PB2()}, r"fallback=PB2.*give e\.g\. torchpbt\.Perturb"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PB2(**kwargs)


def test_unordered_choice_hparams_are_refused_by_name():
    sp = Space({"lr": Float(0.01, 0.1), "opt": Choice(["sgd", "adam"]),
                "c0": pbt.nas.Gene(["conv", "skip"]), "u": Choice([1, 2], ordered=True)})
    with pytest.raises(ValueError, match=r"ordered hparams only; \['opt', 'c0'\].*Perturb.*"
                                         r"ordered=True"):
        check_explore(PB2(), sp)
    check_explore(PB2(), Space({"lr": Float(0.01, 0.1), "n": Int(1, 3),
                                "u": Choice([1, 2], ordered=True)}))


def test_spec_round_trip():
    pb2 = PB2(min_points=3, max_points=50, fallback=pbt.Perturb((0.5, 2.0), 0.1))
    spec = json.loads(json.dumps(to_spec(pb2)))
    again = from_spec(spec, "explore")
    assert type(again) is PB2 and repr(again) == repr(pb2)
    assert to_spec(again) == spec


# -- the scheduler's observations ----------------------------------------------------------

class Spy:
    """A history-based explore that records its context and keeps the hparams."""

    history_size = 5

    def __init__(self) -> None:
        self.contexts: list[ExploreContext] = []

    def __call__(self, hparams, space, rng, context=None):
        self.contexts.append(context)
        return dict(hparams), {n: "spy" for n in hparams}


QS = Space({"lr": Float(0.01, 1.0)})


def _sched(cls=AsyncScheduler, explore=None, population=2, steps=40):
    return cls(QS, PBTConfig(population, 10, steps), pbt.Truncation(0.5), explore, seed=0,
               initial_hparams=[{"lr": 0.1 * (i + 1)} for i in range(population)])


def _rep(mid, step, score, failed=False):
    return Report(mid, step, score, None if failed else f"m{mid}@{step}", failed)


def test_observations_measure_improvement_from_the_weights_an_interval_started_with():
    spy = Spy()
    s = _sched(explore=spy)
    s.report(_rep(0, 10, 1.0))  # first intervals: nothing to compare with
    s.report(_rep(1, 10, 3.0))
    assert s.observations == []
    s.report(_rep(1, 20, 3.0))  # member 1 runs ahead: +0.0
    assert s.observations == [Observation(2.0, {"lr": pytest.approx(0.2)}, 0.0)]
    d = s.report(_rep(0, 20, 2.0))[0]  # +1.0, then copies member 1 (score 3.0)
    assert d.action == "exploit" and d.donor_id == 1 and d.start_step == 20
    assert s.observations[-1] == Observation(2.0, {"lr": 0.1}, 1.0)
    ctx = spy.contexts[-1]
    assert ctx.now == 3.0 and ctx.pending == [(3.0, {"lr": pytest.approx(0.2)})]
    s.report(_rep(0, 30, 3.5))  # measured against the donor's 3.0, not its own 2.0
    assert s.observations[-1] == Observation(3.0, {"lr": pytest.approx(0.2)}, 0.5)
    d = s.report(_rep(1, 30, 0.0, failed=True))[0]
    assert s.observations[-1] == Observation(3.0, {"lr": pytest.approx(0.2)}, None)
    # a failed member copies the best: it starts again from the donor's weights
    assert d.reason == "failed" and s.members[1].baseline == 3.5


def test_observations_are_bounded_and_survive_state_dict_json():
    s = _sched(explore=Spy(), steps=100)
    for step in range(10, 101, 10):
        s.report(_rep(0, step, float(step)))
        s.report(_rep(1, step, float(step)))
    assert len(s.observations) == Spy.history_size
    state = json.loads(json.dumps(s.state_dict(), allow_nan=False))
    again = _sched(explore=Spy(), steps=100)
    again.load_state_dict(state)
    assert again.observations == s.observations
    assert [m.baseline for m in again.members.values()] == \
        [m.baseline for m in s.members.values()]


def test_plain_explore_keeps_no_observations_and_gets_no_context():
    s = _sched(explore=pbt.Perturb())
    for step in (10, 20, 30):
        s.report(_rep(0, step, float(step)))
        s.report(_rep(1, step, -float(step)))
    assert s.history_size == 0 and s.observations == [] and s.state_dict()["observations"] == []


def test_sync_batch_sees_the_whole_generation():
    spy = Spy()
    s = _sched(SyncScheduler, explore=spy, population=4)
    for mid in range(4):
        s.report(_rep(mid, 10, float(mid)))
    first = len(spy.contexts)
    for mid in range(4):
        s.report(_rep(mid, 20, float(mid) + 1))
    assert len(s.observations) == 4 and len(spy.contexts) > first
    assert all(len(c.observations) == 4 for c in spy.contexts[first:])


# -- whole runs ----------------------------------------------------------------------------

def _toy():
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import toy_quadratic

    return toy_quadratic


def test_run_end_to_end_on_the_toy(tmp_path):
    toy = _toy()
    r = pbt.run(toy.Quadratic, toy.SPACE, population=4, ready_every=4, steps=60, sync=True,
                exploit=pbt.Truncation(0.25), explore=PB2(), seed=0, backend="serial",
                run_dir=tmp_path / "run", progress=False)
    exploits = r.exploits
    ucb = [e for e in exploits if set(e["operations"].values()) == {"pb2"}]
    assert ucb and len(ucb) < len(exploits)  # the GP takes over once it has data
    assert all(0.0 <= e["new_hparams"][h] <= 1.0 for e in exploits for h in ("h0", "h1"))
    assert r.best_score > 1.0
    assert r.run["config"]["explore_spec"]["type"] == "torchpbt.algorithm.pb2:PB2"


def test_run_refuses_a_choice_space_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"PB2 models numeric and ordered hparams only; \['opt'\]"):
        pbt.run(TinyNet, {**SPACE, "opt": pbt.Choice(["sgd", "adam"])}, explore=PB2(),
                run_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


OPTS = dict(population=4, ready_every=5, steps=30, backend="serial", seed=5, progress=False)
SCRIPT = """
import sys
sys.path[:0] = [{tests!r}, {tests!r} + "/.."]
import torchpbt as pbt
from helpers import SPACE, TinyNet
pbt.run(TinyNet, SPACE, exploit=pbt.Truncation(0.25), explore=pbt.PB2(min_points=2),
        run_dir={run_dir!r}, **{opts!r})
"""


def _log(result: pbt.Result) -> dict[str, list]:
    ev = ("kind", "member_id", "step", "donor_id", "donor_step", "old_hparams", "new_hparams",
          "operations", "detail")
    iv = ("member_id", "start_step", "end_step", "hparams", "score")
    return {"events": [tuple(e[k] for k in ev) for e in result.events if e["kind"] != "resume"],
            "intervals": [tuple(i[k] for k in iv) for i in result.intervals]}


@pytest.fixture(scope="module")
def pb2_reference(tmp_path_factory):
    return pbt.run(TinyNet, SPACE, exploit=pbt.Truncation(0.25), explore=PB2(min_points=2),
                   run_dir=tmp_path_factory.mktemp("ref") / "run", **OPTS)


def test_two_runs_with_one_seed_are_identical(tmp_path, pb2_reference):
    again = pbt.run(TinyNet, SPACE, exploit=pbt.Truncation(0.25), explore=PB2(min_points=2),
                    run_dir=tmp_path / "run", **OPTS)
    assert _log(again) == _log(pb2_reference)
    assert any(set(e["operations"].values()) == {"pb2"} for e in again.exploits)


@pytest.mark.parametrize("point", ["store_commit:8", "after_commit:12"])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, pb2_reference, point):
    run_dir = tmp_path / "run"
    code = SCRIPT.format(tests=str(TESTS), run_dir=str(run_dir), opts=OPTS)
    env = {**os.environ, "TORCHPBT_CRASH_AT": point}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    crashed = pbt.load(run_dir)
    stored = crashed.run["scheduler_state"]["scheduler"]["observations"]
    last = max(i["end_step"] for i in crashed.intervals)
    resumed = pbt.resume(run_dir, progress=False)
    assert resumed.run["status"] == "done"
    assert _log(resumed) == _log(pb2_reference)
    # the GP decided after the crash from observations made before it: they were restored
    assert stored and any(set(e["operations"].values()) == {"pb2"} and e["step"] > last
                          for e in resumed.exploits)
