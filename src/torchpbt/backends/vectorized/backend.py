"""``backend="vectorized"``: every queued interval of equal length trains as one batch.

The backend holds the whole population in memory as stacked tensors (one slot per
member). ``wait()`` takes the queued tasks with the length of the first one in the
serial backend's order, brings each slot to its task's start state (its own live
weights; a slice copy of another slot's live weights on exploit; a checkpoint file
only when no slot holds it, e.g. after a resume), trains them together and writes
one content-addressed checkpoint per member, in the format of the ordinary path.
The controller then decides on the outcomes one by one, as with the serial backend.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.func import functional_call, vmap

from ...engine.checkpoints import CheckpointDir, CheckpointError
from ...engine.member import is_bad_loss
from ..base import Backend
from ..worker import Outcome, Task, seed_everything
from .fast_ops import FastOps
from .member import (
    OPTIMIZER_STATE,
    VectorMember,
    batch_rows,
    empty_state,
    hparam_tensors,
    member_batch_size,
    member_generator,
    optimizer_settings,
)
from .optim import VectorAdam, VectorSGD


class VectorizedBackend(Backend):
    name = "vectorized"
    runs_in_wait = True

    def __init__(self, member_cls: type[VectorMember], checkpoint_dir: str, size: int,
                 device: str = "cpu") -> None:
        self.cls, self.size, self.device = member_cls, size, device
        self.checkpoints = CheckpointDir(checkpoint_dir)
        self.recipe = member_cls()
        self.recipe.device = device
        self.queue: list[Task] = []
        self.slot: dict[int, int] = {}  # member id -> slot
        self.key: list[str | None] = [None] * size  # the checkpoint each slot holds
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.opt_state: dict[str, dict[str, torch.Tensor]] = {}
        self.worker = f"vectorized:{device}"
        self._cached_data: tuple[torch.Tensor, ...] | None = None  # train_data(), read once
        self.envs: dict[int, Any] = {}  # slot -> its member's environments (make_env)

    @property
    def pending(self) -> int:
        return len(self.queue)

    def submit(self, task: Task) -> None:
        self.queue.append(task)

    def wait(self) -> list[Outcome]:
        if not self.queue:
            raise RuntimeError("wait() with no task submitted")
        self.queue.sort(key=lambda t: (t.start_step, t.member_id))
        steps = self.queue[0].steps
        group = [t for t in self.queue if t.steps == steps]
        self.queue = [t for t in self.queue if t.steps != steps]
        t0 = time.perf_counter()
        try:
            self._start(group)
            losses, scores = self._train(group, steps)
        except CheckpointError as exc:
            return [self._failed(t, t0, str(exc), exc.key or t.checkpoint) for t in group]
        dt = (time.perf_counter() - t0) / len(group)
        out = []
        for i, t in enumerate(group):
            loss, score = losses[i], scores[i]
            if is_bad_loss(loss) or not math.isfinite(score):
                self.key[self.slot[t.member_id]] = None  # its weights are not trustworthy
                out.append(Outcome.failure(t, self.worker,
                                           f"training loss is {loss}, score is {score}",
                                           duration_s=dt, loss=loss, score=score))
                continue
            key, size = self.checkpoints.save(self._member_state(self.slot[t.member_id]))
            self.key[self.slot[t.member_id]] = key
            out.append(Outcome(t.member_id, t.start_step, t.start_step + steps, score, loss, key,
                               size, dt, self.worker))
        return out

    def _failed(self, t: Task, t0: float, error: str, bad: str | None) -> Outcome:
        return Outcome.failure(t, self.worker, error, duration_s=time.perf_counter() - t0,
                               bad_checkpoint=bad)

    # -- bringing slots to their start states ------------------------------------------
    def _slot_of(self, member_id: int) -> int:
        if member_id not in self.slot:
            if len(self.slot) >= self.size:
                raise RuntimeError(f"member {member_id}: all {self.size} slots are taken")
            self.slot[member_id] = len(self.slot)
        return self.slot[member_id]

    def _fresh(self, task: Task) -> dict[str, Any]:
        """A new member exactly as the ordinary path's setup() builds it."""
        seed_everything(task.seed)
        module = self.recipe.build(task.hparams).to(self.device)
        return {"model": module.state_dict(),
                "optimizer": {n: {k: empty_state(k, p) for k in OPTIMIZER_STATE[self.cls.optimizer]}
                              for n, p in module.named_parameters()}}

    def _start(self, group: list[Task]) -> None:
        live = {k: s for s, k in enumerate(self.key) if k is not None}
        states: dict[int, dict[str, Any]] = {}
        for t in group:  # read every start state before any slot is overwritten
            s = self._slot_of(t.member_id)
            if t.checkpoint is None:
                states[s] = self._fresh(t)
            elif t.checkpoint != self.key[s]:
                src = live.get(t.checkpoint)
                states[s] = (self._member_state(src) if src is not None
                             else self.checkpoints.load(t.checkpoint))
        if not self.params:  # the first interval: lay out the stacked tensors
            self._allocate(next(iter(states.values())), group[0].hparams)
        for s, state in states.items():
            self._load_slot(s, state)
            self.key[s] = None

    def _allocate(self, state: dict[str, Any], hparams: dict[str, Any]) -> None:
        module = self.recipe.build(hparams).to(self.device)  # its structure for functional_call
        names = {n for n, _ in module.named_parameters()}
        for k, v in state["model"].items():
            full = torch.zeros((self.size, *v.shape), dtype=v.dtype, device=self.device)
            (self.params if k in names else self.buffers)[k] = full
        for n, st in state["optimizer"].items():
            self.opt_state[n] = {k: torch.zeros((self.size, *v.shape), dtype=v.dtype,
                                                device=self.device) for k, v in st.items()}
        self._structure = module

    def _load_slot(self, s: int, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for k, v in state["model"].items():
                (self.params if k in self.params else self.buffers)[k][s].copy_(v)
            for n, st in state["optimizer"].items():
                for k, v in st.items():
                    self.opt_state[n][k][s].copy_(v)

    def _member_state(self, s: int) -> dict[str, Any]:
        model = {k: v[s].detach().clone() for k, v in {**self.params, **self.buffers}.items()}
        opt = {n: {k: v[s].clone() for k, v in st.items()} for n, st in self.opt_state.items()}
        return {"model": model, "optimizer": opt, "extra": {}}

    # -- one batched interval ------------------------------------------------------------
    def _train(self, group: list[Task], steps: int) -> tuple[list[float], list[float]]:
        slots = [self.slot[t.member_id] for t in group]
        idx = torch.tensor(slots, device=self.device)
        whole = slots == list(range(self.size))
        params = {k: (v if whole else v[idx]).detach().requires_grad_(True)
                  for k, v in self.params.items()}
        buffers = {k: v if whole else v[idx].clone() for k, v in self.buffers.items()}
        opt = self._optimizer(params, group)
        opt.state = {n: {k: v if whole else v[idx].clone() for k, v in st.items()}
                     for n, st in self.opt_state.items()}
        per_task = [hparam_tensors(t.hparams, self.device) for t in group]
        hp = {k: torch.stack([h[k] for h in per_task]) for k in per_task[0]}
        base, recipe = self._structure, self.recipe

        def bind(p: Any, b: Any) -> Any:  # one member's slice, called like its module
            return lambda *args: functional_call(base, (p, b), args)

        def one_loss(p: Any, b: Any, batch: Any, h: Any) -> torch.Tensor:
            with FastOps():
                return recipe.loss(bind(p, b), batch, h)

        # detached views share storage, so they follow the in-place optimizer steps
        frozen = {k: v.detach() for k, v in params.items()}
        act = vmap(lambda p, b, o: bind(p, b)(o), randomness="different")

        def policy(obs: Any) -> Any:  # every member's model on its own rows, no gradient
            with torch.no_grad():
                return act(frozen, buffers, obs)

        loss_fn = vmap(one_loss, randomness="different")
        base.train()
        last = torch.full((len(group),), float("nan"))
        for batch, reduce in self._batches(group, slots, steps, policy, hp):
            per = reduce(loss_fn(params, buffers, batch, hp))
            opt.zero_grad()
            per.sum().backward()
            if self.cls.max_grad_norm is not None:
                clip_per_member(params.values(), self.cls.max_grad_norm)
            opt.step()
            last = per.detach()
        base.eval()
        with torch.no_grad():
            if self.cls._overrides("score_all"):
                scores = recipe.score_all(policy, hp)
            else:
                scores = vmap(lambda p, b, h: recipe.score(bind(p, b), h),
                              randomness="different")(params, buffers, hp)
        base.train()
        self._store(idx, whole, params, buffers, opt.state)
        return [float(x) for x in last], [float(x) for x in scores.reshape(-1)]

    def _batches(self, group: list[Task], slots: list[int], steps: int, policy: Any,
                 hp: dict[str, torch.Tensor]) -> Iterator[tuple[Any, Any]]:
        """Each step's batch of every member, with how its loss output becomes one loss
        per member."""
        if self.cls._overrides("collect"):
            for t, s in zip(group, slots, strict=True):  # kept per member, made once
                if s not in self.envs:
                    seed_everything(t.seed)
                    self.envs[s] = self.recipe.make_env()
            envs = [self.envs[s] for s in slots]
            seed_everything(group[0].seed)  # the draws of collect and of vmap
            for _ in range(steps):
                yield self.recipe.collect(policy, envs, hp), _mean_per_member
            return
        gens = []
        for t in group:  # the same sampler each member has on the ordinary path
            seed_everything(t.seed)
            gens.append(member_generator(self.device))
        seed_everything(group[0].seed)  # vmap's own random draws (dropout)
        sizes = [member_batch_size(self.cls, t.hparams) for t in group]
        mask = (torch.arange(max(sizes), device=self.device)[None, :]
                < torch.tensor(sizes, device=self.device)[:, None]).float()

        def reduce(out: torch.Tensor) -> torch.Tensor:
            if out.ndim == 2:
                return (out * mask).sum(1) / mask.sum(1)
            if len(set(sizes)) > 1:
                raise ValueError(
                    f"{self.cls.__name__}.loss returned one number per member but members' "
                    "batch sizes differ; return one loss per batch row (e.g. "
                    "reduction='none') so padded rows can be masked out.")
            return out

        data = self._data()
        for rows in _padded_rows(gens, sizes, len(data[0]), steps):
            yield tuple(d[rows] for d in data), reduce

    def _store(self, idx: torch.Tensor, whole: bool, params: dict[str, torch.Tensor],
               buffers: dict[str, torch.Tensor], opt_state: dict[str, Any]) -> None:
        """The trained members back into their slots."""
        if whole:
            self.params = {k: v.detach() for k, v in params.items()}
            return
        with torch.no_grad():
            for k, v in params.items():
                self.params[k][idx] = v.detach()
            for k, v in buffers.items():
                self.buffers[k][idx] = v
            for n, st in opt_state.items():
                for k, v in st.items():
                    self.opt_state[n][k][idx] = v

    def _data(self) -> tuple[torch.Tensor, ...]:
        if self._cached_data is None:
            self._cached_data = tuple(t.to(self.device) for t in self.recipe.train_data())
        return self._cached_data

    def _optimizer(self, params: dict[str, torch.Tensor], group: list[Task]) -> Any:
        settings = [optimizer_settings(self.cls, t.hparams) for t in group]
        per = {k: [s[k] for s in settings] for k in settings[0]}
        if self.cls.optimizer == "sgd":
            return VectorSGD(params, nesterov=self.cls.nesterov, **per)
        return VectorAdam(params, decoupled=self.cls.optimizer == "adamw", **per)


def _padded_rows(gens: list[torch.Generator], sizes: list[int], n: int,
                 steps: int) -> Iterator[torch.Tensor]:
    """Each step's batch rows of every member, ``(P, largest batch)``: member i's rows
    are those its ordinary path draws, padded with row 0 (masked out of the loss)."""
    width = max(sizes)
    draws = [batch_rows(g, n, sz, steps) for g, sz in zip(gens, sizes, strict=True)]
    for chunk in zip(*draws, strict=True):  # (k, size) per member: k steps at a time
        rows = torch.stack([torch.nn.functional.pad(c, (0, width - c.shape[1])) for c in chunk])
        yield from rows.unbind(1)


def _mean_per_member(out: torch.Tensor) -> torch.Tensor:
    return out.flatten(1).mean(1) if out.ndim > 1 else out


def clip_per_member(params: Iterable[torch.Tensor], max_norm: float) -> None:
    """``nn.utils.clip_grad_norm_`` for each member (the first dimension) on its own."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0).sqrt()
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.ndim - 1))))
