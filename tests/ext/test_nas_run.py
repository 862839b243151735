"""PBT-NAS wired into the engine: genes, Mixing/Mutation decisions, mixed children."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ARCH, NAS_SPACE, TinyNAS
from scipy import stats

import torchpbt as pbt
from torchpbt.algorithm.scheduler import AsyncScheduler, PBTConfig, Report, SyncScheduler
from torchpbt.algorithm.space import Space
from torchpbt.nas import GenomeError, Mixing, Mutation

SPACE = Space(NAS_SPACE)
GENES = ["c0", "c1"]


def _trained(genome: dict, steps: int = 20, seed: int = 0) -> TinyNAS:
    torch.manual_seed(seed)
    m = TinyNAS()
    m.setup({"lr": 0.1, "momentum": 0.9, **genome})
    m.apply_hparams({"lr": 0.1, "momentum": 0.9, **genome})
    m.train(steps)
    return m


def test_explore_never_moves_genes_and_exploit_takes_the_donors_architecture():
    cfg = PBTConfig(population=8, ready_every=5, steps=200)
    s = AsyncScheduler(SPACE, cfg, pbt.Truncation(0.25), pbt.Perturb(resample_probability=1.0),
                       seed=3)
    rng = random.Random(0)
    queue = {d.member_id: d for d in s.start()}
    exploits = 0
    while queue:  # serial order: the least-advanced interval first
        task = queue.pop(min(queue, key=lambda i: (queue[i].start_step, i)))
        end = task.start_step + task.train_steps
        before = {i: dict(m.hparams) for i, m in s.members.items()}
        for d in s.report(Report(task.member_id, end, rng.random(), f"k{task.member_id}-{end}")):
            if d.train_steps:
                queue[d.member_id] = d
            if d.action == "exploit" and d.train_steps:
                exploits += 1
                donor = before[d.donor_id]
                assert {g: d.hparams[g] for g in GENES} == {g: donor[g] for g in GENES}
                assert set(d.operations) == {"lr", "momentum"}  # genes are not explored
                assert d.mix is None
    assert exploits > 20


def test_mixing_takes_each_gene_from_the_donor_with_probability_p():
    mixing = Mixing(p_donor=0.25)
    rng = random.Random(1)
    base, donor = {"c0": "lin", "c1": "lin"}, {"c0": "deep", "c1": "skip"}
    donor_genes = trials = 0
    for _ in range(2000):
        genome, origin = mixing.child(SPACE, base, donor, rng)
        for g in GENES:
            trials += 1
            donor_genes += origin[g] == "donor"
            assert genome[g] == (donor[g] if origin[g] == "donor" else base[g])
    assert stats.binomtest(donor_genes, trials, 0.25).pvalue > 1e-3
    assert abs(donor_genes / trials - 0.25) < 0.03


def test_mutation_changes_exactly_one_gene_to_a_fresh_layer():
    rng = random.Random(2)
    base = {"c0": "lin", "c1": "deep"}
    for _ in range(200):
        genome, origin = Mutation().child(SPACE, base, None, rng)
        changed = [g for g in GENES if genome[g] != base[g]]
        assert len(changed) == 1 and origin[changed[0]] == "fresh"
        assert [g for g in GENES if origin[g] == "fresh"] == changed


def test_mixing_decisions_use_two_top_parents_with_the_fitter_as_base():
    cfg = PBTConfig(population=8, ready_every=5, steps=100)
    s = SyncScheduler(SPACE, cfg, Mixing(), None, seed=5)  # every generation ranks all 8
    scores = {m: m / 10 for m in range(8)}  # member 7 best, 0 worst
    mixes = []
    for step in (5, 10, 15):
        for mid in range(8):
            for d in s.report(Report(mid, step, scores[mid], f"k{mid}-{step}")):
                if d.action == "exploit":
                    mixes.append(d)
    assert mixes
    for d in mixes:
        assert d.member_id in (0, 1)  # the bottom 25%
        assert d.mix["kind"] == "mix" and {d.donor_id, d.mix["donor_id"]} <= {6, 7}
        assert scores[d.donor_id] >= scores[d.mix["donor_id"]]  # the base is the fitter
        assert d.mix["lam"] == 0.4 and d.mix["gamma"] == 0.1


def test_mixed_child_keeps_base_layers_exactly_and_shrink_perturbs_donor_layers():
    base = _trained({"c0": "lin", "c1": "deep"}, seed=1)
    donor = _trained({"c0": "deep", "c1": "skip"}, seed=2)
    b_state, d_state = base.state_dict(), donor.state_dict()
    origin = {"c0": "donor", "c1": "base"}
    torch.manual_seed(7)
    child = TinyNAS()
    child.setup({"lr": 0.1, "momentum": 0.9, "c0": "deep", "c1": "deep"})
    fresh = {k: v.clone() for k, v in child.model.state_dict().items()}
    child.mix_from(b_state, d_state, origin, 0.4, 0.1)
    got = child.model.state_dict()
    for key, value in got.items():
        if key.startswith("c0."):
            assert torch.equal(value, 0.4 * d_state["model"][key] + 0.1 * fresh[key]), key
        else:  # stem, head and the base's cell: bit-identical copies
            assert torch.equal(value, b_state["model"][key]), key
    # optimizer state: the base's momentum only for layers that really are the base's
    names = child._param_names()
    state = child.optimizer.state_dict()["state"]
    base_names = b_state["param_names"]
    for i, name in enumerate(names):
        if name.startswith("c0."):
            assert i not in state, f"{name} came from the donor: its momentum must be dropped"
        else:
            want = b_state["optimizer"]["state"][base_names.index(name)]["momentum_buffer"]
            assert torch.equal(state[i]["momentum_buffer"], want)
    child.train(5)  # a mixed child trains
    assert child.evaluate() > 0


def test_loading_a_checkpoint_into_another_architecture_is_refused():
    a = _trained({"c0": "lin", "c1": "lin"})
    b = TinyNAS()
    b.setup({"lr": 0.1, "momentum": 0.9, "c0": "deep", "c1": "lin"})
    with pytest.raises(GenomeError, match="loaded into.*genes must match"):
        b.load_state_dict(a.state_dict())


@pytest.mark.parametrize("exploit", [Mixing(), Mutation(), pbt.Truncation(0.25)],
                         ids=["mixing", "mutation", "truncation-copy"])
def test_population_of_different_architectures_runs_and_checkpoints_restore(tmp_path, exploit):
    r = pbt.run(TinyNAS, NAS_SPACE, population=8, ready_every=5, steps=40, backend="serial",
                exploit=exploit, seed=4, progress=False, run_dir=tmp_path / "r")
    assert all(m["status"] == "done" for m in r.members)
    assert not [i for i in r.intervals if i["error"]]
    starts = {tuple(e["new_hparams"][g] for g in GENES) for e in r.events if e["kind"] == "start"}
    assert len(starts) > 1, "members start with different architectures"
    assert r.exploits
    # the genome of every member at every interval is recorded, and follows the decisions
    for e in r.exploits:
        # the copy goes on from the donor's checkpoint, at the donor's age
        nxt = [i for i in r.intervals if i["member_id"] == e["member_id"]
               and i["start_step"] == e["donor_step"]
               and i["start_checkpoint"] == e["detail"]["checkpoint"]]
        genome = {g: e["new_hparams"][g] for g in GENES}
        assert any({g: i["hparams"][g] for g in GENES} == genome for i in nxt)
        mix = e["detail"].get("mix")
        if isinstance(exploit, Mixing) and mix and mix["kind"] == "mix":
            assert set(mix["origin"]) == set(GENES) and mix["donor_checkpoint"]
    # the best member's checkpoint restores into a network built from its genome
    best = r.best_member
    m = TinyNAS()
    m.setup(best["hparams"])
    m.load_state_dict(pbt.CheckpointDir(tmp_path / "r" / "checkpoints").load(best["checkpoint"]))
    assert m.evaluate() == pytest.approx(best["score"])
    assert {g: s["hparams"][g] for s in r.schedule()[-1:] for g in GENES} == \
        ARCH.genome_of(best["hparams"])


CRASH = """
import sys
sys.path[:0] = [{tests!r}, {tests!r} + "/.."]
import torchpbt as pbt
from helpers import NAS_SPACE, TinyNAS
from torchpbt.nas import Mixing
pbt.run(TinyNAS, NAS_SPACE, population=8, ready_every=5, steps=30, backend="serial",
        exploit=Mixing(), seed=9, progress=False, run_dir={run_dir!r})
"""


def test_nas_run_resumes_identically_after_a_crash(tmp_path):
    ref = pbt.run(TinyNAS, NAS_SPACE, population=8, ready_every=5, steps=30, backend="serial",
                  exploit=Mixing(), seed=9, progress=False, run_dir=tmp_path / "ref")
    assert any(e["detail"].get("mix", {}).get("kind") == "mix" for e in ref.exploits)
    code = CRASH.format(tests=str(Path(__file__).parent), run_dir=str(tmp_path / "run"))
    env = {**os.environ, "TORCHPBT_CRASH_AT": "after_commit:30"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    resumed = pbt.resume(tmp_path / "run", progress=False)

    def log(r):
        return json.dumps([[e["kind"], e["member_id"], e["step"], e["new_hparams"], e["detail"]]
                           for e in r.events if e["kind"] != "resume"]) + json.dumps(
            [[i["member_id"], i["end_step"], i["score"], i["end_checkpoint"]]
             for i in r.intervals])

    assert log(resumed) == log(ref)


def test_an_async_mix_waits_for_a_lagging_base_and_keeps_its_plan_across_a_resume():
    """A plan whose base is still training towards the receiver's step waits, as a plain
    copy does, instead of moving the receiver back to older weights; then mixes."""
    cfg = PBTConfig(population=8, ready_every=5, steps=40)

    def make():
        return AsyncScheduler(SPACE, cfg, Mixing(), None, seed=3)

    s = make()
    s.start()
    scores = {m: 0.1 * m for m in range(1, 8)} | {0: 0.65}  # 7 and 6 the top two
    for step in (5, 10):  # 7 and 6 are then training 10 -> 15
        for mid in range(8):
            s.report(Report(mid, step, scores[mid], f"k{mid}-{step}"))
    assert s.report(Report(0, 15, 0.0, "k0-15")) == []  # the worst: it waits for a parent
    waiting = s.members[0]
    assert waiting.awaiting in (6, 7) and waiting.await_plan.kind == "mix"
    state = json.loads(json.dumps(s.state_dict()))
    for t in (s, make()):
        t.load_state_dict(state)
        base = t.members[0].awaiting
        out = t.report(Report(base, 15, 0.95, f"k{base}-15"))
        mix = next(d for d in out if d.member_id == 0)
        assert (mix.action, mix.donor_id, mix.start_step, mix.checkpoint) == (
            "exploit", base, 15, f"k{base}-15")
        assert mix.mix["kind"] == "mix" and mix.mix["donor_id"] in (6, 7)
        assert t.members[0].await_plan is None
