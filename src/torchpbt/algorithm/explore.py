"""Explore strategies: new hyperparameters from old ones, plus an audit record.

Each strategy returns ``(new_hparams, operations)``; ``operations`` maps every
hyperparameter to what was done to it (``"*1.2"``, ``"resample"``, ...) and
is stored with the exploit event.

A model-based strategy (``torchpbt.PB2``) also needs what earlier intervals
achieved: if it has a ``history_size`` attribute, the scheduler keeps that many
latest :class:`Observation` s and passes them, with the hparams other members are
training with, as ``context=ExploreContext(...)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .exploit import check_strategy_call
from .space import Choice, Space, SpaceError

ExploreResult = tuple[dict[str, Any], dict[str, str]]
ExploreFn = Callable[[Mapping[str, Any], Space, random.Random], Any]


@dataclass(frozen=True)
class Observation:
    """One finished interval: when it ended, the hparams it trained with, and how much
    the score improved over the score of the weights it started from.

    ``time`` counts ready intervals (step / ready_every); ``improvement`` is oriented
    (higher is better) and ``None`` when the interval failed.
    """

    time: float
    hparams: dict[str, Any]
    improvement: float | None


@dataclass(frozen=True)
class ExploreContext:
    """What a history-based explore may know beyond the hparams it is given."""

    now: float  # the time at which the interval the new hparams train for will end
    observations: Sequence[Observation] = ()
    # (time the interval ends, hparams) of every other member still training
    pending: Sequence[tuple[float, dict[str, Any]]] = field(default=())


class Perturb:
    """Multiply each value by a factor from ``factors``; resample with some probability."""

    def __init__(
        self, factors: Sequence[float] = (0.8, 1.2), resample_probability: float = 0.25
    ) -> None:
        fs = list(factors) if not isinstance(factors, (str, bytes)) else []
        if not fs or any(
            isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f)
            or f <= 0 for f in fs
        ):  # a NaN factor would turn every perturbed value into NaN
            raise ValueError(
                f"Perturb(factors={factors!r}): factors must be finite numbers > 0; give e.g. "
                "(0.8, 1.2)."
            )
        if not (isinstance(resample_probability, (int, float)) and 0 <= resample_probability <= 1):
            raise ValueError(
                f"Perturb(resample_probability={resample_probability!r}): must be in [0, 1]; "
                "give e.g. 0.25."
            )
        self.factors = tuple(float(f) for f in fs)
        self.resample_probability = float(resample_probability)

    def __call__(
        self, hparams: Mapping[str, Any], space: Space, rng: random.Random
    ) -> ExploreResult:
        new, ops = {}, {}
        for name, dom in space.items():
            if rng.random() < self.resample_probability:
                new[name], ops[name] = dom.resample(rng), "resample"
            else:
                factor = self.factors[rng.randrange(len(self.factors))]
                new[name] = dom.perturb(hparams[name], factor, rng)
                # an unordered Choice has no direction: its perturb is a resample, say so
                unordered = isinstance(dom, Choice) and not dom.ordered and factor != 1.0
                ops[name] = "resample" if unordered else f"*{factor:g}"
        return new, ops

    def to_spec(self) -> dict[str, Any]:
        return {"factors": list(self.factors), "resample_probability": self.resample_probability}

    def __repr__(self) -> str:
        return f"Perturb(factors={self.factors}, resample_probability={self.resample_probability})"


class Resample:
    """Draw every hyperparameter afresh from its prior."""

    def __call__(
        self, hparams: Mapping[str, Any], space: Space, rng: random.Random
    ) -> ExploreResult:
        return {n: d.resample(rng) for n, d in space.items()}, {n: "resample" for n in space}

    def to_spec(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return "Resample()"


def history_size(explore: object) -> int:
    """Observations an explore strategy wants (0: it needs none, like Perturb)."""
    n = getattr(explore, "history_size", 0)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


def apply_explore(
    explore: ExploreFn, hparams: Mapping[str, Any], space: Space, rng: random.Random,
    context: ExploreContext | None = None,
) -> ExploreResult:
    """Run any explore callable and force its output back into the space."""
    if context is None:
        out = explore(dict(hparams), space, rng)
    else:
        out = explore(dict(hparams), space, rng, context=context)  # type: ignore[call-arg]
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping):
        new, ops = dict(out[0]), {k: str(v) for k, v in out[1].items()}
    elif isinstance(out, Mapping):
        new, ops = dict(out), {k: "custom" for k in out if out[k] != hparams.get(k)}
    else:
        raise TypeError(
            f"explore {explore!r} returned {type(out).__name__}; return a dict of hparams "
            "or (hparams, operations)."
        )
    space.check_names(new, f"explore {explore!r}")
    for name, v in new.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise SpaceError(f"explore {explore!r} returned {name}={v!r}; return finite values "
                             f"inside the space ({space[name]!r}).")
    merged = {**hparams, **new}
    return {n: space[n].clip(merged[n]) for n in space}, ops


def check_explore(explore: object, space: Space | None = None) -> None:
    """Refuse a non-strategy, or one that cannot handle the space, before the run starts."""
    if explore is not None and not callable(explore):
        raise ValueError(
            f"explore={explore!r} is not a strategy; use torchpbt.Perturb(), Resample(), PB2(), "
            "None, or a callable(hparams, space, rng) -> hparams or (hparams, operations)."
        )
    check_strategy_call("explore", explore, "hparams, space, rng")
    check_space = getattr(explore, "check_space", None)
    if space is not None and callable(check_space) and not isinstance(explore, type):
        check_space(space)
