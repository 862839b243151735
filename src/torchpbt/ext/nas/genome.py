"""Architecture search spaces: one choice of layer per named position.

A genome is a plain ``{position: choice}`` dict (JSON-able, stored per
interval). The user's builder turns it into a ``torch.nn.Module`` whose
parameters for a position live under the module prefix ``f"{position}."``, so
mixing knows which weights belong to which gene.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any


class GenomeError(ValueError):
    """An invalid architecture space or genome."""


class ArchSpace:
    """Named positions, each with the layer choices allowed there."""

    def __init__(self, positions: Mapping[str, Sequence[str]]) -> None:
        if not isinstance(positions, Mapping) or not positions:
            raise GenomeError(
                "ArchSpace needs a non-empty dict such as {'cell0': ['conv3', 'conv5', 'skip']}."
            )
        clean: dict[str, tuple[str, ...]] = {}
        for name, choices in positions.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise GenomeError(
                    f"position name {name!r} must be a Python identifier: it is the module "
                    "prefix of that layer in the built network."
                )
            if isinstance(choices, str) or not isinstance(choices, Sequence) or not choices:
                raise GenomeError(f"position {name!r} needs a non-empty list of choices.")
            if any(not isinstance(c, str) or not c for c in choices):
                raise GenomeError(f"position {name!r}: every choice must be a non-empty string.")
            if len(set(choices)) != len(choices):
                raise GenomeError(f"position {name!r} lists a choice twice: {list(choices)}.")
            clean[name] = tuple(choices)
        self.positions = clean

    def sample(self, rng: random.Random) -> dict[str, str]:
        return {p: c[rng.randrange(len(c))] for p, c in self.positions.items()}

    def validate(self, genome: Mapping[str, Any], where: str = "genome") -> dict[str, str]:
        unknown = sorted(set(genome) - set(self.positions))
        missing = sorted(set(self.positions) - set(genome))
        if unknown or missing:
            raise GenomeError(
                f"{where} does not match the space: unknown positions {unknown}, "
                f"missing positions {missing}."
            )
        for p, choice in genome.items():
            if choice not in self.positions[p]:
                raise GenomeError(
                    f"{where}: {p}={choice!r} is not one of {list(self.positions[p])}."
                )
        return {p: genome[p] for p in self.positions}

    def position_of(self, key: str) -> str | None:
        """The position a state-dict key belongs to (by module prefix), or None (stem/head)."""
        head = key.split(".", 1)[0]
        return head if head in self.positions else None

    def genes(self) -> dict[str, Any]:
        """The positions as ``Gene`` hyperparameters, to merge into the search space."""
        from ...algorithm.space import Gene

        return {p: Gene(c) for p, c in self.positions.items()}

    def genome_of(self, hparams: Mapping[str, Any]) -> dict[str, str]:
        """This space's genes out of a member's hparams."""
        return self.validate({p: hparams[p] for p in self.positions if p in hparams},
                             "the member's hparams")

    def to_dict(self) -> dict[str, list[str]]:
        return {p: list(c) for p, c in self.positions.items()}
