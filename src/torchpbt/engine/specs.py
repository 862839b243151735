"""Strategies as JSON specs, so ``torchpbt resume RUN_DIR`` rebuilds the exact
exploit/explore of the run from its store, with no Python objects pickled.

Built-in strategies are stored with their arguments; a user's top-level
function or class is stored by reference (module, name, file) and imported back.
Anything else (a lambda, a closure) cannot be rebuilt: resume then asks for it.
"""

from __future__ import annotations

from typing import Any

from ..algorithm.exploit import Tournament, Truncation, TTest
from ..algorithm.explore import Perturb, Resample
from ..algorithm.pb2 import PB2
from ..backends.worker import ClassRef
from ..store import StoreError


class SpecError(StoreError):
    """A stored strategy cannot be rebuilt in this process."""


def to_spec(obj: Any) -> dict[str, Any] | None:
    if obj is None:
        return None
    # exact types: a subclass may behave differently, so it is stored by reference
    if type(obj) is Truncation:
        return {"type": "Truncation", "quantile": obj.quantile, "copy_ties": obj.copy_ties}
    if type(obj) is TTest:
        return {"type": "TTest", "alpha": obj.alpha, "window": obj.window}
    if type(obj) is Perturb:
        return {"type": "Perturb", "factors": list(obj.factors),
                "resample_probability": obj.resample_probability}
    if type(obj) is PB2:
        return {"type": "PB2", "min_points": obj.min_points, "max_points": obj.max_points,
                "fallback": to_spec(obj.fallback)}
    from ..ext.nas.strategies import Mixing, Mutation

    if type(obj) is Mixing:
        return {"type": "Mixing", "fraction": obj.fraction, "p_donor": obj.p_donor,
                "lam": obj.lam, "gamma": obj.gamma}
    if type(obj) is Mutation:
        return {"type": "Mutation", "fraction": obj.fraction}
    if type(obj) in (Tournament, Resample):
        return {"type": type(obj).__name__}
    bound = hasattr(obj, "__self__") and not isinstance(obj, type)  # a bound method
    target = obj if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__") \
        else None
    if target is not None and not bound and "<" not in target.__qualname__:  # no lambda/closure
        ref = ClassRef.of(target)
        return {"type": "ref", "module": ref.module, "qualname": ref.qualname, "path": ref.path,
                "repr": repr(obj)}
    return {"type": "unrestorable", "repr": repr(obj)}


def from_spec(spec: dict[str, Any] | None, what: str) -> Any:
    if spec is None:
        return None
    kind = spec["type"]
    from ..ext.nas.strategies import Mixing, Mutation

    builtins: dict[str, Any] = {"Truncation": Truncation, "TTest": TTest, "Perturb": Perturb,
                                "Tournament": Tournament, "Resample": Resample,
                                "Mixing": Mixing, "Mutation": Mutation}
    if kind == "PB2":
        return PB2(spec["min_points"], spec["max_points"], from_spec(spec["fallback"], what))
    if kind in builtins:
        return builtins[kind](**{k: v for k, v in spec.items() if k != "type"})
    if kind == "ref":
        try:
            return ClassRef(spec["module"], spec["qualname"], spec["path"]).resolve()
        except Exception as exc:
            raise SpecError(
                f"cannot import the run's {what} {spec['repr']} ({exc}); pass it again: "
                f"torchpbt.resume(RUN_DIR, {what}=...)."
            ) from exc
    raise SpecError(
        f"the run's {what} {spec['repr']} was not stored (a lambda or closure cannot be); "
        f"pass it again: torchpbt.resume(RUN_DIR, {what}=...)."
    )
