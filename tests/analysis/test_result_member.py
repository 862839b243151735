"""The best model back in one call: Result.member() and Result.save_best()."""

from __future__ import annotations

import pytest
import torch
from helpers import QSPACE, SPACE, Quadratic, TinyNet

import torchpbt as pbt


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return pbt.run(TinyNet, SPACE, population=3, ready_every=5, steps=20, backend="serial",
                   progress=False, seed=1, run_dir=tmp_path_factory.mktemp("r") / "run")


def test_member_is_set_up_with_its_final_weights_and_hparams(tiny_run):
    r = tiny_run
    for row in r.members:
        m = r.member(row["member_id"])
        stored = pbt.CheckpointDir(r.run_dir / "checkpoints").load(row["checkpoint"])
        for k, v in m.model.state_dict().items():
            assert torch.equal(v, stored["model"][k])
        assert m.optimizer.param_groups[0]["lr"] == row["hparams"]["lr"]
        assert m.hparams == row["hparams"]
    best = r.member()
    assert best.evaluate() == pytest.approx(r.best_score)


def test_member_refuses_an_unknown_id(tiny_run):
    with pytest.raises(ValueError, match=r"member_id=7: the run's members are \[0, 1, 2\]"):
        tiny_run.member(7)


def test_save_best_writes_a_plain_state_dict(tiny_run, tmp_path):
    path = tiny_run.save_best(tmp_path / "out" / "best.pt")
    state = torch.load(path, weights_only=True)
    fresh = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    fresh.load_state_dict(state)  # no torchpbt needed: the model's own keys
    assert all(torch.equal(fresh.state_dict()[k], v)
               for k, v in tiny_run.member().model.state_dict().items())


def test_save_best_of_a_plain_member_writes_its_state_dict(tmp_path):
    r = pbt.run(Quadratic, QSPACE, population=2, ready_every=5, steps=10, backend="serial",
                progress=False, seed=0, run_dir=tmp_path / "run")
    state = torch.load(r.save_best(tmp_path / "q.pt"), weights_only=True)
    assert state == r.member().state_dict()
