"""PBT-NAS (Chebykin et al., 2023): search a small CNN's architecture while it trains.

Every member has a genome, one layer choice per cell, plus the usual
hyperparameters. When a member falls into the bottom 25%, it is replaced by
a *mix* of two members from the top 25%. The fitter parent is the base. Each
cell comes from the other parent with probability 0.25, and that cell's
weights are shrink-perturbed: W = 0.4·W_donor + 0.1·W_fresh. The network that
wins is used as trained, with no retraining.

    python examples/nas_cnn.py                         # 8x8 digits, ~1 min on 2 cores
    python examples/nas_cnn.py --dataset mnist --steps 800
    python examples/nas_cnn.py --strategy mutation     # the mutation-based PBT baseline
    torchpbt run examples/nas_cnn.py -- --population 6
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import torchpbt as pbt
from torchpbt.nas import ArchSpace, Mixing, Mutation, NASMember

CHANNELS = 16
CHOICES = ["conv3", "conv5", "sep3", "dil3", "skip"]
ARCH = ArchSpace({f"cell{i}": CHOICES for i in range(4)})
SPACE = {
    "lr": pbt.Float(0.01, 0.5, log=True),
    "momentum": pbt.Float(0.5, 0.95),
    **ARCH.genes(),  # the architecture: explore leaves genes alone, Mixing changes them
}


def make_op(choice: str, c: int) -> nn.Module:
    """One cell's layer; every choice keeps c channels, so any cell fits any genome."""
    if choice == "skip":
        return nn.Identity()
    if choice == "sep3":  # depthwise 3x3, then pointwise 1x1
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, c, 1),
                             nn.BatchNorm2d(c), nn.ReLU())
    k, dil = {"conv3": (3, 1), "conv5": (5, 1), "dil3": (3, 2)}[choice]
    return nn.Sequential(nn.Conv2d(c, c, k, padding=dil * (k // 2), dilation=dil),
                         nn.BatchNorm2d(c), nn.ReLU())


class Net(nn.Module):
    """Stem → cell0 → cell1 → 2x2 pool → cell2 → cell3 → global average → linear."""

    def __init__(self, genome: dict[str, str], num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, CHANNELS, 3, padding=1), nn.BatchNorm2d(CHANNELS),
                                  nn.ReLU())
        for name, choice in genome.items():  # module name = position: mixing finds its weights
            setattr(self, name, make_op(choice, CHANNELS))
        self.head = nn.Linear(CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cell1(self.cell0(self.stem(x)))
        x = self.cell3(self.cell2(F.max_pool2d(x, 2)))
        return self.head(x.mean(dim=(2, 3)))


class CNNSearch(NASMember):
    arch = ARCH
    dataset = "digits"
    batch_size = 64

    def setup(self, hparams):
        data = pbt.datasets.load(self.dataset)
        side = int(data.num_features ** 0.5)
        self.data = {s: (x.reshape(-1, 1, side, side).to(self.device), y.to(self.device))
                     for s in ("train", "val", "test") for x, y in [data.split(s)]}
        self.model = self.build_model(hparams).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=hparams["lr"],
                                         momentum=hparams["momentum"])

    def build(self, genome):
        return Net(genome, num_classes=10)

    def train(self, steps):
        x, y = self.data["train"]
        self.model.train()
        for _ in range(steps):
            idx = torch.randint(len(y), (self.batch_size,))
            loss = F.cross_entropy(self.model(x[idx]), y[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return loss.item()

    @torch.no_grad()
    def accuracy(self, split: str) -> float:
        x, y = self.data[split]
        self.model.eval()
        return (self.model(x).argmax(1) == y).float().mean().item()

    def evaluate(self):
        return self.accuracy("val")


class MnistCNNSearch(CNNSearch):
    dataset = "mnist"


STRATEGIES = {
    "mixing": lambda: Mixing(fraction=0.25, p_donor=0.25, lam=0.4, gamma=0.1),
    "copy-mixing": lambda: Mixing(lam=1.0, gamma=0.0),
    "reinit-mixing": lambda: Mixing(lam=0.0, gamma=1.0),
    "mutation": lambda: Mutation(fraction=0.25),
    "random": lambda: None,  # random architectures, each trained for the whole budget
}


def test_accuracy(result: pbt.Result, member_cls: type = CNNSearch) -> float:
    """The best member's network as trained (no retraining), on the held-out test split."""
    return result.member(member_class=member_cls).accuracy("test")


def main(argv=None) -> pbt.Result:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    p.add_argument("--strategy", choices=sorted(STRATEGIES), default="mixing")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--ready-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["serial", "local", "ray"], default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--run-dir", default=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    member = MnistCNNSearch if args.dataset == "mnist" else CNNSearch
    strategy = STRATEGIES[args.strategy]()
    result = pbt.run(
        member, SPACE, population=args.population, steps=args.steps,
        ready_every=args.ready_every, seed=args.seed, exploit=strategy,
        explore=pbt.Perturb() if strategy is not None else None, backend=args.backend,
        workers=args.workers, run_dir=args.run_dir, progress=not args.quiet,
    )
    best = result.best_member
    genome = {g: best["hparams"][g] for g in ARCH.positions}
    print(f"best architecture: {genome}")
    print(f"validation accuracy {best['score']:.4f}, test accuracy "
          f"{test_accuracy(result, member):.4f} (as trained, no retraining)")
    return result


if __name__ == "__main__":
    main()
