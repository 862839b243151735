"""examples/cartpole.py and examples/gan.py: they run as files and through the CLI, their
agents learn, and their scores measure what they claim to."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchpbt as pbt
from torchpbt.backends.worker import seed_everything

pytestmark = pytest.mark.slow  # end to end: processes, files, browsers

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
sys.path.insert(0, str(EXAMPLES))

cartpole = pytest.importorskip("cartpole")  # needs gymnasium (the examples extra)
gan = pytest.importorskip("gan")


@pytest.fixture(autouse=True)
def _restore_threads():
    """The members call torch.set_num_threads(1); later tests get the usual count back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300)


# -- CartPole ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["serial", "vectorized"])
def test_cartpole_example_runs_as_a_file(tmp_path, backend):
    p = _run(str(EXAMPLES / "cartpole.py"), "--population", "3", "--steps", "20",
             "--ready-every", "10", "--backend", backend, "--quiet", "--run-dir",
             str(tmp_path / "cp"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "greedy return" in p.stdout and "5,120 env steps per member" in p.stdout
    r = pbt.load(tmp_path / "cp")
    assert sorted((iv["member_id"], iv["start_step"]) for iv in r.intervals) == [
        (m, s) for m in range(3) for s in (0, 10)]
    assert r.member_steps == 60
    if backend == "vectorized":
        assert {iv["worker"] for iv in r.intervals} == {"vectorized:cpu"}
    scores = [s["score"] for s in r.scores]
    assert scores and all(math.isfinite(s) and 8 <= s <= 500 for s in scores)


def test_the_vectorized_agent_learns_on_both_paths(tmp_path):
    """The same VectorCartPole class on the serial path (one member's envs, torch.optim) and
    vectorized (every member's envs, one batched update): both learn; the vectorized
    score of a checkpoint equals the serial path's greedy_return of the same weights."""
    kw = dict(population=2, steps=30, ready_every=15, seed=0, exploit=None, explore=None,
              progress=False)
    serial = pbt.run(cartpole.VectorCartPole, cartpole.VECTOR_SPACE, backend="serial",
                     run_dir=tmp_path / "s", **kw)
    vec = pbt.run(cartpole.VectorCartPole, cartpole.VECTOR_SPACE, backend="vectorized",
                  run_dir=tmp_path / "v", **kw)
    for r in (serial, vec):
        first = [s["score"] for s in r.scores if s["step"] == 0]
        assert max(s["score"] for s in r.scores if s["step"] == 30) > max(first, default=0)
    member = vec.member()  # the ordinary path, built from the vectorized checkpoint
    assert cartpole.greedy_return(member.model) == pytest.approx(vec.best_score)


def test_cartpole_through_the_cli_counts_env_steps_and_is_deterministic(tmp_path):
    args = ["--population", "2", "--steps", "4", "--ready-every", "2", "--backend", "serial",
            "--quiet", "--seed", "3", "--pb2"]
    q = subprocess.run([sys.executable, "-m", "torchpbt", "run", str(EXAMPLES / "cartpole.py"),
                        "--", *args, "--run-dir", str(tmp_path / "a")], cwd=tmp_path, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert q.returncode == 0, q.stderr
    a = pbt.load(tmp_path / "a")
    b = cartpole.main([*args, "--run-dir", str(tmp_path / "b")])  # again, in this process
    assert [(s["member_id"], s["step"], s["score"]) for s in a.scores] == [
        (s["member_id"], s["step"], s["score"]) for s in b.scores]
    store = pbt.CheckpointDir(a.run_dir / "checkpoints")
    assert a.run["config"]["explore_spec"]["type"] == "torchpbt.algorithm.pb2:PB2"
    for m in a.members:  # the weights' env-step counter: 4 steps of 256 transitions
        assert store.load(m["checkpoint"])["extra"]["env_steps"] == 4 * cartpole.ENV_STEPS_PER_STEP


def test_pb2_tunes_the_cartpole_space_unroll_included(tmp_path):
    # the unroll length is an ordered Choice: PB2 models it by its index
    r = pbt.run(cartpole.CartPoleMember, cartpole.SPACE, population=3, steps=8, ready_every=1,
                explore=pbt.PB2(min_points=2), exploit=pbt.Truncation(0.34), sync=True,
                backend="serial", seed=1, progress=False, run_dir=tmp_path / "r")
    by_gp = [e for e in r.exploits if set(e["operations"].values()) == {"pb2"}]
    assert by_gp and set(by_gp[0]["operations"]) == set(cartpole.SPACE)
    assert all(e["new_hparams"]["unroll"] in (8, 16, 32) for e in by_gp)


def test_a2c_learns_cartpole_on_a_tiny_budget():
    hp = {"lr": 3e-3, "entropy_cost": 1e-3, "horizon": 100.0, "unroll": 8}
    for seed in (0, 2):
        seed_everything(seed)
        m = cartpole.CartPoleMember()
        m.setup(hp)
        m.apply_hparams(hp)
        start, best = m.evaluate(), 0.0
        for _ in range(4):  # 4 × 10 steps = 10,240 env steps
            m.train(10)
            best = max(best, m.evaluate())
        assert start < 100 and best >= 200, (seed, start, best)  # a wrong gradient stays low
        assert m.env_steps == 40 * cartpole.ENV_STEPS_PER_STEP


def test_gae_bootstraps_truncations_not_terminations():
    values = torch.tensor([[1.0, 1.0], [2.0, 2.0], [5.0, 5.0]])  # V(s0), V(s1), V(s2)
    rew = [torch.ones(2), torch.ones(2)]
    f, t = torch.tensor([False, False]), torch.tensor([True, True])
    term = [torch.tensor([True, False]), f]  # env 0 terminates at t=0, env 1 is truncated
    done = [t, f]
    valid = [t, torch.tensor([False, False])]  # t=1 only resets both envs
    adv, ret = cartpole.CartPoleMember.gae(values, rew, term, done, valid, gamma=0.5)
    assert adv[1].tolist() == [0.0, 0.0]
    assert ret[0].tolist() == [1.0, 1.0 + 0.5 * 2.0]  # r; r + γ·V(final obs)


# -- GAN --------------------------------------------------------------------------------------

def test_gan_score_separates_true_collapsed_and_blurred_samples():
    g = torch.Generator().manual_seed(0)
    true = gan.mode_stats(gan.real_samples(4000, g))
    assert true["matched_mass"] > 0.96 and true["modes"] == 8 and true["high_quality"] > 0.98
    one_mode = gan.CENTRES[0] + gan.STD * torch.randn(4000, 2, generator=g)
    collapsed = gan.mode_stats(one_mode)
    assert collapsed["modes"] == 1 and collapsed["matched_mass"] <= 0.125
    blur = gan.mode_stats(2.0 * torch.randn(4000, 2, generator=g))  # right scale, no modes
    assert blur["matched_mass"] < 0.1 and blur["high_quality"] < 0.1
    four = gan.mode_stats(gan.CENTRES[torch.arange(4000) % 4] + gan.STD * torch.randn(4000, 2,
                                                                                     generator=g))
    assert four["modes"] == 4 and 0.45 < four["matched_mass"] <= 0.5


def test_gan_score_credits_every_mode_before_the_samples_are_sharp():
    """Near all 8 modes but blurred (std 4× the true one) against sharp on 3 modes: the
    3-std mass alone prefers the collapsed generator, the member's score the other."""
    g = torch.Generator().manual_seed(1)
    k = torch.arange(4000)
    blurred = gan.CENTRES[k % 8] + 4 * gan.STD * torch.randn(4000, 2, generator=g)
    collapsed = gan.CENTRES[k % 3] + gan.STD * torch.randn(4000, 2, generator=g)
    assert gan.mode_stats(blurred)["matched_mass"] < gan.mode_stats(collapsed)["matched_mass"]
    assert gan.score(blurred) > gan.score(collapsed) + 0.1
    sharp = gan.real_samples(4000, g)  # sharp samples score the same at every radius
    assert gan.score(sharp) == pytest.approx(gan.mode_stats(sharp)["matched_mass"], abs=0.02)


def test_gan_learns_on_a_tiny_budget():
    hp = {"lr_g": 1e-2, "d_ratio": 1.0, "beta1": 0.5}
    seed_everything(0)
    m = gan.GANMember()
    m.setup(hp)
    m.apply_hparams(hp)
    start = m.evaluate()
    m.train(600)
    stats = gan.mode_stats(m.samples())
    assert start < 0.02 and stats["matched_mass"] > 0.2 and stats["modes"] >= 2, (start, stats)


def test_gan_example_runs_through_main_and_the_cli(tmp_path, capsys):
    r = gan.main(["--population", "3", "--steps", "60", "--ready-every", "30", "--backend",
                  "serial", "--quiet", "--run-dir", str(tmp_path / "g")])
    out = capsys.readouterr().out
    assert "mode-matched mass" in out and "/8 modes" in out
    assert len(r.intervals) == 6 and all(0.0 <= s["score"] <= 1.0 for s in r.scores)
    hp = r.best_hparams
    member = gan.GANMember()  # the checkpoint restores both networks and both optimizers
    member.setup(hp)
    member.load_state_dict(pbt.CheckpointDir(r.run_dir / "checkpoints").load(
        r.best_member["checkpoint"]))
    member.apply_hparams(hp)
    assert member.evaluate() == pytest.approx(r.best_score)
    assert member.opt_g.param_groups[0]["lr"] == hp["lr_g"]
    assert member.opt_d.param_groups[0]["lr"] == pytest.approx(hp["lr_g"] * hp["d_ratio"])
    assert member.opt_d.param_groups[0]["betas"] == (hp["beta1"], 0.999)
    q = subprocess.run([sys.executable, "-m", "torchpbt", "run", str(EXAMPLES / "gan.py"),
                        "--", "--population", "2", "--steps", "20", "--ready-every", "10",
                        "--backend", "serial", "--quiet", "--run-dir", str(tmp_path / "c")],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert q.returncode == 0, q.stderr
    assert len(pbt.load(tmp_path / "c").intervals) == 4
