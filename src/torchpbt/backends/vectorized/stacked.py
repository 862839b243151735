"""P copies of one ``nn.Module`` as stacked tensors, run together with ``vmap``."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class StackedModules:
    """The modules' parameters and buffers stacked along a new first dimension (P).

    ``__call__(x)`` takes inputs shaped ``(P, batch, ...)`` (each member its own
    batch) and returns ``(P, batch, ...)``. Parameters are leaf tensors, so one
    ``backward()`` of the summed per-member losses gives each member the gradient of
    its own loss (the members share nothing). Buffers such as BatchNorm's running
    statistics are stacked too and updated per member by the forward pass.
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        if not modules:
            raise ValueError("StackedModules needs at least one module.")
        kinds = {type(m) for m in modules}
        if len(kinds) > 1:
            raise ValueError(f"StackedModules needs modules of one class; got "
                             f"{sorted(k.__name__ for k in kinds)}.")
        params, buffers = stack_module_state(list(modules))
        self.params: dict[str, torch.Tensor] = {k: v.detach().requires_grad_(True)
                                                for k, v in params.items()}
        self.buffers: dict[str, torch.Tensor] = dict(buffers)
        self.size = len(modules)
        self._base = copy.deepcopy(modules[0]).to("meta")  # structure only, no storage
        self._training = modules[0].training

        def one(p: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                x: torch.Tensor) -> torch.Tensor:
            return functional_call(self._base, (p, b), (x,))

        # randomness="different": each member draws its own dropout masks
        self._forward: Callable[..., torch.Tensor] = vmap(one, randomness="different")

    @classmethod
    def build(cls, factory: Callable[[int], nn.Module], size: int) -> StackedModules:
        """``factory(i)`` builds member i's module (seed it inside to fix its weights)."""
        return cls([factory(i) for i in range(size)])

    def train(self, mode: bool = True) -> StackedModules:
        self._base.train(mode)
        self._training = mode
        return self

    def eval(self) -> StackedModules:
        return self.train(False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.size:
            raise ValueError(f"input's first dimension is {x.shape[0]}; give one batch per "
                             f"member: shape ({self.size}, batch, ...).")
        return self._forward(self.params, self.buffers, x)

    def member_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's weights as an ordinary ``state_dict`` of the module."""
        return {k: v[i].detach().clone() for k, v in {**self.params, **self.buffers}.items()}

    def load_member_state_dict(self, i: int, state: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, v in {**self.params, **self.buffers}.items():
                v[i].copy_(state[k])

    def to(self, device: str | torch.device) -> StackedModules:
        with torch.no_grad():
            self.params = {k: v.detach().to(device).requires_grad_(True)
                           for k, v in self.params.items()}
            self.buffers = {k: v.to(device) for k, v in self.buffers.items()}
        return self


def copy_member(stack: StackedModules, dst: int, src: int, *optimizers: object) -> None:
    """Exploit in memory: member ``dst`` takes ``src``'s weights, buffers and optimizer
    state (a slice copy; nothing is written or rebuilt)."""
    with torch.no_grad():
        for v in (*stack.params.values(), *stack.buffers.values()):
            v[dst].copy_(v[src])
    for opt in optimizers:
        opt.copy_member(dst, src)  # type: ignore[attr-defined]
