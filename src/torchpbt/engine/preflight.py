"""Check a member class once, in-process, before a run writes anything.

Why: without this, a member whose ``evaluate()`` returns text, whose
``setup()`` raises, or whose ``state_dict()`` holds an object checkpoints
cannot load is only found out after a run directory, a store and a whole
population of worker processes have been started; every member then fails
interval after interval and the run directory fills with a log of the same
mistake. :func:`preflight` builds one member exactly as a worker does
(``setup``, ``apply_hparams``), scores it and round-trips its state through the
same ``torch.save`` / ``torch.load(weights_only=True)`` a checkpoint goes
through, and raises one error naming the problem and the fix. It never calls
``train()``, writes no file and leaves the caller's random number generators
as they were.

NaN or inf from ``evaluate()`` is accepted: that is a numerical fault of one
member at run time (the run replaces it), not a broken member class.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from .member import as_score

PREFLIGHT_SEED = 0
_PLAIN = (str, bytes, int, float, complex, bool, type(None), torch.Tensor, torch.dtype,
          torch.device, torch.Size)


class PreflightError(RuntimeError):
    """A member class fails before training: its setup, evaluate or state is unusable."""


def preflight(member_cls: type, hparams: Mapping[str, Any], device: str = "cpu") -> None:
    """Build, score and checkpoint one member of ``member_cls`` with ``hparams``; never train.

    Raises :class:`PreflightError` when a method of the member raises, and
    ``TypeError`` when ``evaluate()`` returns something that is not a number,
    each with a message naming the class, the problem and the fix.
    """
    name = member_cls.__name__
    with _rng_kept():
        _seed(PREFLIGHT_SEED)  # random draws in setup() give the same check every time
        member = _call(member_cls, f"{name}()",
                       "Make the class constructible with no arguments and build everything "
                       "in setup(hparams)")
        member.device = device
        again = "; its own error and traceback are shown above"
        _call(lambda: member.setup(dict(hparams)), f"{name}.setup()",
              f"Fix {name}.setup(){again}")
        _call(lambda: member.apply_hparams(dict(hparams)), f"{name}.apply_hparams()",
              f"Fix {name}.apply_hparams(){again}")
        raw = _call(member.evaluate, f"{name}.evaluate()",
                    f"Make {name}.evaluate() work right after setup() (it is checked once on a "
                    "fresh member before training), e.g. by creating in setup() what it reads")
        as_score(raw, f"{name}.evaluate() (checked once before training)")  # NaN/inf pass
        state = _call(member.state_dict, f"{name}.state_dict()",
                      f"Fix {name}.state_dict(){again}")
        loaded = _round_trip(state, name)
        _call(lambda: member.load_state_dict(loaded), f"{name}.load_state_dict()",
              f"Make {name}.load_state_dict() accept what {name}.state_dict() returns after a "
              "save/load round trip, as every checkpoint makes")


def _call(fn: Callable[[], Any], where: str, fix: str) -> Any:
    try:
        return fn()
    except Exception as exc:
        raise PreflightError(
            f"{where} raised {type(exc).__name__}: {exc} (while torchpbt checked the member "
            f"before training; nothing was written). {fix}."
        ) from exc


def _round_trip(state: Any, name: str) -> Any:
    """Save and load ``state`` as a checkpoint does; say which entry is not plain data."""
    fix = (f"Keep only tensors and plain Python values (numbers, strings, lists, dicts) in "
           f"{name}.state_dict(), since checkpoints are loaded with torch.load(weights_only=True)")
    buf = io.BytesIO()
    try:
        torch.save(state, buf)
        buf.seek(0)
        return torch.load(buf, weights_only=True, map_location="cpu")
    except Exception as exc:
        found = _foreign(state, "state")
        what = (f"{found[0]} is a {type(found[1]).__module__}.{type(found[1]).__qualname__}"
                if found else _first_line(exc))
        raise PreflightError(
            f"{name}.state_dict() cannot be checkpointed: {what}. {fix}."
        ) from exc


def _foreign(obj: Any, path: str) -> tuple[str, Any] | None:
    """The first value (and its path) that is neither plain data nor a container of it."""
    if isinstance(obj, _PLAIN):
        return None
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, _PLAIN):
                return f"a key of {path}", k
            hit = _foreign(v, f"{path}[{k!r}]")
            if hit:
                return hit
        return None
    if isinstance(obj, (list, tuple, set, frozenset)):
        for i, v in enumerate(obj):
            hit = _foreign(v, f"{path}[{i}]")
            if hit:
                return hit
        return None
    return path, obj


def _first_line(exc: Exception) -> str:
    for line in str(exc).splitlines():
        if "Unsupported global" in line:
            return line.strip()
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _rng_kept:
    """Restore Python's, NumPy's and torch's (CPU) generators on exit."""

    def __enter__(self) -> None:
        self.states = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    def __exit__(self, *exc: object) -> None:
        py, npy, th = self.states
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(th)
