"""Search-space domains: sample, perturb, resample and clip hyperparameters.

Pure logic, no I/O. Every method takes the caller's ``random.Random`` so a run
is reproducible from one seed. Values keep their Python type (an ``Int`` is
always ``int``, a ``Float`` always ``float``) so nothing drifts after a JSON
round trip through the store.
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Iterable, Mapping
from typing import Any

JSONScalar = (str, int, float, bool, type(None))


def _number(value: Any, where: str) -> float:
    """A value as float; NaN has no place in a bounded range, so it is refused, not clipped."""
    x = float(value)
    if math.isnan(x):
        raise SpaceError(f"{where}: got NaN; a hyperparameter value must be a number.")
    return x


class SpaceError(ValueError):
    """An invalid search-space definition or hyperparameter value."""


class Domain:
    """One hyperparameter's prior and its moves."""

    def sample(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def resample(self, rng: random.Random) -> Any:
        """Draw afresh from the prior (PBT's 'resample' explore move)."""
        return self.sample(rng)

    def perturb(self, value: Any, factor: float, rng: random.Random) -> Any:
        raise NotImplementedError

    def clip(self, value: Any) -> Any:
        raise NotImplementedError

    def coerce(self, value: Any) -> Any:
        """Restore the declared type of a value read back from JSON/SQL."""
        return self.clip(value)

    def contains(self, value: Any) -> bool:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


def _check_bounds(kind: str, low: float, high: float, log: bool) -> None:
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SpaceError(
                f"{kind}({low!r}, {high!r}): {name} must be a finite number; give real bounds "
                f"such as {kind}(1, 10)."
            )
    if low >= high:
        raise SpaceError(
            f"{kind}({low!r}, {high!r}): low must be < high; swap them or widen the range."
        )
    if log and low <= 0:
        raise SpaceError(
            f"{kind}({low!r}, {high!r}, log=True): a log scale needs low > 0; "
            "use a positive lower bound or log=False."
        )


class Float(Domain):
    """A real value in [low, high], uniform or log-uniform."""

    def __init__(self, low: float, high: float, log: bool = False) -> None:
        _check_bounds("Float", low, high, log)
        self.low, self.high, self.log = float(low), float(high), bool(log)

    def sample(self, rng: random.Random) -> float:
        if self.log:
            return self.clip(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return self.clip(rng.uniform(self.low, self.high))

    def perturb(self, value: Any, factor: float, rng: random.Random) -> float:
        x = float(value)
        if self.log:
            return self.clip(x * factor)
        # A linear value of 0 must still move, so steps are relative to at
        # least 1% of the range (a plain x*factor keeps 0 at 0 forever).
        step = (factor - 1.0) * max(abs(x), 0.01 * (self.high - self.low))
        return self.clip(x + step)

    def clip(self, value: Any) -> float:
        return float(min(max(_number(value, repr(self)), self.low), self.high))

    def contains(self, value: Any) -> bool:
        return isinstance(value, float) and self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Float", "low": self.low, "high": self.high, "log": self.log}

    def __repr__(self) -> str:
        return f"Float({self.low}, {self.high}, log={self.log})"


class Int(Domain):
    """An integer in [low, high]; perturbing always moves by at least one unit."""

    def __init__(self, low: int, high: int, log: bool = False) -> None:
        for name, v in (("low", low), ("high", high)):
            # numpy and other integer types are ints to a user; a bool is not
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise SpaceError(f"Int({low!r}, {high!r}): {name} must be an int; use Float for reals.")
        low, high = int(low), int(high)
        _check_bounds("Int", low, high, log)
        self.low, self.high, self.log = int(low), int(high), bool(log)

    def sample(self, rng: random.Random) -> int:
        if self.log:
            # floor of a log-uniform draw on [low, high + 1) covers every int
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
            return self.clip(math.floor(x))
        return rng.randint(self.low, self.high)

    def perturb(self, value: Any, factor: float, rng: random.Random) -> int:
        x = int(value)
        if factor == 1.0:
            return self.clip(x)
        target = x * factor if self.log else x + (factor - 1.0) * max(abs(x), 1)
        # a huge factor gives an inf target, which round() cannot take
        moved = round(min(max(target, self.low - 1.0), self.high + 1.0))
        # int(x*0.8) ratchets small values to the bound; always move one unit
        # in the factor's direction instead.
        if factor > 1.0:
            moved = max(moved, x + 1)
        else:
            moved = min(moved, x - 1)
        return self.clip(moved)

    def clip(self, value: Any) -> int:
        # an int stays exact (float() would round ints above 2**53)
        v = value if isinstance(value, int) else round(_number(value, repr(self)))
        return int(min(max(v, self.low), self.high))

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Int", "low": self.low, "high": self.high, "log": self.log}

    def __repr__(self) -> str:
        return f"Int({self.low}, {self.high}, log={self.log})"


class Choice(Domain):
    """One of a list of JSON-able values; ordered choices perturb to a neighbour."""

    def __init__(self, values: Iterable[Any], ordered: bool = False) -> None:
        vals = list(values)
        if not vals:
            raise SpaceError(
                "Choice([]) has no values; give at least one value, e.g. Choice(['adam', 'sgd'])."
            )
        for v in vals:
            if not isinstance(v, JSONScalar):
                raise SpaceError(
                    f"Choice value {v!r} is a {type(v).__name__}; only str, int, float, bool "
                    "or None can be stored. Map names to objects inside your Member."
                )
            if isinstance(v, float) and not math.isfinite(v):
                raise SpaceError(
                    f"Choice({vals!r}): {v!r} is not a finite number and cannot be stored; drop "
                    "it, or use a name such as 'inf' and map it inside your Member."
                )
        if len({(type(v), v) for v in vals}) != len(vals):
            raise SpaceError(f"Choice({vals!r}) has repeated values; list each value once.")
        self.values, self.ordered = vals, bool(ordered)

    def _index(self, value: Any) -> int:
        for i, v in enumerate(self.values):
            if type(v) is type(value) and v == value:
                return i
        for i, v in enumerate(self.values):  # int/float mix after JSON, e.g. 1 vs 1.0
            if v == value and not isinstance(v, bool) and not isinstance(value, bool):
                return i
        raise SpaceError(f"{value!r} is not one of {self.values!r}.")

    def sample(self, rng: random.Random) -> Any:
        return self.values[rng.randrange(len(self.values))]

    def perturb(self, value: Any, factor: float, rng: random.Random) -> Any:
        if factor == 1.0:  # a neutral factor leaves every domain unchanged
            return self.clip(value)
        if not self.ordered or len(self.values) == 1:
            return self.resample(rng)
        i = self._index(value)
        step = 1 if factor > 1.0 else -1
        j = i + step
        if not 0 <= j < len(self.values):  # at an end: the only neighbour
            j = i - step
        return self.values[j]

    def clip(self, value: Any) -> Any:
        return self.values[self._index(value)]

    def contains(self, value: Any) -> bool:
        try:
            self._index(value)
        except SpaceError:
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Choice", "values": list(self.values), "ordered": self.ordered}

    def __repr__(self) -> str:
        return f"Choice({self.values!r}, ordered={self.ordered})"


class Gene(Choice):
    """One architecture position: a layer choice the hparam explore never touches.

    Genes change only through an architecture strategy (``torchpbt.nas.Mixing``,
    ``Mutation``) or a plain exploit copying a donor's architecture.
    """

    def __init__(self, values: Iterable[Any]) -> None:
        vals = list(values) if not isinstance(values, (str, bytes)) else []
        if not vals or any(not isinstance(v, str) or not v for v in vals):
            raise SpaceError(
                f"Gene({values!r}) needs layer names as non-empty strings; give e.g. "
                "Gene(['conv3', 'conv5', 'skip'])."
            )
        super().__init__(vals, ordered=False)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Gene", "values": list(self.values)}

    def __repr__(self) -> str:
        return f"Gene({self.values!r})"


class Space(Mapping[str, Domain]):
    """A validated name → Domain mapping."""

    def __init__(self, domains: Mapping[str, Domain]) -> None:
        if isinstance(domains, Space):
            domains = dict(domains.items())
        if not isinstance(domains, Mapping) or not domains:
            raise SpaceError(
                f"The search space {domains!r} is not a non-empty dict; give one such as "
                "{'lr': torchpbt.Float(1e-4, 1e-1, log=True)}."
            )
        for name, dom in domains.items():
            if not isinstance(name, str) or not name:
                raise SpaceError(f"Hyperparameter name {name!r} must be a non-empty string.")
            if not isinstance(dom, Domain):
                raise SpaceError(
                    f"Hyperparameter {name!r} is {dom!r}; wrap it as torchpbt.Float, Int or Choice."
                )
        self._d = dict(domains)

    def __getitem__(self, key: str) -> Domain:
        return self._d[key]

    def __iter__(self):
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def sample(self, rng: random.Random) -> dict[str, Any]:
        return {name: dom.sample(rng) for name, dom in self._d.items()}

    @property
    def genes(self) -> list[str]:
        """Architecture positions (``Gene`` domains), in declaration order."""
        return [n for n, d in self._d.items() if isinstance(d, Gene)]

    def tunable(self) -> Space | None:
        """The hyperparameters explore may move: all but the genes (None if only genes)."""
        if not self.genes:
            return self
        rest = {n: d for n, d in self._d.items() if not isinstance(d, Gene)}
        return Space(rest) if rest else None

    def check_names(self, names: Iterable[str], where: str) -> None:
        unknown = sorted(set(names) - set(self._d))
        if unknown:
            raise SpaceError(
                f"{where} names unknown hyperparameter(s) {unknown}; "
                f"the space has {sorted(self._d)}: use only those names."
            )

    def validate(self, hparams: Mapping[str, Any], where: str = "hparams") -> dict[str, Any]:
        """Check names and bounds; return the values with their declared types."""
        self.check_names(hparams, where)
        missing = sorted(set(self._d) - set(hparams))
        if missing:
            raise SpaceError(
                f"{where} lacks hyperparameter(s) {missing}; give a value for every name in "
                "the space."
            )
        out = {}
        for name, dom in self._d.items():
            v = hparams[name]
            if isinstance(dom, Choice):
                if not dom.contains(v):
                    raise SpaceError(
                        f"{where}: {name}={v!r} is not one of {dom.values!r}; pick one of them."
                    )
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                dom.low <= v <= dom.high  # type: ignore[attr-defined]
            ):
                raise SpaceError(
                    f"{where}: {name}={v!r} is outside {dom!r}; give a number within its "
                    "bounds (or widen the space)."
                )
            elif isinstance(dom, Int) and not float(v).is_integer():
                # 2.5 silently becoming 2 would hide a mistake; 3.0 (from JSON) is fine
                raise SpaceError(
                    f"{where}: {name}={v!r} is not a whole number for {dom!r}; give an int."
                )
            out[name] = dom.coerce(v)
        return out

    def coerce(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Restore declared types after a JSON round trip (ints stay ints, floats floats)."""
        return {name: self._d[name].coerce(v) if name in self._d else v for name, v in hparams.items()}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dom.to_dict() for name, dom in self._d.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> Space:
        kinds: dict[str, Any] = {"Float": Float, "Int": Int, "Choice": Choice, "Gene": Gene}
        doms: dict[str, Domain] = {}
        for name, d in data.items():
            args = dict(d)
            kind = kinds[args.pop("type")]
            doms[name] = kind(**args)
        return cls(doms)

    def __repr__(self) -> str:
        return f"Space({self._d!r})"
