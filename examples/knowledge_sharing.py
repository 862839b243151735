"""PBT with knowledge sharing (Oehmcke & Kramer, 2018) on offline MNIST-family data.

While a member ranks in the population's top k, its predictions on the samples
it trains on go into a shared soft-target table; every member then trains on
(1 − α)·cross-entropy + α·τ²·KL(table ‖ its own predictions) for samples that
have an entry. The only change to a member is one line in ``train``:
``loss = self.knowledge_loss(logits, labels, indices)``.

    python examples/knowledge_sharing.py                      # MNIST subset
    python examples/knowledge_sharing.py --dataset mnist1d --tune-alpha
    python examples/knowledge_sharing.py --dataset idx --data-dir ~/mnist   # original IDX files
    python examples/knowledge_sharing.py --no-sharing          # plain PBT, for comparison
    torchpbt run examples/knowledge_sharing.py -- --dataset digits
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

import torchpbt as pbt

SPACE = {
    "lr": pbt.Float(1e-3, 0.5, log=True),
    "momentum": pbt.Float(0.0, 0.99),
    "batch_size": pbt.Int(16, 256, log=True),
}


class Classifier(pbt.TorchMember):
    """An MLP on one dataset of torchpbt.datasets (subclasses pick which)."""

    dataset = "mnist"

    def setup(self, hparams):
        data = pbt.datasets.load(self.dataset, os.environ.get("TORCHPBT_DATA_DIR"))
        self.data = {s: tuple(t.to(self.device) for t in data.split(s))
                     for s in ("train", "val", "test")}
        self.model = nn.Sequential(
            nn.Linear(data.num_features, 128), nn.ReLU(), nn.Linear(128, data.num_classes)
        ).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=hparams["lr"])

    def train(self, steps):
        x, y = self.data["train"]
        self.model.train()
        for _ in range(steps):
            idx = torch.randint(len(y), (self.hparams["batch_size"],))
            loss = self.knowledge_loss(self.model(x[idx]), y[idx], idx)
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


class MnistClassifier(Classifier):
    dataset = "mnist"


class DigitsClassifier(Classifier):
    dataset = "digits"


class Mnist1dClassifier(Classifier):
    dataset = "mnist1d"


class IdxClassifier(Classifier):
    dataset = "idx"  # reads TORCHPBT_DATA_DIR, set from --data-dir


CLASSIFIERS = {c.dataset: c for c in (MnistClassifier, DigitsClassifier, Mnist1dClassifier,
                                      IdxClassifier)}


def test_accuracy(result: pbt.Result, member_cls: type[Classifier]) -> float:
    """Test accuracy of the best member's final weights."""
    return result.member(member_class=member_cls).accuracy("test")


def run(dataset: str = "mnist", sharing: pbt.KnowledgeSharing | None = None,
        tune_alpha: bool = False, **kwargs) -> pbt.Result:
    space = dict(SPACE)
    if tune_alpha and sharing is not None:
        space["alpha"] = pbt.Float(0.0, 1.0)
    kwargs.setdefault("exploit", pbt.Truncation(0.25))
    return pbt.run(CLASSIFIERS[dataset], space, knowledge_sharing=sharing, **kwargs)


def main(argv=None):
    p = argparse.ArgumentParser(description="PBT with knowledge sharing")
    p.add_argument("--dataset", choices=sorted(CLASSIFIERS), default="mnist")
    p.add_argument("--data-dir", default=None, help="folder of MNIST IDX files (--dataset idx)")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--ready-every", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--tune-alpha", action="store_true", help="let PBT tune alpha as an hparam")
    p.add_argument("--no-sharing", action="store_true", help="plain PBT")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default=None)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.data_dir:
        os.environ["TORCHPBT_DATA_DIR"] = os.path.abspath(a.data_dir)  # workers inherit it
    sharing = None if a.no_sharing else pbt.KnowledgeSharing(
        alpha="alpha" if a.tune_alpha else a.alpha, temperature=a.temperature, top_k=a.top_k)
    result = run(a.dataset, sharing, a.tune_alpha, population=a.population, steps=a.steps,
                 ready_every=a.ready_every, workers=a.workers, seed=a.seed, run_dir=a.run_dir,
                 progress=not a.quiet)
    versions = [e for e in result.events if e["kind"] == "knowledge"]
    print(f"best member {result.best_member_id}: validation accuracy {result.best_score:.4f}, "
          f"test accuracy {test_accuracy(result, CLASSIFIERS[a.dataset]):.4f}; "
          f"shared table versions published: {len(versions)}")
    print(f"results are in {result.run_dir.resolve()}")
    return result


if __name__ == "__main__":
    main()
