"""The member a vectorized run trains P at a time, written as ordinary one-member code.

A :class:`VectorMember` describes one member: ``build`` makes its ``nn.Module``,
``loss`` and ``score`` say what one member computes, ``train_data`` is the data all
members sample from. The vectorized backend stacks P such modules and ``vmap``s
``loss``/``score`` over them; every other backend runs the class as an ordinary
member (a plain module and a ``torch.optim`` optimizer), so replay, ``Result.member``
and a serial run of the same class need nothing else. Both paths write the same
checkpoint format, so a vectorized member resumes or replays on the serial path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils._pytree import tree_map

from ...engine.member import Member

OPTIMIZERS = ("sgd", "adam", "adamw")
# hparam names each optimizer takes per member (anything else goes to loss/score)
OPTIMIZER_HPARAMS = {"sgd": ("lr", "momentum", "weight_decay"),
                     "adam": ("lr", "beta1", "beta2", "eps", "weight_decay"),
                     "adamw": ("lr", "beta1", "beta2", "eps", "weight_decay")}
_DEFAULTS = {"lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.999,
             "eps": 1e-8}


class VectorMember(Member):
    """Subclass it and fill in ``build``, ``train_data``, ``loss`` and ``score``.

    Rules that let P members run as one batched model: ``loss`` and ``score`` compute
    one member's value from ``model`` (call it like the module) and ``hparams`` (each a
    0-d tensor) and keep nothing on ``self``; ``train_data`` is deterministic (the same
    tensors on every call). ``loss`` may return one number or one loss per batch row;
    per-row losses let members use different batch sizes (an hparam named
    ``batch_size``: rows are padded to the largest and masked out of the mean). The
    optimizer is ``optimizer`` (``"sgd"``, ``"adam"``, ``"adamw"``); hparams named like
    its settings (``lr``, ``momentum``, ``weight_decay``, ``beta1``, ``beta2``, ``eps``)
    go into it per member, ``optimizer_defaults`` fixes the ones not searched.
    """

    optimizer: ClassVar[str] = "sgd"
    optimizer_defaults: ClassVar[Mapping[str, float]] = {}
    nesterov: ClassVar[bool] = False
    batch_size: ClassVar[int] = 32
    max_grad_norm: ClassVar[float | None] = None  # clip each member's gradient to this norm

    # -- what the user writes -------------------------------------------------------
    def build(self, hparams: Mapping[str, Any]) -> nn.Module:
        raise NotImplementedError

    def train_data(self) -> tuple[torch.Tensor, ...]:
        """Tensors whose first dimension indexes examples (e.g. ``(x, y)``)."""
        raise NotImplementedError

    def loss(self, model: Callable[..., Any], batch: tuple[torch.Tensor, ...],
             hparams: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def score(self, model: Callable[..., Any], hparams: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    # -- instead of train_data/score, for members that learn from environments (RL) -----
    def make_env(self) -> Any:
        """One member's environments; the backend keeps them per member between
        intervals (they are not checkpointed: a member rebuilt elsewhere starts fresh)."""
        raise NotImplementedError

    def collect(self, policy: Callable[..., Any], envs: Sequence[Any],
                hparams: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """One training step's batch for every member at once, each tensor shaped
        ``(members, ...)``; ``envs[i]`` is member i's and ``policy(obs)`` runs member i's
        model on ``obs[i]`` (no gradient). ``hparams`` hold one value per member."""
        raise NotImplementedError

    def score_all(self, policy: Callable[..., Any],
                  hparams: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Every member's score, shape ``(members,)``, when scoring needs an environment."""
        raise NotImplementedError

    @classmethod
    def _overrides(cls, name: str) -> bool:
        return getattr(cls, name) is not getattr(VectorMember, name)

    # -- the ordinary member path (every backend but "vectorized") -------------------
    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.model = self.build(hparams).to(self.device)
        if self._overrides("collect"):
            self.env = self.make_env()
        else:
            self.data = tuple(t.to(self.device) for t in self.train_data())
        self.hparams = dict(hparams)
        # built on first use: torch.optim's first construction imports torch._dynamo (about
        # a second), which a run on the vectorized backend (own optimizers) never needs
        self._torch_optimizer: torch.optim.Optimizer | None = None
        self._pending_state: Mapping[str, Any] | None = None

    @property
    def torch_optimizer(self) -> torch.optim.Optimizer:
        if self._torch_optimizer is None:
            values = self._group_values(self.hparams)
            params = self.model.parameters()
            if self.optimizer == "sgd":
                opt: torch.optim.Optimizer = torch.optim.SGD(params, nesterov=self.nesterov,
                                                             **values)
            else:
                cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
                opt = cls(params, **values)
            self._torch_optimizer = opt
            if self._pending_state is not None:
                self._load_optimizer_state(self._pending_state)
                self._pending_state = None
        return self._torch_optimizer

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        super().apply_hparams(hparams)
        if self._torch_optimizer is None:
            return  # it is built from self.hparams
        for group in self._torch_optimizer.param_groups:
            group.update(self._group_values(hparams))

    def _group_values(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """The torch.optim param-group values of these hparams."""
        s = optimizer_settings(type(self), hparams)
        if self.optimizer == "sgd":
            return {"lr": s["lr"], "momentum": s["momentum"], "weight_decay": s["weight_decay"]}
        return {"lr": s["lr"], "betas": (s["beta1"], s["beta2"]), "eps": s["eps"],
                "weight_decay": s["weight_decay"]}

    def train(self, steps: int) -> float | None:
        hp = hparam_tensors(self.hparams, self.device)
        loss = None
        for batch in self._batches(steps, hp):
            out = self.loss(self.model, batch, hp)
            loss = out.mean() if out.ndim else out
            self.torch_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.torch_optimizer.step()
        return None if loss is None else float(loss.detach())

    def _batches(self, steps: int,
                 hp: Mapping[str, torch.Tensor]) -> Iterator[tuple[torch.Tensor, ...]]:
        if self._overrides("collect"):
            one = {k: v[None] for k, v in hp.items()}  # a population of one
            for _ in range(steps):
                yield tuple(t[0] for t in self.collect(self._policy, [self.env], one))
            return
        size = member_batch_size(type(self), self.hparams)
        for chunk in batch_rows(member_generator(self.device), len(self.data[0]), size, steps):
            for rows in chunk:
                yield tuple(t[rows] for t in self.data)

    @torch.no_grad()
    def _policy(self, obs: Any) -> Any:
        return tree_map(lambda t: t[None], self.model(tree_map(lambda t: t[0], obs)))

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        hp = hparam_tensors(self.hparams, self.device)
        try:
            if self._overrides("score_all"):
                return float(self.score_all(self._policy, {k: v[None] for k, v in hp.items()})[0])
            return float(self.score(self.model, hp))
        finally:
            self.model.train()

    def state_dict(self) -> dict[str, Any]:
        if self._torch_optimizer is None and self._pending_state is not None:
            opt_state = {n: {k: v.clone() for k, v in st.items()}
                         for n, st in self._pending_state.items()}
        else:
            live = {} if self._torch_optimizer is None else self._torch_optimizer.state
            opt_state = {}
            for n, p in self.model.named_parameters():
                st = live.get(p, {})
                opt_state[n] = {k: _as_tensor(st[k], p) if k in st else empty_state(k, p)
                                for k in OPTIMIZER_STATE[self.optimizer]}
        return {"model": self.model.state_dict(), "optimizer": opt_state, "extra": {}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self._torch_optimizer is None:
            self._pending_state = state["optimizer"]
        else:
            self._load_optimizer_state(state["optimizer"])

    def _load_optimizer_state(self, opt_state: Mapping[str, Any]) -> None:
        for n, p in self.model.named_parameters():
            self.torch_optimizer.state[p] = {
                k: (v.clone().reshape(()).float() if k == "step" else v.clone().to(p.device))
                for k, v in opt_state[n].items()}


# optimizer state per parameter, in both paths' checkpoints (zeros mean "not stepped yet")
OPTIMIZER_STATE = {"sgd": ("momentum_buffer",), "adam": ("step", "exp_avg", "exp_avg_sq"),
                   "adamw": ("step", "exp_avg", "exp_avg_sq")}


def empty_state(key: str, p: torch.Tensor) -> torch.Tensor:
    """One optimizer state entry of a parameter that has not been stepped yet."""
    return torch.zeros((), dtype=p.dtype) if key == "step" else torch.zeros_like(p.detach())


def _as_tensor(value: Any, p: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value)
    return t.detach().clone().to(p.dtype).cpu() if t.ndim == 0 else t.detach().clone()


def optimizer_settings(cls: type[VectorMember], hparams: Mapping[str, Any]) -> dict[str, float]:
    """The optimizer's value of each of its settings: the hparam, else the class default."""
    names = OPTIMIZER_HPARAMS[cls.optimizer]
    return {n: float(hparams[n]) if n in hparams else float(cls.optimizer_defaults.get(
        n, _DEFAULTS[n])) for n in names}


def member_batch_size(cls: type[VectorMember], hparams: Mapping[str, Any]) -> int:
    return int(hparams.get("batch_size", cls.batch_size))


def hparam_tensors(hparams: Mapping[str, Any], device: str | torch.device) -> dict[str, torch.Tensor]:
    """Numeric hparams as 0-d float tensors, what ``loss``/``score`` receive."""
    return {k: torch.tensor(float(v), device=device) for k, v in hparams.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def member_generator(device: str | torch.device) -> torch.Generator:
    """The interval's batch sampler, seeded from the interval's seed (the global RNG the
    backend seeded), so both paths draw the same rows for a member."""
    seed = int(torch.randint(2**62, (1,)).item())
    return torch.Generator(device=device).manual_seed(seed)


ROWS_PER_DRAW = 64  # steps whose batch rows are drawn in one call (bounded memory)


def batch_rows(gen: torch.Generator, n: int, size: int, steps: int) -> Iterator[torch.Tensor]:
    """An interval's batch rows, ``(k, size)`` per chunk of up to ``ROWS_PER_DRAW`` steps:
    one draw per chunk instead of one per step, in the same order on both paths."""
    for start in range(0, steps, ROWS_PER_DRAW):
        yield torch.randint(n, (min(ROWS_PER_DRAW, steps - start), size), generator=gen,
                            device=gen.device)


USER_METHODS = ("build", "train_data", "loss", "score")
ENV_METHODS = ("build", "make_env", "collect", "loss", "score_all")


def check_vector_member(cls: type[VectorMember]) -> None:
    """A VectorMember subclass must fill in its methods; say which are missing."""
    env = cls._overrides("collect") or cls._overrides("make_env")
    need = ENV_METHODS if env else USER_METHODS
    # an environment member may still score with score() (vmapped, no environment)
    missing = [n for n in need if not cls._overrides(n)
               and not (env and n == "score_all" and cls._overrides("score"))]
    if missing:
        raise TypeError(f"{cls.__name__} does not implement {', '.join(missing)}; a "
                        f"VectorMember needs {', '.join(USER_METHODS)} (or, to learn from "
                        f"environments, {', '.join(ENV_METHODS)}).")
    if cls.optimizer not in OPTIMIZERS:
        raise ValueError(f"{cls.__name__}.optimizer = {cls.optimizer!r}: use one of "
                         f"{', '.join(map(repr, OPTIMIZERS))}.")
