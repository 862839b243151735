"""PBT finds a learning-rate schedule: an MLP on MNIST-1D, where decaying lr wins.

Data: MNIST-1D (Greydanus 2020), generated locally by the ``mnist1d`` package
(4,000 train / 500 validation / 1,000 test sequences of 40 values, 10 classes).
With SGD and momentum, a fixed learning rate either learns slowly (small) or
stalls on a noise floor (large); a learning rate that decays over training
beats every fixed one (``benchmarks/supervised_schedule.py`` measures that gap
first). PBT tunes only ``lr`` while training, so whatever it wins comes from the
schedule it discovers. Members are scored on validation accuracy; the best
member's test accuracy is printed at the end.

    python examples/mnist1d_schedule.py
    python examples/mnist1d_schedule.py --population 4 --steps 600 --quiet
    torchpbt run examples/mnist1d_schedule.py -- --steps 600
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import torchpbt as pbt

SPACE = {"lr": pbt.Float(1e-3, 0.5, log=True)}
BATCH, MOMENTUM = 32, 0.9


def splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    d = pbt.datasets.load("mnist1d")  # the same split on every call
    return {s: (x.float(), y) for s, (x, y) in ((s, d.split(s)) for s in ("train", "val", "test"))}


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(40, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                         nn.Linear(128, 10))


class Mnist1DMember(pbt.TorchMember):
    """``lr`` goes into the optimizer automatically (same name)."""

    def setup(self, hparams):
        self.data = {k: (x.to(self.device), y.to(self.device)) for k, (x, y) in splits().items()}
        self.model = mlp().to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=hparams["lr"],
                                         momentum=MOMENTUM)

    def train(self, steps):
        x, y = self.data["train"]
        for _ in range(steps):
            idx = torch.randint(len(y), (BATCH,))
            loss = self.knowledge_loss(self.model(x[idx]), y[idx], idx)  # = cross-entropy
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return loss.item()

    @torch.no_grad()
    def accuracy(self, split: str) -> float:
        x, y = self.data[split]
        return (self.model(x).argmax(1) == y).float().mean().item()

    def evaluate(self):
        return self.accuracy("val")


def test_accuracy(result: pbt.Result, member_id: int | None = None) -> float:
    """Test accuracy of a member's final weights (default: the best member's)."""
    return result.member(member_id).accuracy("test")


def main(argv=None):
    p = argparse.ArgumentParser(description="PBT of the learning rate on MNIST-1D")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--steps", type=int, default=3000, help="steps per member")
    p.add_argument("--ready-every", type=int, default=100)
    p.add_argument("--workers", type=int, default=None, help="default: number of cores")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default=None, help="default: runs/mnist1dmember-<time>")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    result = pbt.run(
        Mnist1DMember, SPACE, population=a.population, steps=a.steps, ready_every=a.ready_every,
        exploit=pbt.Truncation(0.25), explore=pbt.Perturb(), workers=a.workers, seed=a.seed,
        run_dir=a.run_dir, progress=not a.quiet, summary=not a.quiet,
    )
    print(f"best member {result.best_member_id}: validation accuracy {result.best_score:.4f}, "
          f"test accuracy {test_accuracy(result):.4f}")
    print("its lr schedule: " + ", ".join(
        f"{s.from_step}-{s.to_step}: {s.hparams['lr']:.3g}" for s in result.schedule()))
    print(f"results are in {result.run_dir.resolve()}  (torchpbt status {result.run_dir})")
    return result


if __name__ == "__main__":
    main()
