"""Knowledge sharing: exact loss, alpha=0 is plain PBT, only the top k write, cross-process table."""

from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers import SPACE, TinyKS

import torchpbt as pbt
from torchpbt.ext.knowledge.plugin import KnowledgeRun
from torchpbt.ext.knowledge.sharing import KnowledgeTable, distillation_loss


def test_loss_matches_a_hand_computed_value():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    table = torch.tensor([[0.8, 0.2], [0.5, 0.5]])
    has = torch.tensor([True, False])
    alpha, tau = 0.3, 2.0
    # by hand: sample 0 has a table entry, sample 1 does not
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce1 = -math.log(1 / (1 + math.e))
    s0 = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]  # softmax(logits/τ)
    kl0 = 0.8 * math.log(0.8 / s0[0]) + 0.2 * math.log(0.2 / s0[1])
    expected = ((1 - alpha) * ce0 + alpha * tau**2 * kl0 + ce1) / 2
    got = distillation_loss(logits, labels, table, has, alpha, tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_alpha_zero_or_no_entries_is_exactly_cross_entropy():
    logits, labels = torch.randn(8, 3), torch.randint(0, 3, (8,))
    ce = F.cross_entropy(logits, labels)
    table = torch.softmax(torch.randn(8, 3), 1)
    assert torch.equal(distillation_loss(logits, labels, table, torch.ones(8, dtype=torch.bool),
                                         0.0, 2.0), ce)
    assert torch.equal(distillation_loss(logits, labels, table, torch.zeros(8, dtype=torch.bool),
                                         0.7, 2.0), ce)


def _decisions(r):
    ev = [(e["kind"], e["member_id"], e["step"], e["donor_id"], e["new_hparams"])
          for e in r.events if e["kind"] != "knowledge"]
    iv = [(i["member_id"], i["start_step"], i["hparams"], i["score"], i["end_checkpoint"])
          for i in r.intervals]
    return ev, iv


def test_alpha_zero_reproduces_plain_pbt_exactly(tmp_path):
    opts = dict(population=4, ready_every=10, steps=50, backend="serial", seed=5, progress=False)
    plain = pbt.run(TinyKS, SPACE, run_dir=tmp_path / "plain", **opts)
    ks = pbt.run(TinyKS, SPACE, run_dir=tmp_path / "ks", **opts,
                 knowledge_sharing=pbt.KnowledgeSharing(alpha=0.0, top_k=2))
    assert any(e["kind"] == "knowledge" for e in ks.events), "the table must be written"
    assert _decisions(plain) == _decisions(ks)
    on = pbt.run(TinyKS, SPACE, run_dir=tmp_path / "on", **opts,
                 knowledge_sharing=pbt.KnowledgeSharing(alpha=0.5, top_k=2))
    assert _decisions(plain)[1] != _decisions(on)[1], "alpha > 0 must change training"


def test_only_the_top_k_write(tmp_path):
    sharing = KnowledgeRun(pbt.KnowledgeSharing(top_k=2), tmp_path)
    sharing.table.version = 3
    members = {i: SimpleNamespace(member_id=i, history=h)
               for i, h in enumerate([[0.1], [0.9], [], [0.5], [0.2, 0.7]])}
    sched = SimpleNamespace(members=members)
    writers = {i for i in members if sharing.payload(i, sched)["writer"]}
    assert writers == {1, 4}  # latest scores 0.9 and 0.7; member 2 has none
    assert sharing.payload(0, sched)["version"] == 3
    assert pbt.KnowledgeSharing(**sharing.payload(0, sched)["options"]) == sharing.options


def test_run_records_versions_and_only_writers_contribute(tmp_path):
    r = pbt.run(TinyKS, SPACE, population=4, ready_every=10, steps=50, backend="serial",
                seed=1, progress=False, run_dir=tmp_path / "r",
                knowledge_sharing=pbt.KnowledgeSharing(alpha=0.5, top_k=1))
    assert all(i["extra"] and "knowledge_version" in i["extra"] for i in r.intervals)
    writer_ends = {(i["member_id"], i["end_step"]) for i in r.intervals if i["extra"]["writer"]}
    published = [e for e in r.events if e["kind"] == "knowledge"]
    assert published and all((e["member_id"], e["step"]) in writer_ends for e in published)
    assert [e["detail"]["version"] for e in published] == list(range(1, len(published) + 1))
    versions = [i["extra"]["knowledge_version"] for i in r.intervals]
    assert versions[0] == 0 and max(versions) >= 1
    files = sorted(p.name for p in (tmp_path / "r" / "knowledge").glob("table-v*.pt"))
    assert files[-1] == f"table-v{len(published):06d}.pt"


def test_table_is_visible_from_another_process(tmp_path):
    table = KnowledgeTable(tmp_path)
    probs = torch.softmax(torch.randn(5, 3), 1)
    table.merge({"indices": torch.tensor([0, 2, 4, 6, 9]), "probs": probs}, refresh_every=1)
    code = ("import sys, torch; from torchpbt.ext.knowledge.sharing import KnowledgeTable; "
            "p, h = KnowledgeTable.load(sys.argv[1], 1); "
            "print(int(h.sum()), len(h), round(float(p[9].sum()), 4), round(float(p[9][0]), 6))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["5", "10", "1.0", str(round(float(probs[4][0]), 6))]


def test_samples_beyond_the_table_count_as_without_entry():
    from torchpbt.ext.knowledge.sharing import SharedKnowledge

    opts = pbt.KnowledgeSharing(alpha=0.5)
    table = torch.tensor([[0.9, 0.1]])
    k = SharedKnowledge(opts, table, torch.tensor([True]), 1, False, 0.5)
    logits, labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    got = k.loss(logits, labels, torch.tensor([0, 7]))
    want = distillation_loss(logits, labels, torch.tensor([[0.9, 0.1], [0.9, 0.1]]),
                             torch.tensor([True, False]), 0.5, 2.0)
    assert torch.equal(got, want)


def test_damaged_table_is_refused(tmp_path):
    table = KnowledgeTable(tmp_path)
    table.merge({"indices": torch.tensor([0]), "probs": torch.tensor([[0.5, 0.5]])}, 1)
    f = table.file(1)
    f.write_bytes(f.read_bytes()[:-3] + b"xyz")
    with pytest.raises(RuntimeError, match="damaged"):
        KnowledgeTable.load(tmp_path, 1)


@pytest.mark.parametrize("opts, match", [
    ({"alpha": 1.5}, "alpha must be in"), ({"alpha": -0.1}, "alpha must be in"),
    ({"alpha": "beta"}, "names no hyperparameter"), ({"alpha": "lr"}, "inside \\[0, 1\\]"),
    ({"temperature": 0}, "temperature > 0"), ({"temperature": -1.0}, "temperature > 0"),
    ({"top_k": 0}, "top_k must be"), ({"top_k": 5}, "top_k must be"),
    ({"refresh_every": 0}, "refresh_every"),
])
def test_bad_options_fail_before_training(tmp_path, opts, match):
    space = dict(SPACE)
    if opts.get("alpha") == "lr":
        space["lr"] = pbt.Float(1e-3, 2.0, log=True)
    with pytest.raises(ValueError, match=match):
        pbt.run(TinyKS, space, population=4, progress=False, run_dir=tmp_path / "r",
                knowledge_sharing=pbt.KnowledgeSharing(**opts))
    assert not (tmp_path / "r").exists()


def test_alpha_as_an_hparam_is_tuned(tmp_path):
    space = {**SPACE, "alpha": pbt.Float(0.0, 1.0)}
    r = pbt.run(TinyKS, space, population=4, ready_every=10, steps=40, backend="serial",
                progress=False, run_dir=tmp_path / "r",
                knowledge_sharing=pbt.KnowledgeSharing(alpha="alpha", top_k=1))
    alphas = {round(i["hparams"]["alpha"], 6) for i in r.intervals}
    assert len(alphas) > 4  # sampled per member and explored


def test_local_backend_shares_across_processes(tmp_path):
    r = pbt.run(TinyKS, SPACE, population=4, ready_every=10, steps=40, backend="local",
                workers=2, progress=False, run_dir=tmp_path / "r",
                knowledge_sharing=pbt.KnowledgeSharing(alpha=0.5, top_k=2))
    assert any(e["kind"] == "knowledge" for e in r.events)
    read_later = [i for i in r.intervals if i["extra"]["knowledge_version"] > 0]
    assert read_later and all(s["valid"] for s in r.scores)
