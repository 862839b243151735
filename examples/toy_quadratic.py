"""The toy problem of the PBT paper (Jaderberg et al. 2017, figure 2).

Maximise Q(θ) = 1.2 − (θ0² + θ1²). Each member only sees a surrogate
Q̂(θ|h) = 1.2 − (h0·θ0² + h1·θ1²) and does gradient ascent on it, so its
hyperparameters h decide which coordinates it can improve. Two members start at
h = (1, 0) and (0, 1); alone, neither can reach the optimum. Exploit copies θ
(not h) from the better member, explore adds Gaussian noise to h.

    python examples/toy_quadratic.py            # PBT
    python examples/toy_quadratic.py --variant grid
    torchpbt run examples/toy_quadratic.py -- --variant explore
"""

from __future__ import annotations

import argparse
import random
import tempfile

import torch

import torchpbt as pbt

SPACE = {"h0": pbt.Float(0.0, 1.0), "h1": pbt.Float(0.0, 1.0)}
INITIAL = [{"h0": 1.0, "h1": 0.0}, {"h0": 0.0, "h1": 1.0}]


class Quadratic(pbt.Member):
    def setup(self, hparams):
        self.theta = torch.tensor([0.9, 0.9], dtype=torch.float64)

    def train(self, steps):
        h = torch.tensor([self.hparams["h0"], self.hparams["h1"]], dtype=torch.float64)
        for _ in range(steps):  # gradient ascent on the surrogate, lr 0.01
            self.theta = self.theta + 0.01 * (-2.0 * h * self.theta)
        return None

    def evaluate(self):
        return float(1.2 - (self.theta**2).sum())  # the true objective

    def state_dict(self):
        return {"theta": self.theta}

    def load_state_dict(self, state):
        self.theta = state["theta"].clone()


def gaussian_explore(sigma: float = 0.1):
    """Explore by adding N(0, σ²) noise to every h (clipped to the space by torchpbt)."""

    def explore(hparams, space, rng: random.Random):
        new = {k: v + rng.gauss(0.0, sigma) for k, v in hparams.items()}
        return new, {k: f"+N(0,{sigma})" for k in hparams}

    return explore


# Both members start tied; like the paper's argmax, the toy copies across ties.
VARIANTS = {  # (exploit, explore)
    "pbt": (pbt.Truncation(0.5, copy_ties=True), gaussian_explore()),
    "exploit": (pbt.Truncation(0.5, copy_ties=True), None),
    "explore": (None, gaussian_explore()),
    "grid": (None, None),
}


def run_toy(variant: str = "pbt", seed: int = 0, steps: int = 200, run_dir=None,
            progress: bool = False) -> pbt.Result:
    exploit, explore = VARIANTS[variant]
    return pbt.run(
        Quadratic, SPACE, population=2, ready_every=4, steps=steps,
        exploit=exploit, explore=explore, explore_when="ready", inherit_hparams=False,
        initial_hparams=INITIAL, seed=seed, backend="serial",
        run_dir=run_dir or tempfile.mkdtemp(prefix=f"toy-{variant}-"), progress=progress,
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=sorted(VARIANTS), default="pbt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--run-dir", default=None)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    result = run_toy(a.variant, a.seed, a.steps, a.run_dir, progress=not a.quiet)
    print(f"{a.variant}: best true Q = {result.best_score:.4f} (optimum 1.2) in {result.run_dir}")
    return result


if __name__ == "__main__":
    main()
