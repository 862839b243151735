"""Train one member for one interval: the only code that runs user models.

Used in-process by the serial backend and inside each process of the local
backend. Live member objects are cached per process so a member that keeps
training from its own last checkpoint does not pay for a reload.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import random
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..algorithm.scheduler_types import plan_reads
from ..engine.checkpoints import CheckpointDir, CheckpointError
from ..engine.extension import Hooks, IntervalHook
from ..engine.member import as_loss, as_score, is_bad_loss
from .base import Outcome, Task


@dataclass(frozen=True)
class ClassRef:
    """A picklable pointer to the member class, also for classes loaded from a file path."""

    module: str
    qualname: str
    path: str | None

    @classmethod
    def of(cls, member_cls: type) -> ClassRef:
        mod = sys.modules.get(member_cls.__module__)
        return cls(member_cls.__module__, member_cls.__qualname__, getattr(mod, "__file__", None))

    def to_dict(self) -> dict[str, Any]:
        """As stored: a run's member class, a strategy stored by reference."""
        return {"module": self.module, "qualname": self.qualname, "path": self.path}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassRef:
        return cls(d["module"], d["qualname"], d["path"])

    def resolve(self) -> type:
        mod = sys.modules.get(self.module)
        if self.module in ("__main__", "__mp_main__") and self.path and (
            mod is None or not _same_file(getattr(mod, "__file__", None), self.path)
        ):  # the script that started the run is not this program's main (e.g. resume)
            return _getattr_path(load_module_from_path(self.path), self.qualname)
        if mod is None:
            try:
                mod = importlib.import_module(self.module)
            except ImportError:
                if not self.path:
                    raise
                mod = load_module_from_path(self.path, self.module)
        return _getattr_path(mod, self.qualname)


def _same_file(a: str | None, b: str) -> bool:
    return a is not None and os.path.abspath(a) == os.path.abspath(b)


def _getattr_path(mod: Any, qualname: str) -> Any:
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def load_module_from_path(path: str, name: str | None = None) -> Any:
    """Import a .py file as a module (the CLI's ``torchpbt run FILE.py``)."""
    name = name or "torchpbt_user_" + os.path.splitext(os.path.basename(path))[0]
    loaded = sys.modules.get(name)
    if loaded is not None and _same_file(getattr(loaded, "__file__", None), path):
        return loaded
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:  # the script's own imports (a helper module next to it)
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def derive_seed(run_seed: int, member_id: int, step: int) -> int:
    """Independent, reproducible seed per (run, member, interval)."""
    h = hashlib.sha256(f"{run_seed}:{member_id}:{step}".encode()).digest()
    return int.from_bytes(h[:4], "little")


_ACCELERATOR: bool | None = None


def _accelerator_present() -> bool:
    """Whether torch sees any accelerator (CUDA, MPS, XPU, a custom device); asked once."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        acc = getattr(torch, "accelerator", None)  # torch >= 2.6
        _ACCELERATOR = bool(acc.is_available()) if acc is not None else True
    return _ACCELERATOR


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    if _accelerator_present():
        torch.manual_seed(seed)
    else:
        # CPU only: the one generator there is. torch.manual_seed would also queue a
        # seed for CUDA, which never initialises here, formatting a stack trace for it
        # each time (twice per interval: most of a short interval's cost)
        torch.default_generator.manual_seed(seed)


class IntervalRunner:
    """Runs tasks for one member class against one checkpoint directory."""

    def __init__(self, member_cls: type, checkpoint_dir: str, device: str = "cpu") -> None:
        self.member_cls, self.device = member_cls, device
        self.checkpoints = CheckpointDir(checkpoint_dir)
        self.name = f"{os.uname().nodename}:{os.getpid()}"
        self._live: dict[int, tuple[Any, str | None]] = {}
        self.hooks = Hooks(self.checkpoints)

    def live_member(self, member_id: int) -> Any:
        """The member object that ran ``member_id``'s last successful interval here."""
        return self._live[member_id][0]

    def _member_for(self, task: Task,
                    hooks: Sequence[tuple[str, IntervalHook, Any]] = ()) -> Any:
        builder = next(((h, p) for _, h, p in hooks if h.sets_weights), None)
        inst, current = self._live.pop(task.member_id, (None, None))
        if inst is None or builder is not None or inst.needs_setup(task.hparams) or (
            task.checkpoint is None and current is not None
        ):
            inst = self.member_cls()
            inst.device = self.device
            inst.setup(dict(task.hparams))
            current = None
        if builder is not None:
            builder[0].load(inst, task, builder[1])
        elif task.checkpoint is not None and task.checkpoint != current:
            inst.load_state_dict(self.checkpoints.load(task.checkpoint))
        inst.apply_hparams(dict(task.hparams))  # after the load: explored values win
        return inst

    def run(self, task: Task) -> Outcome:
        t0 = time.perf_counter()
        loss: float | None = None
        end = task.start_step + task.steps
        try:
            seed_everything(task.seed)
            hooks = self.hooks.of(task)
            inst = self._member_for(task, hooks)
            for _, hook, payload in hooks:
                hook.before_train(inst, task, payload)
            seed_everything(task.seed)  # again: a fresh setup() above has used random numbers
            raw_loss = inst.train(task.steps)
            loss = as_loss(raw_loss, f"{self.member_cls.__name__}.train()")
            if is_bad_loss(loss):
                return self._failed(task, t0, loss, f"training loss is {loss}")
            score = as_score(inst.evaluate(), f"{self.member_cls.__name__}.evaluate()")
            if not np.isfinite(score):
                return self._failed(task, t0, loss, f"score is {score}", score)
            key, size = self.checkpoints.save(inst.state_dict())
            extras: dict[str, Any] = {}
            for name, hook, payload in hooks:
                record = hook.after_train(inst, task, payload)
                if record is not None:
                    extras[name] = record
        except CheckpointError as exc:  # never loaded: the controller stops handing it out
            return self._failed(task, t0, loss, traceback.format_exc(),
                                bad_checkpoint=exc.key or task.checkpoint)
        except Exception:
            return self._failed(task, t0, loss, traceback.format_exc())
        self._live[task.member_id] = (inst, key)
        return Outcome(task.member_id, task.start_step, end, score, loss, key, size,
                       time.perf_counter() - t0, self.name, extras=extras)

    def _failed(
        self, task: Task, t0: float, loss: float | None, error: str, score: float = float("nan"),
        bad_checkpoint: str | None = None,
    ) -> Outcome:
        self._live.pop(task.member_id, None)  # its in-memory state is not trustworthy
        return Outcome.failure(task, self.name, error, duration_s=time.perf_counter() - t0,
                               loss=loss, score=score, bad_checkpoint=bad_checkpoint)


def task_to_json(t: Task) -> dict[str, Any]:
    """A task as JSON (the store keeps in-flight tasks; the worker queue ships them).

    Field by field: ``dataclasses.asdict`` deep-copies every value and was most of an
    event's cost once thousands of tasks were in flight."""
    d = {"member_id": t.member_id, "start_step": t.start_step, "steps": t.steps,
         "hparams": dict(t.hparams), "checkpoint": t.checkpoint, "seed": t.seed}
    if t.extras:
        d["extras"] = dict(t.extras)
    if t.also_reads:
        d["also_reads"] = list(t.also_reads)
    return d


def task_from_json(d: Mapping[str, Any]) -> Task:
    extras, reads = dict(d.get("extras") or {}), tuple(d.get("also_reads", ()))
    if d.get("mix"):  # stored before extensions had a seam (a NAS child's plan)
        extras = {**extras, "mix": d["mix"]}
        reads = plan_reads(d["mix"])
    return Task(d["member_id"], d["start_step"], d["steps"], dict(d["hparams"]), d["checkpoint"],
                d["seed"], extras, reads)
