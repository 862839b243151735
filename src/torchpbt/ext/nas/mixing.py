"""The PBT-NAS replacement step: pick parents, mix genomes, inherit weights.

Every round the bottom ``fraction`` of the population is replaced. For each
replaced member two parents are drawn from the top ``fraction``; the fitter is
the *base*, and each gene comes from the other parent (the *donor*) with
probability ``p_donor``. Layers whose gene comes from the base are copied
exactly; layers from the donor are shrink-perturbed,
``W = λ·W_donor + γ·W_fresh`` (λ=0.4, γ=0.1 in the paper; λ=1, γ=0 is a plain
copy; λ=0, γ=1 a re-initialisation). Layers outside any gene (stem, head) come
from the base.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .genome import ArchSpace


def shrink_perturb(donor: torch.Tensor, fresh: torch.Tensor, lam: float = 0.4,
                   gamma: float = 0.1) -> torch.Tensor:
    """λ·donor + γ·fresh, in the donor's dtype; integer buffers are copied as they are."""
    if donor.shape != fresh.shape:
        raise ValueError(f"shrink-perturb needs equal shapes, got {tuple(donor.shape)} "
                         f"and {tuple(fresh.shape)}")
    if not torch.is_floating_point(donor):
        return donor.clone()  # e.g. BatchNorm's num_batches_tracked
    return lam * donor + gamma * fresh.to(donor.dtype)


def select_parents(scores: Mapping[int, float], rng: random.Random,
                   fraction: float = 0.25) -> dict[int, tuple[int, int]]:
    """Replaced member → (base, donor): bottom ``fraction`` replaced, parents from the top.

    Scores are oriented (higher is better). With fewer than two members in the
    top, nobody is replaced (mixing needs two parents).
    """
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction={fraction!r}: must be in (0, 0.5], e.g. 0.25.")
    ranked = sorted(scores, key=lambda m: (scores[m], rng.random()), reverse=True)
    k = min(len(ranked) // 2, max(1, math.ceil(fraction * len(ranked) - 1e-9)))
    top, bottom = ranked[:k], ranked[len(ranked) - k:]
    if len(top) < 2:
        return {}
    out = {}
    for m in bottom:
        a, b = rng.sample(top, 2)
        out[m] = (a, b) if scores[a] >= scores[b] else (b, a)
    return out


@dataclass(frozen=True)
class MixResult:
    genome: dict[str, str]
    origin: dict[str, str]  # position → "base" | "donor"


def mix_genomes(space: ArchSpace, base: Mapping[str, str], donor: Mapping[str, str],
                rng: random.Random, p_donor: float = 0.25) -> MixResult:
    """Each gene from the donor with probability ``p_donor``, else from the base."""
    if not 0 <= p_donor <= 1:
        raise ValueError(f"p_donor={p_donor!r}: must be in [0, 1].")
    base, donor = space.validate(base, "base genome"), space.validate(donor, "donor genome")
    genome, origin = {}, {}
    for p in space.positions:
        take = rng.random() < p_donor
        genome[p], origin[p] = (donor[p], "donor") if take else (base[p], "base")
    return MixResult(genome, origin)


def mix_state(space: ArchSpace, fresh: Mapping[str, torch.Tensor],
              base: Mapping[str, torch.Tensor], donor: Mapping[str, torch.Tensor] | None,
              origin: Mapping[str, str], lam: float = 0.4,
              gamma: float = 0.1) -> dict[str, torch.Tensor]:
    """The child's state dict: ``fresh`` is the child network's own fresh initialisation."""
    out: dict[str, torch.Tensor] = {}
    for key, init in fresh.items():
        pos = space.position_of(key)
        where = origin.get(pos, "base") if pos is not None else "base"
        if where == "donor":
            out[key] = shrink_perturb(donor[key], init, lam, gamma)
        elif where == "fresh":  # a mutated layer: its own fresh initialisation
            out[key] = init.clone()
        else:
            src = base[key]
            if src.shape != init.shape:
                raise ValueError(f"{key}: base has shape {tuple(src.shape)}, the child "
                                 f"{tuple(init.shape)}; the builder must give a gene the same "
                                 "shapes whatever the other genes are")
            out[key] = src.clone()
    return out


def gene_origins(results: Sequence[MixResult]) -> float:
    """Fraction of genes taken from the donor (for checking p_donor)."""
    total = sum(len(r.origin) for r in results)
    return sum(v == "donor" for r in results for v in r.origin.values()) / max(total, 1)
