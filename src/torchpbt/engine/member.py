"""What a population member is: the user's model behind five methods.

A worker drives a member through one interval like this, always in this
order, so a restored checkpoint can never overwrite freshly explored values::

    member.setup(hparams)               # once per process, builds model/optimizer/data
    member.load_state_dict(state)       # the member's own or the donor's checkpoint
    member.apply_hparams(hparams)       # the explored values win
    loss = member.train(steps)
    score = member.evaluate()
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REQUIRED_METHODS = ("setup", "train", "evaluate", "state_dict", "load_state_dict")


class Member:
    """Base class for a population member. Subclass it and fill in the five methods.

    ``self.hparams`` always holds the values of the current interval and
    ``self.device`` the device the backend chose (``"cpu"`` here).
    """

    device: str = "cpu"
    hparams: dict[str, Any]
    knowledge: Any = None  # a distill.SharedKnowledge during an interval, when sharing is on

    def setup(self, hparams: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def train(self, steps: int) -> float | None:
        """Train ``steps`` steps; may return the last loss (NaN/inf marks the member failed)."""
        raise NotImplementedError

    def evaluate(self) -> float:
        """The member's score (higher is better, or pass mode="min"): a float.

        It must also work right after ``setup()``: ``torchpbt.run`` calls it once
        on a fresh member, before anything is trained or written, to check it.
        """
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def needs_setup(self, hparams: Mapping[str, Any]) -> bool:
        """True when these hparams need a new ``setup()`` before loading a checkpoint
        (a different architecture); the worker then builds the member afresh."""
        return False

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        """Called after every load; override to push values into the model (e.g. dropout)."""
        self.hparams = dict(hparams)


class TorchMember(Member):
    """A Member holding ``self.model`` and ``self.optimizer``.

    Checkpoints hold the model's and optimizer's state dicts plus
    :meth:`extra_state`. Hyperparameters whose names are optimizer
    ``param_groups`` keys (``lr``, ``momentum``, ``weight_decay`` ...) are written
    into every param group after each load, and ``beta1``/``beta2`` into Adam's
    ``betas``; ``optimizer_hparams`` maps other names explicitly, e.g.
    ``{"learning_rate": "lr", "b1": "betas[0]"}`` (an index picks one element of
    a tuple-valued key).

    An LR scheduler goes in ``self.lr_scheduler`` (any ``torch.optim.lr_scheduler``
    scheduler, stepped by your ``train``): its state is in the checkpoint, and the
    ``lr`` hparam is its *base* lr: an explored lr replaces the scheduler's base
    and the schedule's current factor is kept (lr = new base × factor now).
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    optimizer_hparams: Mapping[str, str] | None = None

    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "extra": self.extra_state(),
        }
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and "lr_scheduler" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.load_extra_state(state.get("extra", {}))

    def knowledge_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor
    ) -> torch.Tensor:
        """Classification loss that takes part in knowledge sharing when the run enables it.

        ``indices`` are the batch's positions in the training set (the shared
        table is indexed by them). Without sharing this is ``F.cross_entropy``.
        """
        if self.knowledge is None:
            return F.cross_entropy(logits, labels)
        return self.knowledge.loss(logits, labels, indices)

    def extra_state(self) -> dict[str, Any]:
        """Plain values (numbers, strings, tensors) to keep in the checkpoint."""
        return {}

    def load_extra_state(self, extra: Mapping[str, Any]) -> None:
        pass

    def optimizer_mapping(self, hparams: Mapping[str, Any]) -> dict[str, str]:
        """hparam name → param_group key (``"lr"``, or ``"betas[0]"`` for one element of a
        tuple); explicit names must exist and fit, or this fails loudly."""
        return optimizer_mapping(self.optimizer, hparams, self.optimizer_hparams,
                                 type(self).__name__)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        super().apply_hparams(hparams)
        push_hparams(self.optimizer, self.lr_scheduler, hparams, self.optimizer_mapping(hparams))


def optimizer_mapping(optimizer: torch.optim.Optimizer, hparams: Mapping[str, Any],
                      explicit: Mapping[str, str] | None, owner: str) -> dict[str, str]:
    """hparam name → param_group key of ``optimizer``: ``explicit`` (checked), else every
    hparam named like a param_group key, and ``beta1``/``beta2`` for Adam's ``betas``."""
    group = optimizer.param_groups[0]
    if explicit is None:
        auto = {n: n for n in hparams if n in group and not isinstance(group[n], tuple)}
        if isinstance(group.get("betas"), tuple):  # Adam-style: beta1/beta2 by name
            auto.update({n: f"betas[{i}]" for i, n in enumerate(("beta1", "beta2"))
                         if n in hparams and n not in group})
        return auto
    mapping = dict(explicit)
    unknown = sorted(set(mapping) - set(hparams))
    if unknown:
        raise KeyError(
            f"{owner}.optimizer_hparams names unknown hyperparameter(s) "
            f"{unknown}; the space has {sorted(hparams)}."
        )
    fix = f"Fix {owner}.optimizer_hparams."
    opt = type(optimizer).__name__
    for name, target in mapping.items():
        key, index = _split_key(target)
        if key not in group:
            raise KeyError(f"{opt} has no param_group key {key!r} (for {name!r}); it has "
                           f"{sorted(group)}. {fix}")
        value = group[key]
        if index is None and isinstance(value, tuple):
            raise KeyError(f"{opt}'s {key!r} is a tuple {value}; map {name!r} to one "
                           f"element, e.g. {{{name!r}: '{key}[0]'}}. {fix}")
        if index is not None and not (isinstance(value, tuple) and index < len(value)):
            raise KeyError(f"{opt}'s {key!r} is {value!r}, which has no element {index} "
                           f"(for {name!r}). {fix}")
    return mapping


def push_hparams(optimizer: torch.optim.Optimizer, scheduler: Any, hparams: Mapping[str, Any],
                 mapping: Mapping[str, str]) -> None:
    """Write the mapped hparams into every param group; with an LR scheduler, ``lr`` becomes
    its base lr (see :class:`TorchMember`)."""
    base = getattr(scheduler, "base_lrs", None)
    if base is not None and "lr" in mapping.values():
        _rebase(scheduler, optimizer, next(hparams[n] for n, t in mapping.items() if t == "lr"))
    for name, target in mapping.items():
        key, index = _split_key(target)
        if key == "lr" and base is not None:
            continue  # rebased above, with the schedule's factor
        for group in optimizer.param_groups:
            if index is None:
                group[key] = hparams[name]
            else:  # one element of a tuple such as Adam's betas
                group[key] = tuple(hparams[name] if i == index else v
                                   for i, v in enumerate(group[key]))


def _rebase(scheduler: Any, optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Make ``lr`` the scheduler's base lr, keeping where the schedule is: without this,
    the next ``scheduler.step()`` recomputes the lr from the old base and undoes explore."""
    lrs = []
    for i, group in enumerate(optimizer.param_groups):
        old_base = scheduler.base_lrs[i]
        factor = group["lr"] / old_base if old_base else 1.0
        scheduler.base_lrs[i] = group["initial_lr"] = lr
        group["lr"] = lr * factor
        lrs.append(group["lr"])
    scheduler._last_lr = lrs  # what get_last_lr() reports


def _split_key(target: str) -> tuple[str, int | None]:
    """``"betas[0]"`` → ``("betas", 0)``; ``"lr"`` → ``("lr", None)``."""
    m = re.fullmatch(r"(\w+)\[(\d+)\]", target)
    return (m.group(1), int(m.group(2))) if m else (target, None)


def check_member_class(member_cls: Any) -> None:
    """Refuse a member class that cannot work, before any training starts."""
    if not isinstance(member_cls, type):
        raise TypeError(
            f"member={member_cls!r} must be a class (subclass torchpbt.Member or TorchMember), "
            "not an instance or function."
        )
    missing = [
        name for name in REQUIRED_METHODS
        if not callable(getattr(member_cls, name, None))
        or getattr(member_cls, name) is getattr(Member, name, None)
    ]
    if missing:
        raise TypeError(
            f"{member_cls.__name__} does not implement {', '.join(missing)}; a member needs "
            f"{', '.join(REQUIRED_METHODS)} (TorchMember provides state_dict/load_state_dict)."
        )


def as_score(value: Any, where: str) -> float:
    """A member's evaluate() must return a real number; say so clearly if not.

    A one-element tensor or array and a NumPy scalar count as numbers. NaN and
    inf are numbers too: they mark a diverged member, which the run replaces.
    """
    if isinstance(value, (torch.Tensor, np.ndarray)):
        size = value.numel() if isinstance(value, torch.Tensor) else value.size
        if size != 1:
            raise TypeError(
                f"{where} returned a {type(value).__name__} of shape {tuple(value.shape)}; "
                "evaluate() must return a float: reduce it to one number, e.g. "
                "acc.mean().item()."
            )
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{where} returned {type(value).__name__} {value!r}; evaluate() must return "
            "a float (e.g. accuracy, or loss with mode='min')."
        )
    return float(value)


def as_loss(value: Any, where: str) -> float | None:
    """What train() returned, as a float loss (None: it reports none)."""
    if value is None:
        return None
    try:
        return as_score(value, where)
    except TypeError:
        raise TypeError(
            f"{where} returned {type(value).__name__} {value!r}; train() must return the "
            "last loss as a float (e.g. loss.item()) or None.") from None


def is_bad_loss(loss: Any) -> bool:
    if loss is None:
        return False
    try:
        return not math.isfinite(float(loss))
    except (TypeError, ValueError):
        return False
