"""Optimizers that step P stacked members at once, each with its own hyperparameters.

Hyperparameters are tensors of P values (``set_hparams`` replaces them, e.g. after
explore); the update of member i equals ``torch.optim.SGD``/``Adam``/``AdamW``'s
with member i's values. Per-member step counts keep Adam's bias correction right
after a copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def _per_member(value: float | Sequence[float] | torch.Tensor, size: int, name: str,
                like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(size).clone()
    if t.shape != (size,):
        raise ValueError(f"{name}: give one value per member ({size}), got shape "
                         f"{tuple(t.shape)}.")
    return t


class _VectorOptimizer:
    HPARAMS: tuple[str, ...] = ()

    def __init__(self, params: Mapping[str, torch.Tensor], **hparams: object) -> None:
        self.params = dict(params)
        first = next(iter(self.params.values()))
        self.size = first.shape[0]
        self._like = first
        self.hparams: dict[str, torch.Tensor] = {}
        self.set_hparams(**hparams)  # type: ignore[arg-type]
        self.state: dict[str, dict[str, torch.Tensor]] = {k: {} for k in self.params}

    def set_hparams(self, **values: float | Sequence[float] | torch.Tensor) -> None:
        unknown = sorted(set(values) - set(self.HPARAMS))
        if unknown:
            raise KeyError(f"{type(self).__name__} has no hparam(s) {unknown}; it has "
                           f"{list(self.HPARAMS)}.")
        for k, v in values.items():
            self.hparams[k] = _per_member(v, self.size, k, self._like)

    def _b(self, name: str, p: torch.Tensor) -> torch.Tensor:
        """The hparam shaped to broadcast over one stacked parameter."""
        return self.hparams[name].view(-1, *([1] * (p.ndim - 1)))

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    def copy_member(self, dst: int, src: int) -> None:
        for st in self.state.values():
            for v in st.values():
                v[dst] = v[src]

    def state_dict(self) -> dict[str, object]:
        return {"hparams": {k: v.clone() for k, v in self.hparams.items()},
                "state": {k: {n: v.clone() for n, v in st.items()} for k, st in self.state.items()}}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.hparams = {k: v.clone() for k, v in state["hparams"].items()}  # type: ignore[union-attr]
        self.state = {k: {n: v.clone() for n, v in st.items()}
                      for k, st in state["state"].items()}  # type: ignore[union-attr]


class VectorSGD(_VectorOptimizer):
    """SGD with per-member ``lr``, ``momentum``, ``weight_decay`` (torch.optim.SGD's rule)."""

    HPARAMS = ("lr", "momentum", "weight_decay")

    def __init__(self, params: Mapping[str, torch.Tensor], *, lr: object,
                 momentum: object = 0.0, weight_decay: object = 0.0,
                 nesterov: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.nesterov = nesterov

    def set_hparams(self, **values: float | Sequence[float] | torch.Tensor) -> None:
        super().set_hparams(**values)
        # read once per change, not per step (on a GPU every read waits for the device)
        self._any_still = bool((self.hparams["momentum"] == 0).any())

    @torch.no_grad()
    def step(self) -> None:
        # in place on the gradient (zero_grad drops it): these tensors are P members large
        any_still = self._any_still
        for k, p in self.params.items():
            if p.grad is None:
                continue
            g = p.grad.addcmul_(self._b("weight_decay", p), p)
            mom = self._b("momentum", p)
            st = self.state[k]
            # a zero buffer is torch's "no buffer yet" (its first buffer is the gradient),
            # so fresh and trained members can share a batch
            buf = st.get("momentum_buffer")
            if buf is None:
                buf = st["momentum_buffer"] = torch.zeros_like(p)
            if any_still:  # members with momentum 0 keep their buffer and step on the
                # plain gradient, as torch's SGD does
                buf.copy_(torch.where(mom == 0, buf, mom * buf + g))
                d = g + mom * buf if self.nesterov else torch.where(mom == 0, g, buf)
            else:
                buf.mul_(mom).add_(g)
                d = g.addcmul_(mom, buf) if self.nesterov else buf
            p.addcmul_(self._b("lr", p), d, value=-1)


class VectorAdam(_VectorOptimizer):
    """Adam (``decoupled=False``) or AdamW (``decoupled=True``) with per-member ``lr``,
    ``beta1``, ``beta2``, ``eps`` and ``weight_decay``."""

    HPARAMS = ("lr", "beta1", "beta2", "eps", "weight_decay")

    def __init__(self, params: Mapping[str, torch.Tensor], *, lr: object, beta1: object = 0.9,
                 beta2: object = 0.999, eps: object = 1e-8, weight_decay: object = 0.0,
                 decoupled: bool = False) -> None:
        super().__init__(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                         weight_decay=weight_decay)
        self.decoupled = decoupled

    @torch.no_grad()
    def step(self) -> None:
        for k, p in self.params.items():
            if p.grad is None:
                continue
            lr, wd = self._b("lr", p), self._b("weight_decay", p)
            b1, b2, eps = self._b("beta1", p), self._b("beta2", p), self._b("eps", p)
            st = self.state[k]
            if not st:
                st["step"] = torch.zeros(self.size, dtype=p.dtype, device=p.device)
                st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
            g = p.grad
            if self.decoupled:
                p.mul_(1 - lr * wd)
            else:
                g = g.addcmul_(wd, p)  # in place: zero_grad drops the gradient
            st["step"] += 1
            t = st["step"].view(-1, *([1] * (p.ndim - 1)))
            st["exp_avg"].mul_(b1).addcmul_(1 - b1, g)
            st["exp_avg_sq"].mul_(b2).addcmul_(g * (1 - b2), g)
            denom = (st["exp_avg_sq"] / (1 - b2 ** t)).sqrt_().add_(eps)
            p.addcdiv_(st["exp_avg"] * (lr / (1 - b1 ** t)), denom, value=-1)
