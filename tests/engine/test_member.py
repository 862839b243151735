"""Members: load first, then the explored hparams win; clear errors for bad members."""

from __future__ import annotations

import pytest
import torch
from helpers import SPACE, TinyNet

import torchpbt as pbt
from torchpbt.backends import IntervalRunner, Task
from torchpbt.engine.preflight import PreflightError


def test_restoring_a_donor_checkpoint_keeps_the_new_lr(tmp_path):
    runner = IntervalRunner(TinyNet, str(tmp_path))
    donor = runner.run(Task(0, 0, 5, {"lr": 0.5, "momentum": 0.9, "batch_size": 8}, None, 1))
    state = runner.checkpoints.load(donor.checkpoint)
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.5  # the donor's value is in there
    out = runner.run(Task(1, 5, 5, {"lr": 0.01, "momentum": 0.1, "batch_size": 8},
                          donor.checkpoint, 2))
    member, _ = runner._live[1]
    assert member.optimizer.param_groups[0]["lr"] == 0.01
    assert member.optimizer.param_groups[0]["momentum"] == 0.1
    assert member.seen_lr == 0.01
    assert runner.checkpoints.load(out.checkpoint)["extra"]["seen_lr"] == 0.01


def test_load_restores_donor_weights_exactly(tmp_path):
    runner = IntervalRunner(TinyNet, str(tmp_path))
    hp = {"lr": 0.1, "momentum": 0.5, "batch_size": 8}
    donor = runner.run(Task(0, 0, 5, hp, None, 1))
    weights = runner.checkpoints.load(donor.checkpoint)["model"]
    fresh = IntervalRunner(TinyNet, str(tmp_path))
    member = fresh._member_for(Task(1, 5, 0, hp, donor.checkpoint, 2))
    for k, v in member.model.state_dict().items():
        assert torch.equal(v, weights[k])


class Mapped(TinyNet):
    optimizer_hparams = {"learning_rate": "lr"}


class BadKey(TinyNet):
    optimizer_hparams = {"lr": "learning_rate"}


def test_explicit_optimizer_mapping_checks_names():
    m = Mapped()
    m.setup({"lr": 0.1, "momentum": 0.0, "batch_size": 4})
    with pytest.raises(KeyError, match="unknown hyperparameter"):
        m.apply_hparams({"lr": 0.1, "momentum": 0.0, "batch_size": 4})
    m.apply_hparams({"learning_rate": 0.2})
    assert m.optimizer.param_groups[0]["lr"] == 0.2
    b = BadKey()
    b.setup({"lr": 0.1, "momentum": 0.0, "batch_size": 4})
    with pytest.raises(KeyError, match="no param_group key"):
        b.apply_hparams({"lr": 0.1, "momentum": 0.0, "batch_size": 4})


class AdamNet(pbt.TorchMember):
    optimizer_hparams: dict | None = None

    def setup(self, hparams):
        self.model = torch.nn.Linear(3, 1)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def train(self, steps):
        return 0.0

    def evaluate(self):
        return 0.0


class AdamWholeTuple(AdamNet):
    optimizer_hparams = {"b1": "betas"}


class AdamIndexed(AdamNet):
    optimizer_hparams = {"b1": "betas[0]", "lr": "lr"}


class AdamOutOfRange(AdamNet):
    optimizer_hparams = {"b1": "betas[2]"}


def test_adam_betas_take_beta1_beta2_by_name_or_an_indexed_mapping():
    m = AdamNet()
    m.setup({})
    m.apply_hparams({"lr": 0.01, "beta1": 0.5, "beta2": 0.99})
    group = m.optimizer.param_groups[0]
    assert (group["lr"], group["betas"]) == (0.01, (0.5, 0.99))
    m = AdamIndexed()
    m.setup({})
    m.apply_hparams({"b1": 0.7, "lr": 0.02})
    assert m.optimizer.param_groups[0]["betas"] == (0.7, 0.999)
    m.optimizer.step()  # the optimizer still works with what was written
    for cls, match in ((AdamWholeTuple, r"'betas' is a tuple \(0\.9, 0\.999\); map 'b1' to one "
                                        r"element, e\.g\. \{'b1': 'betas\[0\]'\}"),
                       (AdamOutOfRange, r"has no element 2 \(for 'b1'\)")):
        bad = cls()
        bad.setup({})
        with pytest.raises(KeyError, match=match):
            bad.apply_hparams({"b1": 0.5})


def test_a_whole_tuple_mapping_is_refused_before_the_run(tmp_path):
    space = {"b1": pbt.Float(0.5, 0.9)}
    with pytest.raises(PreflightError, match="'betas' is a tuple"):
        pbt.run(AdamWholeTuple, space, population=2, steps=4, ready_every=2, backend="serial",
                progress=False, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _halve_every_10(step):
    return 0.5 ** (step // 10)


class Scheduled(TinyNet):
    """TinyNet with a LambdaLR stepped once per training step; records every lr used."""

    def setup(self, hparams):
        super().setup(hparams)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _halve_every_10)
        self.used: list[float] = []

    def train(self, steps):
        for _ in range(steps):
            self.used.append(self.optimizer.param_groups[0]["lr"])
            super().train(1)
            self.lr_scheduler.step()
        return 0.0


def test_an_lr_scheduler_keeps_its_state_and_the_explored_lr_becomes_its_base(tmp_path):
    runner = IntervalRunner(Scheduled, str(tmp_path))
    hp = {"lr": 0.1, "momentum": 0.0, "batch_size": 8}
    donor = runner.run(Task(0, 0, 10, hp, None, 1))
    state = runner.checkpoints.load(donor.checkpoint)
    assert state["lr_scheduler"]["last_epoch"] == 10  # the schedule's position is saved
    # member 1 copies the donor at step 10 (factor 0.5) with an explored base lr of 0.4
    runner.run(Task(1, 10, 12, {**hp, "lr": 0.4}, donor.checkpoint, 2))
    member, _ = runner._live[1]
    assert member.used == pytest.approx([0.2] * 10 + [0.1] * 2)  # 0.4 × the schedule
    assert member.lr_scheduler.base_lrs == [0.4]
    assert member.lr_scheduler.get_last_lr() == pytest.approx([0.1])
    # a fresh process that loads the checkpoint continues the same schedule
    fresh = IntervalRunner(Scheduled, str(tmp_path))
    again = fresh._member_for(Task(2, 10, 0, {**hp, "lr": 0.4}, donor.checkpoint, 3))
    assert again.lr_scheduler.last_epoch == 10
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(0.2)


def test_member_class_checks():
    with pytest.raises(TypeError, match="must be a class"):
        pbt.run(TinyNet(), SPACE, progress=False)

    class NoEval(pbt.TorchMember):
        def setup(self, hparams): ...
        def train(self, steps): ...

    with pytest.raises(TypeError, match="does not implement evaluate"):
        pbt.run(NoEval, SPACE, progress=False)


def test_devices_resolve_on_cpu_and_auto():
    from torchpbt.backends import resolve_devices

    assert resolve_devices(None) == ["cpu"]
    assert resolve_devices(["cpu", "cpu"]) == ["cpu", "cpu"]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available here"):
            resolve_devices(["cuda:0"])
    auto = resolve_devices("auto")
    assert auto == (["cpu"] if not torch.cuda.is_available() else auto)


def test_interval_trains_the_same_in_a_fresh_or_a_warm_worker(tmp_path):
    hp = {"lr": 0.1, "momentum": 0.5, "batch_size": 8}
    warm = IntervalRunner(TinyNet, str(tmp_path))
    first = warm.run(Task(0, 0, 5, hp, None, 1))
    again = warm.run(Task(0, 5, 5, hp, first.checkpoint, 2))
    fresh = IntervalRunner(TinyNet, str(tmp_path)).run(Task(0, 5, 5, hp, first.checkpoint, 2))
    assert fresh.checkpoint == again.checkpoint and fresh.score == again.score
