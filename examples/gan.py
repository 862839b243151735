"""PBT of a small GAN on a 2-D ring of 8 Gaussians, the classic mode-collapse test.

The data is generated, so it runs offline: 8 Gaussians (std 0.05) evenly
spaced on a circle of radius 2. Generator and discriminator are 3-layer MLPs
trained with the non-saturating GAN loss and Adam. PBT tunes the generator's
learning rate, the discriminator's as a ratio to it, and Adam's β1 while the pair trains;
one step is one discriminator update then one generator update (batch 256).
Badly balanced learning rates make the generator collapse onto a few modes
or smear its samples between them, which is what PBT has to fix.

Mode-matched mass is Σ_k min(p_k, 1/8), where p_k is the share of 2,000
generated samples (from fixed noise) lying within a radius of mode k. It is
the mass the generator puts where the true mixture has it, up to each mode's
true share: it counts missed modes (collapse) and off-mode samples (blur)
together in one number in [0, 1]. Within 3 std the true mixture scores 0.989 in
the limit (the mass of a 2-D Gaussian within 3 std; about 0.97 on 2,000
samples, whose counts per mode are not exactly equal), a generator collapsed
onto one mode at most 0.125. It does not reward the right spread inside a mode:
points exactly on the 8 centres would score 1.0. ``mode_stats`` also gives
modes covered and the share of high-quality samples, the figures the GAN papers
use.

A member's score is the mean of the mode-matched mass within 3 std and within
10 std (0.5, a third of the distance between neighbouring modes). Why the wide
radius: a generator that will end up covering every mode spends its first
hundreds of steps near all eight modes but not yet on them, where the 3-std
mass is about 0 and a generator collapsed onto a few modes outranks it; the
10-std mass already credits it (benchmarks/gan.py's notes). Late in training
the two agree: a sharp generator scores the same on both.

    python examples/gan.py                          # 8 members × 3,000 steps
    python examples/gan.py --population 4 --steps 500 --quiet
    torchpbt run examples/gan.py -- --steps 2000
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

import torchpbt as pbt

MODES, RADIUS, STD, NOISE = 8, 2.0, 0.05, 8
CENTRES = torch.tensor([[RADIUS * math.cos(2 * math.pi * k / MODES),
                         RADIUS * math.sin(2 * math.pi * k / MODES)] for k in range(MODES)])
EVAL_SAMPLES, EVAL_SEED, BATCH = 2000, 12345, 256
SCORE_RADII = (3.0, 10.0)  # in std: precision, and coverage before the samples are sharp

# The discriminator's lr is searched as a ratio to the generator's, as TTUR-style GAN
# work tunes it. Drawn independently over three decades each, few pairs are balanced,
# so a whole population could hold no member that escapes collapse; PBT can only copy
# and perturb the members it has, and a collapsed generator stays collapsed.
SPACE = {
    "lr_g": pbt.Float(1e-5, 1e-2, log=True),
    "d_ratio": pbt.Float(0.25, 4.0, log=True),  # lr_d = lr_g × d_ratio
    "beta1": pbt.Float(0.0, 0.9),
}


# Early on, a generator collapsed onto a few modes can outscore members that will cover
# all eight but are not sharp yet; copied by plain truncation, it soon becomes every
# member's ancestor. The cap keeps one initial member's descendants to half the population.
EXPLOIT = pbt.Truncation(0.25, max_lineage_share=0.5)


def lr_d(hparams) -> float:
    return hparams["lr_g"] * hparams["d_ratio"]


def real_samples(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws from the true mixture (equal weights)."""
    k = torch.randint(MODES, (n,), generator=generator)
    return CENTRES[k] + STD * torch.randn(n, 2, generator=generator)


def mode_stats(x: torch.Tensor, radius: float = 3.0) -> dict[str, float]:
    """Mode-matched mass, modes covered and share of high-quality samples, counting a
    sample as on its nearest mode within ``radius`` std."""
    dist = torch.cdist(x.float(), CENTRES)  # (n, 8)
    near, k = dist.min(dim=1)
    good = near < radius * STD
    p = torch.bincount(k[good], minlength=MODES).float() / len(x)
    return {"matched_mass": float(p.clamp(max=1 / MODES).sum()),
            "modes": int((p > 0.25 / MODES).sum()),  # at least a quarter of its true share
            "high_quality": float(good.float().mean())}


def score(x: torch.Tensor) -> float:
    """A member's score: mode-matched mass averaged over SCORE_RADII."""
    return sum(mode_stats(x, r)["matched_mass"] for r in SCORE_RADII) / len(SCORE_RADII)


def mlp(n_in: int, n_out: int, hidden: int = 128) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, n_out))


class GANMember(pbt.Member):
    """Two networks, two Adam optimizers: all four state dicts are in the checkpoint."""

    def setup(self, hparams):
        torch.set_num_threads(1)  # tiny networks: threads only add overhead
        self.g, self.d = mlp(NOISE, 2).to(self.device), mlp(2, 1).to(self.device)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=hparams["lr_g"])
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=lr_d(hparams))
        gen = torch.Generator().manual_seed(EVAL_SEED)  # same noise for every evaluation
        self.eval_noise = torch.randn(EVAL_SAMPLES, NOISE, generator=gen).to(self.device)

    def apply_hparams(self, hparams):
        super().apply_hparams(hparams)  # after a load: the explored values win
        for opt, lr in ((self.opt_g, hparams["lr_g"]), (self.opt_d, lr_d(hparams))):
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr, (hparams["beta1"], 0.999)

    def train(self, steps):
        for _ in range(steps):
            real = real_samples(BATCH).to(self.device)
            fake = self.g(torch.randn(BATCH, NOISE, device=self.device))
            d_real, d_fake = self.d(real), self.d(fake.detach())
            loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                      + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            d_fake = self.d(fake)  # non-saturating generator loss
            loss_g = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
        return None if steps == 0 else loss_d.item() + loss_g.item()

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        return self.g(self.eval_noise).cpu()

    def evaluate(self):
        return score(self.samples())

    def state_dict(self):
        return {"g": self.g.state_dict(), "d": self.d.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load_state_dict(self, state):
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])


def best_samples(result: pbt.Result) -> torch.Tensor:
    """The best member's evaluation samples, from its final weights."""
    return result.member().samples()


def main(argv=None):
    p = argparse.ArgumentParser(description="PBT of a GAN on a ring of 8 Gaussians")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--steps", type=int, default=3000, help="steps per member (D + G update)")
    p.add_argument("--ready-every", type=int, default=200)
    p.add_argument("--workers", type=int, default=None, help="default: number of cores")
    p.add_argument("--backend", choices=("serial", "local"), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default=None, help="default: runs/ganmember-<time>")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    result = pbt.run(
        GANMember, SPACE, population=a.population, steps=a.steps, ready_every=a.ready_every,
        exploit=EXPLOIT, explore=pbt.Perturb(), backend=a.backend,
        workers=a.workers, seed=a.seed, run_dir=a.run_dir, progress=not a.quiet,
    )
    stats, h = mode_stats(best_samples(result)), result.best_hparams
    print(f"best member {result.best_member_id}: mode-matched mass {stats['matched_mass']:.3f} "
          f"(true mixture ~0.97), {stats['modes']}/{MODES} modes, "
          f"{stats['high_quality']:.1%} high-quality samples; lr_g {h['lr_g']:.1e}, "
          f"lr_d {lr_d(h):.1e}, beta1 {h['beta1']:.2f}")
    print(f"results are in {result.run_dir.resolve()}  (torchpbt status {result.run_dir})")
    return result


if __name__ == "__main__":
    main()
