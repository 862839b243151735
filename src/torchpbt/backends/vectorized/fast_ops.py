"""Faster stand-ins for functions whose ``vmap`` rule is slow, used while the backend vmaps.

``F.cross_entropy`` with class-index targets goes through a Python decomposition under
``vmap`` (one per call, and a sympy import on first use); the same loss written as
``log_softmax`` + ``gather`` has fast batching rules. :class:`FastOps` swaps it in for
the calls it covers exactly (no class weights, 2-d logits, integer targets) and passes
every other call through unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def cross_entropy(input: torch.Tensor, target: torch.Tensor, *, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    """``F.cross_entropy`` for ``(N, C)`` logits and ``(N,)`` class indices, same values."""
    logp = input.log_softmax(-1)
    valid = target != ignore_index
    picked = logp.gather(-1, torch.where(valid, target, 0).unsqueeze(-1)).squeeze(-1)
    loss = -picked if not label_smoothing else (
        -(1 - label_smoothing) * picked - label_smoothing * logp.mean(-1))
    loss = loss * valid
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum()


_KNOWN = {"ignore_index", "reduction", "label_smoothing"}


def _covered(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if len(args) != 2 or set(kwargs) - _KNOWN - {"weight", "size_average", "reduce"}:
        return False
    if any(kwargs.get(k) is not None for k in ("weight", "size_average", "reduce")):
        return False
    x, y = args
    return (x.ndim == 2 and y.ndim == 1 and not y.dtype.is_floating_point
            and kwargs.get("reduction", "mean") in ("mean", "sum", "none"))


class FastOps(TorchFunctionMode):
    """While active, covered ``F.cross_entropy`` calls run :func:`cross_entropy`."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.cross_entropy and _covered(args, kwargs):
            return cross_entropy(*args, **{k: v for k, v in kwargs.items() if k in _KNOWN})
        return func(*args, **kwargs)
