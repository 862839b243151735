"""The contracts a strategy fulfils, written down (``typing.Protocol``). Pure, no I/O.

Any object with the right ``__call__`` is a strategy; nothing needs to subclass
these. The scheduler calls them in this way:

- an **exploit** strategy: ``exploit(member, population, rng)`` returns the id of the
  member to copy, or ``None`` to keep training. ``population`` is ranked
  (:class:`~torchpbt.population.Population`), its scores oriented so that higher is
  better and as seen from the deciding member's age (README, "Scores of the same age").
- an **architecture** strategy (torchpbt.nas) is an exploit strategy that may return a
  :class:`PlanLike` (replace the member from ``base``, maybe mixing in ``donor``), and
  builds the child genome with ``child``; ``lam``/``gamma`` are its shrink-perturb weights.
- an **explore** strategy: ``explore(hparams, space, rng)`` returns new hparams, or
  ``(hparams, operations)``; one that learns from past intervals (torchpbt.PB2) says
  how many it wants in ``history_size`` and takes ``context=``.

Optional attributes, read with a default when a strategy lacks them (so a plain
function is a full strategy):

- exploit ``quantile`` (default 0.25): a failed member is replaced from this top
  share of the population, whatever the exploit rule (``pick_replacement``).
- exploit ``max_lineage_share`` (default None): that replacement prefers donors whose
  lineage holds less than this share of the population (``Truncation``'s cap).
- explore ``history_size`` (default 0): how many past intervals it is shown.
- explore ``check_space(space)``: called once before a run starts, to refuse a
  search space it cannot handle with a clear message (PB2 refuses unordered
  categorical hparams).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .population import MemberView
from .space import Space


@runtime_checkable
class PlanLike(Protocol):
    """An architecture strategy's answer: who the child is built from (read-only, so a
    frozen dataclass or a NamedTuple fulfils it)."""

    @property
    def base(self) -> int: ...

    @property
    def donor(self) -> int | None: ...

    @property
    def kind(self) -> str: ...  # "mix" | "mutate" | "copy"


class ExploitStrategy(Protocol):
    def __call__(self, member: MemberView, population: Sequence[MemberView],
                 rng: random.Random) -> int | PlanLike | None: ...


@runtime_checkable
class ArchitectureStrategy(ExploitStrategy, Protocol):
    lam: float
    gamma: float

    def child(self, space: Space, base: Mapping[str, Any], donor: Mapping[str, Any] | None,
              rng: random.Random) -> tuple[dict[str, Any], dict[str, str]]: ...


class ExploreStrategy(Protocol):
    def __call__(self, hparams: Mapping[str, Any], space: Space,
                 rng: random.Random) -> Mapping[str, Any] | tuple[Mapping[str, Any],
                                                                  Mapping[str, str]]: ...


class Storable(Protocol):
    """A strategy ``torchpbt resume`` can rebuild: ``type(self)(**self.to_spec())`` is
    an equal strategy. Values are JSON, or strategies that are Storable themselves."""

    def to_spec(self) -> dict[str, Any]: ...

