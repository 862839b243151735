"""Small members for tests: fast, deterministic, with knobs to make them fail."""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F
from torch import nn

import torchpbt as pbt

SPACE = {
    "lr": pbt.Float(1e-3, 1.0, log=True),
    "momentum": pbt.Float(0.0, 0.9),
    "batch_size": pbt.Int(4, 64, log=True),
}


def blobs(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 1.0], [0.0, -2.0]])
    return centers[y] + torch.randn(n, 2, generator=g), y


class TinyNet(pbt.TorchMember):
    """A 2-layer classifier on 3 Gaussian blobs; records the lr it really trained with."""

    def setup(self, hparams):
        self.x, self.y = blobs()
        self.model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=hparams["lr"],
                                         momentum=hparams["momentum"])
        self.seen_lr = -1.0

    def train(self, steps):
        self.seen_lr = self.optimizer.param_groups[0]["lr"]
        for _ in range(steps):
            idx = torch.randint(len(self.y), (self.hparams["batch_size"],))
            loss = F.cross_entropy(self.model(self.x[idx]), self.y[idx])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return loss.item()

    def evaluate(self):
        with torch.no_grad():
            return (self.model(self.x).argmax(1) == self.y).float().mean().item()

    def extra_state(self):
        return {"seen_lr": self.seen_lr}


class Quadratic(pbt.Member):
    """Score = -(x - target)^2 after steps of gradient descent with step size lr."""

    def setup(self, hparams):
        self.x = torch.tensor(5.0)

    def train(self, steps):
        for _ in range(steps):
            self.x = self.x - self.hparams["lr"] * 2 * (self.x - 1.0)
        return None

    def evaluate(self):
        return float(-((self.x - 1.0) ** 2))

    def state_dict(self):
        return {"x": self.x}

    def load_state_dict(self, state):
        self.x = state["x"].clone()


QSPACE = {"lr": pbt.Float(1e-3, 0.5, log=True)}


class PacedQuadratic(Quadratic):
    """Intervals take 50 ms: a scheduler hiccup on a loaded machine cannot let one actor
    train its members to the end before the other has reported a first score."""

    def train(self, steps):
        time.sleep(0.05)
        return super().train(steps)


class NaNScore(Quadratic):
    """Scores NaN whenever lr is above 0.3 (a diverged model)."""

    def evaluate(self):
        return float("nan") if self.hparams["lr"] > 0.3 else super().evaluate()


class Boom(Quadratic):
    """Raises inside train for members whose lr is above 0.2."""

    def train(self, steps):
        if self.hparams["lr"] > 0.2:
            raise RuntimeError("boom: lr too high")
        return super().train(steps)


class DiesInWorker(Quadratic):
    """Kills its own worker process when lr is above 0.3 (local backend only)."""

    def train(self, steps):
        if self.hparams["lr"] > 0.3 and os.environ.get("TORCHPBT_TEST_DIE") == "1":
            os._exit(3)
        return super().train(steps)


class ReturnsText(Quadratic):
    def evaluate(self):
        return "good"


class TinyKS(TinyNet):
    """TinyNet whose loss takes part in knowledge sharing."""

    def train(self, steps):
        self.seen_lr = self.optimizer.param_groups[0]["lr"]
        for _ in range(steps):
            idx = torch.randint(len(self.y), (self.hparams["batch_size"],))
            loss = self.knowledge_loss(self.model(self.x[idx]), self.y[idx], idx)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return loss.item()


class DiesOnce(Quadratic):
    """Kills its worker the first time a member with lr above 0.3 trains (marker file)."""

    def train(self, steps):
        marker = os.environ.get("TORCHPBT_TEST_DIE_ONCE")
        if marker and self.hparams["lr"] > 0.3 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
        return super().train(steps)


class InfLoss(Quadratic):
    """Training diverges (loss inf) for members whose lr is above 0.3."""

    def train(self, steps):
        super().train(steps)
        return float("inf") if self.hparams["lr"] > 0.3 else 0.0


class DiesAlways(Quadratic):
    """Every interval kills its worker (local backend only): nothing ever finishes."""

    def train(self, steps):
        if os.environ.get("TORCHPBT_TEST_DIE") == "1":
            os._exit(3)
        return super().train(steps)


from torchpbt.nas import ArchSpace, NASMember  # noqa: E402

ARCH = ArchSpace({"c0": ["lin", "deep", "skip"], "c1": ["lin", "deep", "skip"]})
NAS_SPACE = {"lr": pbt.Float(1e-2, 0.5, log=True), "momentum": pbt.Float(0.5, 0.9),
             **ARCH.genes()}


def _op(choice: str) -> nn.Module:
    if choice == "lin":
        return nn.Sequential(nn.Linear(16, 16), nn.ReLU())
    if choice == "deep":
        return nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
    return nn.Identity()


class TinyNASNet(nn.Module):
    def __init__(self, genome):
        super().__init__()
        self.stem = nn.Linear(2, 16)
        self.c0, self.c1 = _op(genome["c0"]), _op(genome["c1"])
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.c1(self.c0(torch.relu(self.stem(x)))))


class TinyNAS(NASMember):
    """Blobs classifier whose two middle layers are searched."""

    arch = ARCH

    def setup(self, hparams):
        self.x, self.y = blobs()
        self.model = self.build_model(hparams)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=hparams["lr"],
                                         momentum=hparams["momentum"])

    def build(self, genome):
        return TinyNASNet(genome)

    def train(self, steps):
        for _ in range(steps):
            idx = torch.randint(len(self.y), (16,))
            loss = F.cross_entropy(self.model(self.x[idx]), self.y[idx])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return loss.item()

    def evaluate(self):
        with torch.no_grad():
            return (self.model(self.x).argmax(1) == self.y).float().mean().item()


class SlowQuadratic(Quadratic):
    """Quadratic that takes a while per interval, so several workers overlap.
    ``TORCHPBT_TEST_PAUSE`` sets the pause per process (a worker made slow on purpose)."""

    pause = 0.05

    def train(self, steps):
        time.sleep(float(os.environ.get("TORCHPBT_TEST_PAUSE", self.pause)))
        return super().train(steps)


def chains_are_complete(r: pbt.Result, steps: int) -> None:
    """Every member's intervals follow one another as its decisions say, nothing lost or
    run twice, and every member's final weights trained exactly ``steps`` steps."""
    from torchpbt.analysis.lineage import check_log

    problems = check_log(r.intervals, r.events, steps)
    assert problems == [], problems
    for m in r.members:
        assert m["status"] == "done" and m["step"] == steps
        assert pbt.Schedule.from_result(r, m["member_id"]).total == steps


# A job file for Ctrl-C tests: members train slowly once the test has created ``flag``.
SLOW_SCRIPT = """
import os, sys, time
sys.path[:0] = [{tests!r}, {tests!r} + "/.."]
import torchpbt as pbt
from helpers import SPACE, TinyNet

class Slow(TinyNet):
    def train(self, steps):
        if os.path.exists({flag!r}):  # slow until the test has sent Ctrl-C
            time.sleep(0.1)
        return super().train(steps)

if __name__ == "__main__":
    pbt.run(Slow, SPACE, population=4, ready_every=5, steps={steps}, seed=3, progress=False,
            backend={backend!r}, workers=2, run_dir={run_dir!r})
"""
