"""Architecture strategies: what a bottom member becomes in PBT-NAS, and its baseline.

Both are exploit strategies (``torchpbt.run(..., exploit=Mixing())``): called
with a population snapshot they return a :class:`Plan` (or ``None``), and the
scheduler asks :meth:`child` for the new genome and which parent each layer's
weights come from. Pure decision logic: numbers and dicts in, no torch.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...algorithm.exploit import MemberView, quantile_count, ranked
from ...algorithm.space import Space
from .genome import ArchSpace
from .mixing import mix_genomes


@dataclass(frozen=True)
class Plan:
    """Replace a member from ``base`` (weights, hparams); ``donor`` is the second parent."""

    base: int
    donor: int | None
    kind: str  # "mix" | "mutate" | "copy" (a plain copy: no second parent available)


def _check_fraction(owner: str, fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 < fraction <= 0.5:
        raise ValueError(f"{owner}(fraction={fraction!r}): must be in (0, 0.5], e.g. 0.25 "
                         "(bottom 25% replaced, parents from the top 25%).")
    return float(fraction)


def _better_top(member: MemberView, population: Sequence[MemberView], rng: random.Random,
                fraction: float) -> list[MemberView]:
    """The top ``fraction`` strictly better than ``member``, if ``member`` is in the bottom."""
    pop = ranked(population, rng)
    k = quantile_count(len(pop), fraction)
    rank = pop.ranking.rank_of(member.member_id)
    if k == 0 or rank is None or rank < len(pop) - k:
        return []
    return [pop.best(i) for i in range(min(k, pop.ranking.count_above(member.score)))]


def _genes(space: Space) -> ArchSpace:
    genes = space.genes
    if not genes:
        raise ValueError("an architecture strategy needs Gene hyperparameters in the space; "
                         "add them with ArchSpace.genes().")
    return ArchSpace({g: space[g].values for g in genes})  # type: ignore[attr-defined]


class Mixing:
    """PBT-NAS: the bottom ``fraction`` is replaced by a mix of two parents from the top.

    The fitter parent is the base (its weights, hparams and genes); each gene comes
    from the other parent with probability ``p_donor``, its layer's weights
    shrink-perturbed: W = lam·W_donor + gamma·W_fresh. ``lam=1, gamma=0`` copies
    the donor's layer, ``lam=0, gamma=1`` re-initialises it.
    """

    def __init__(self, fraction: float = 0.25, p_donor: float = 0.25, lam: float = 0.4,
                 gamma: float = 0.1) -> None:
        self.fraction = _check_fraction("Mixing", fraction)
        for name, v in (("p_donor", p_donor), ("lam", lam), ("gamma", gamma)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"Mixing({name}={v!r}): must be a number in [0, 1].")
        if lam == 0 and gamma == 0:
            raise ValueError("Mixing(lam=0, gamma=0) would zero every donor layer; use "
                             "lam=1, gamma=0 to copy or lam=0, gamma=1 to re-initialise.")
        self.p_donor, self.lam, self.gamma = float(p_donor), float(lam), float(gamma)

    @property
    def quantile(self) -> float:  # the share a failed member's replacement is drawn from
        return self.fraction

    def __call__(self, member: MemberView, population: Sequence[MemberView],
                 rng: random.Random) -> Plan | None:
        top = _better_top(member, population, rng, self.fraction)
        if not top:
            return None
        if len(top) == 1:  # mixing needs two parents: copy the one there is
            return Plan(top[0].member_id, None, "copy")
        a, b = rng.sample(top, 2)
        base, donor = (a, b) if (a.score, a.tiebreak) >= (b.score, b.tiebreak) else (b, a)
        return Plan(base.member_id, donor.member_id, "mix")

    def child(self, space: Space, base: Mapping[str, Any], donor: Mapping[str, Any] | None,
              rng: random.Random) -> tuple[dict[str, str], dict[str, str]]:
        arch = _genes(space)
        if donor is None:
            return {g: base[g] for g in arch.positions}, {g: "base" for g in arch.positions}
        out = mix_genomes(arch, {g: base[g] for g in arch.positions},
                          {g: donor[g] for g in arch.positions}, rng, self.p_donor)
        return out.genome, out.origin

    def to_spec(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "p_donor": self.p_donor, "lam": self.lam,
                "gamma": self.gamma}

    def __repr__(self) -> str:
        return (f"Mixing(fraction={self.fraction}, p_donor={self.p_donor}, lam={self.lam}, "
                f"gamma={self.gamma})")


class Mutation:
    """Baseline (mutation-based PBT): the bottom copies a better top member, then one
    gene changes to another choice and that layer starts from a fresh initialisation."""

    lam, gamma = 0.0, 1.0  # a mutated layer is fresh

    def __init__(self, fraction: float = 0.25) -> None:
        self.fraction = _check_fraction("Mutation", fraction)

    @property
    def quantile(self) -> float:
        return self.fraction

    def __call__(self, member: MemberView, population: Sequence[MemberView],
                 rng: random.Random) -> Plan | None:
        top = _better_top(member, population, rng, self.fraction)
        return Plan(top[rng.randrange(len(top))].member_id, None, "mutate") if top else None

    def child(self, space: Space, base: Mapping[str, Any], donor: Mapping[str, Any] | None,
              rng: random.Random) -> tuple[dict[str, str], dict[str, str]]:
        arch = _genes(space)
        genome = {g: base[g] for g in arch.positions}
        origin = {g: "base" for g in arch.positions}
        movable = [g for g, c in arch.positions.items() if len(c) > 1]
        if movable:
            g = movable[rng.randrange(len(movable))]
            others = [c for c in arch.positions[g] if c != genome[g]]
            genome[g], origin[g] = others[rng.randrange(len(others))], "fresh"
        return genome, origin

    def to_spec(self) -> dict[str, Any]:
        return {"fraction": self.fraction}

    def __repr__(self) -> str:
        return f"Mutation(fraction={self.fraction})"
