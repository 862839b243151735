"""NASMember: a TorchMember whose network is built from the genes in its hparams.

It knows how to become a mixed child: build the child's architecture (fresh
weights), take each layer from the base, the donor (shrink-perturbed) or keep
it fresh, and carry the base's optimizer state only for layers that really
are the base's, with the same shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ...engine.member import TorchMember
from .genome import ArchSpace, GenomeError
from .mixing import mix_state


class NASMember(TorchMember):
    """Declare ``arch = ArchSpace({...})`` and ``build(genome) -> nn.Module``.

    In ``setup``: ``self.model = self.build_model(hparams)``, then an optimizer over
    ``self.model.parameters()``. Put ``**arch.genes()`` into the search space.
    Parameters of position ``p`` must live under the module name ``p`` (e.g.
    ``self.p = ...`` or an ``nn.ModuleDict`` key), and a gene's layer must have the
    same shapes whatever the other genes are.
    """

    arch: ArchSpace
    genome: dict[str, str]

    def build(self, genome: Mapping[str, str]) -> torch.nn.Module:
        raise NotImplementedError

    def build_model(self, hparams: Mapping[str, Any]) -> torch.nn.Module:
        if not isinstance(getattr(type(self), "arch", None), ArchSpace):
            raise GenomeError(f"{type(self).__name__}.arch must be a torchpbt.nas.ArchSpace.")
        self.genome = self.arch.genome_of(hparams)
        return self.build(dict(self.genome))

    def needs_setup(self, hparams: Mapping[str, Any]) -> bool:
        return self.arch.genome_of(hparams) != getattr(self, "genome", None)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["genome"] = dict(self.genome)
        state["param_names"] = self._param_names()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "genome" in state and dict(state["genome"]) != self.genome:
            raise GenomeError(
                f"checkpoint of architecture {dict(state['genome'])} loaded into "
                f"{self.genome}; the hparams' genes must match the checkpoint."
            )
        super().load_state_dict(state)

    def mix_from(self, base: Mapping[str, Any], donor: Mapping[str, Any] | None,
                 origin: Mapping[str, str], lam: float, gamma: float) -> None:
        """Become the child of ``base`` and ``donor``; this member's weights are fresh."""
        fresh = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        child = mix_state(self.arch, fresh, base["model"], donor["model"] if donor else None,
                          origin, lam, gamma)
        self.model.load_state_dict(child)
        self.optimizer.load_state_dict(self._carried_optimizer(base, origin))
        self.load_extra_state(base.get("extra", {}))

    def _param_names(self) -> list[str]:
        """Parameter names in the optimizer's order (its state is indexed by position)."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return [names.get(id(p), "?") for g in self.optimizer.param_groups for p in g["params"]]

    def _carried_optimizer(self, base: Mapping[str, Any],
                           origin: Mapping[str, str]) -> dict[str, Any]:
        mine = self.optimizer.state_dict()
        base_names = list(base.get("param_names", []))
        base_state = base["optimizer"]["state"]
        shapes = {n: p.shape for n, p in self.model.named_parameters()}
        carried = {}
        for i, name in enumerate(self._param_names()):
            pos = self.arch.position_of(name)
            if pos is not None and origin.get(pos, "base") != "base":
                continue  # a donor's or fresh layer: the base's momentum is not its own
            if name not in base_names:
                continue
            state = base_state.get(base_names.index(name))
            if state is None or any(  # shapes differ: drop it
                torch.is_tensor(v) and v.dim() > 0 and v.shape != shapes[name]
                for v in state.values()
            ):
                continue
            carried[i] = state
        mine["state"] = carried
        return mine
