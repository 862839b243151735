"""PBT over a real LightningModule, trained by Lightning's Trainer (the lightning extra)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import blobs, chains_are_complete

import torchpbt as pbt

pl = pytest.importorskip("lightning.pytorch")
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from torchpbt.integrations.lightning import LightningMember  # noqa: E402

pytestmark = pytest.mark.slow  # end to end: processes, files, browsers

ROOT = Path(__file__).resolve().parents[2]
SPACE = {"lr": pbt.Float(1e-2, 0.5, log=True), "momentum": pbt.Float(0.0, 0.9)}


class LitLinear(pl.LightningModule):
    def __init__(self, lr: float, momentum: float, schedule: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(2, 3)

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self.net(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_acc", (self.net(batch[0]).argmax(1) == batch[1]).float().mean())

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr,
                              momentum=self.hparams.momentum)
        if not self.hparams.schedule:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** (s // 5))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Lit(LightningMember):
    schedule = False

    def configure_module(self, hparams):
        return LitLinear(hparams["lr"], hparams["momentum"], self.schedule)

    def configure_data(self):
        x, y = blobs(256, seed=0)
        return (DataLoader(TensorDataset(x[:192], y[:192]), batch_size=16, shuffle=True),
                DataLoader(TensorDataset(x[192:], y[192:]), batch_size=64))


class LitScheduled(Lit):
    schedule = True


class NoMetric(Lit):
    monitor = "val_loss"


def _run(tmp_path, name, member=Lit, **kw):
    return pbt.run(member, SPACE, population=3, steps=30, ready_every=10, seed=1,
                   backend="serial", run_dir=tmp_path / name, progress=False, **kw)


def _state(result, member_id):
    return pbt.CheckpointDir(result.run_dir / "checkpoints").load(result.checkpoint_of(member_id))


def test_a_population_trains_with_lightnings_own_checkpoints(tmp_path):
    r = _run(tmp_path, "a")
    chains_are_complete(r, 30)
    assert r.member_steps == 90 and r.best_score > 0.6
    for m in r.members:  # Lightning's checkpoint, loaded with weights_only=True
        state = _state(r, m["member_id"])
        assert state["global_step"] == 30  # the final weights trained every step
        assert {"state_dict", "optimizer_states", "loops"} <= set(state)
        assert "hyper_parameters" not in state  # arbitrary objects: not weights_only-safe
    again = _run(tmp_path, "b")  # serial runs are deterministic through Lightning too
    assert [s["score"] for s in again.scores] == [s["score"] for s in r.scores]
    best = r.member()  # the best model back, ready
    assert isinstance(best.module, LitLinear) and best.evaluate() == r.best_score


def test_explored_hparams_win_over_the_restored_optimizer(tmp_path):
    m = Lit()
    m.setup({"lr": 0.1, "momentum": 0.5})
    m.train(5)
    state = m.state_dict()
    n = Lit()
    n.setup({"lr": 0.1, "momentum": 0.5})
    n.load_state_dict(state)
    n.apply_hparams({"lr": 0.3, "momentum": 0.8})  # explore changed them
    n.train(5)
    group = n.state_dict()["optimizer_states"][0]["param_groups"][0]
    assert (group["lr"], group["momentum"]) == (0.3, 0.8)
    assert n.global_step == 10  # resumed at step 5, trained 5 more


def test_an_lr_schedulers_base_becomes_the_explored_lr(tmp_path):
    m = LitScheduled()
    m.setup({"lr": 0.2, "momentum": 0.0})
    m.train(5)  # LambdaLR halves every 5 steps: factor 0.5 now
    state = m.state_dict()
    m.load_state_dict(state)
    m.apply_hparams({"lr": 0.4, "momentum": 0.0})
    m.train(1)
    sched = m.state_dict()["lr_schedulers"][0]
    assert sched["base_lrs"] == [0.4]
    assert m.state_dict()["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.2)


def test_a_metric_never_logged_is_named_before_the_run_starts(tmp_path):
    with pytest.raises(Exception, match=r"monitor='val_loss' was not logged during validation; "
                                        r"logged: \['val_acc'\]"):
        _run(tmp_path, "c", member=NoMetric)


def test_the_lightning_example_runs_as_a_file_and_through_the_cli(tmp_path):
    example = str(ROOT / "examples" / "lightning_mnist.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for name, cmd, steps in (("file", [example], 40),
                             ("cli", ["-m", "torchpbt", "run", example, "--"], 10)):
        p = subprocess.run([sys.executable, *cmd, "--population", "2", "--steps", str(steps),
                            "--ready-every", "10", "--workers", "1", "--quiet", "--run-dir",
                            str(tmp_path / name)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr
        r = pbt.load(tmp_path / name)
        chains_are_complete(r, steps)
    assert pbt.load(tmp_path / "file").best_score > 0.2  # 10 classes: chance is 0.1
