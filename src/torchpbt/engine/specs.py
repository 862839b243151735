"""Strategies as JSON specs, so ``torchpbt resume RUN_DIR`` rebuilds the exact
exploit/explore of the run from its store, with no Python objects pickled.

A strategy is stored with its arguments when its class defines ``to_spec()``
(the :class:`~torchpbt.algorithm.strategies.Storable` contract: the keyword
arguments that rebuild it, JSON or other storable strategies). The spec names the
class by import path, so any package's strategy resumes, with no list to join.
A subclass that does not define its own ``to_spec`` may behave differently, so it
is not stored with its parent's arguments. A user's top-level function or class
is stored by reference (module, name, file) and imported back. Anything else (a
lambda, a closure) cannot be rebuilt: resume then asks for it.
"""

from __future__ import annotations

from typing import Any

from ..backends.worker import ClassRef
from ..store import StoreError
from .extension import import_path

# specs written before classes were named by import path
_LEGACY = {
    "Truncation": "torchpbt.algorithm.exploit:Truncation",
    "TTest": "torchpbt.algorithm.exploit:TTest",
    "Tournament": "torchpbt.algorithm.exploit:Tournament",
    "Perturb": "torchpbt.algorithm.explore:Perturb",
    "Resample": "torchpbt.algorithm.explore:Resample",
    "PB2": "torchpbt.algorithm.pb2:PB2",
    "Mixing": "torchpbt.ext.nas.strategies:Mixing",
    "Mutation": "torchpbt.ext.nas.strategies:Mutation",
}


class SpecError(StoreError):
    """A stored strategy cannot be rebuilt in this process."""


def to_spec(obj: Any) -> dict[str, Any] | None:
    if obj is None:
        return None
    cls = type(obj)
    if "to_spec" in vars(cls):
        args = {k: to_spec(v) if "to_spec" in vars(type(v)) else v
                for k, v in obj.to_spec().items()}
        return {"type": f"{cls.__module__}:{cls.__qualname__}", "args": args,
                "repr": repr(obj)}
    bound = hasattr(obj, "__self__") and not isinstance(obj, type)  # a bound method
    target = obj if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__") \
        else None
    if target is not None and not bound and "<" not in target.__qualname__:  # no lambda/closure
        return {"type": "ref", **ClassRef.of(target).to_dict(), "repr": repr(obj)}
    return {"type": "unrestorable", "repr": repr(obj)}


def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("type"), str)


def from_spec(spec: dict[str, Any] | None, what: str) -> Any:
    if spec is None:
        return None
    kind = spec["type"]
    if kind == "ref":
        try:
            return ClassRef.from_dict(spec).resolve()
        except Exception as exc:
            raise SpecError(
                f"cannot import the run's {what} {spec['repr']} ({exc}); pass it again: "
                f"torchpbt.resume(RUN_DIR, {what}=...)."
            ) from exc
    if kind == "unrestorable":
        raise SpecError(
            f"the run's {what} {spec['repr']} was not stored (a lambda or closure cannot be); "
            f"pass it again: torchpbt.resume(RUN_DIR, {what}=...).")
    if kind in _LEGACY:
        kind, args = _LEGACY[kind], {k: v for k, v in spec.items() if k != "type"}
    else:
        args = spec["args"]
    try:
        cls = import_path(kind)
    except Exception as exc:
        raise SpecError(
            f"cannot import the run's {what} {spec.get('repr', kind)} ({exc}); pass it again: "
            f"torchpbt.resume(RUN_DIR, {what}=...).") from exc
    return cls(**{k: from_spec(v, what) if _is_spec(v) else v for k, v in args.items()})
