"""PBT over an ordinary LightningModule, trained by Lightning's own ``Trainer``.

Subclass :class:`LightningMember` and say how to build the module and its data::

    class MyPBT(LightningMember):
        monitor = "val_acc"                      # a metric validation_step logs
        def configure_module(self, hparams):     # your LightningModule
            return LitMLP(lr=hparams["lr"])
        def configure_data(self):                # a LightningDataModule, or
            return MNISTData()                   # (train_dataloader, val_dataloader)

Each interval is one ``Trainer.fit`` that trains ``ready_every`` more optimizer
steps (``max_steps``) from the member's checkpoint; the score is ``monitor`` as
``Trainer.validate`` reports it. A checkpoint is Lightning's own (model,
optimizers, LR schedulers, loop state), stripped of the module's constructor
arguments so it loads with ``weights_only=True``. Hparams named like optimizer
``param_groups`` keys (``lr``, ``momentum``, ``weight_decay``; ``beta1``/``beta2``
for Adam) are written into the optimizers ``configure_optimizers`` made, after
the checkpoint is restored, so explored values win; with an LR scheduler ``lr``
is its base lr, as in :class:`torchpbt.TorchMember`. Override ``apply_hparams``
for values the module reads itself (e.g. dropout).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from ..engine.member import Member, optimizer_mapping, push_hparams

try:
    import lightning.pytorch as pl
except ImportError as e:  # pragma: no cover - exercised without the extra installed
    raise ImportError("torchpbt.integrations.lightning needs Lightning: "
                      "pip install 'torchpbt[lightning]' (or pip install lightning).") from e

# not needed to resume: the module is rebuilt by configure_module, and these may hold
# arbitrary objects that a weights_only load refuses
_DROP = (pl.LightningModule.CHECKPOINT_HYPER_PARAMS_KEY,
         pl.LightningModule.CHECKPOINT_HYPER_PARAMS_NAME,
         pl.LightningModule.CHECKPOINT_HYPER_PARAMS_TYPE, "callbacks")


class _PushHparams(pl.Callback):
    """After Lightning restored the optimizers from the checkpoint, write the hparams."""

    def __init__(self, member: LightningMember) -> None:
        self.member = member

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        m = self.member
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
        for i, opt in enumerate(trainer.optimizers):
            scheduler = next((s for s in schedulers if getattr(s, "optimizer", None) is opt),
                             None)
            owner = f"{type(m).__name__} (optimizer {i})"
            push_hparams(opt, scheduler, m.hparams,
                         optimizer_mapping(opt, m.hparams, m.optimizer_hparams, owner))


class LightningMember(Member):
    """A population member whose model is a ``LightningModule``; see the module docs."""

    monitor: str = "val_acc"  # the logged validation metric that is the score
    loss_metric: str | None = "train_loss"  # a logged training metric returned as the loss
    optimizer_hparams: Mapping[str, str] | None = None  # as TorchMember's
    trainer_kwargs: Mapping[str, Any] = {}  # more Trainer arguments (e.g. gradient_clip_val)

    def configure_module(self, hparams: Mapping[str, Any]) -> pl.LightningModule:
        raise NotImplementedError(f"{type(self).__name__}.configure_module(hparams) must "
                                  "return your LightningModule")

    def configure_data(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.configure_data() must return a "
                                  "LightningDataModule or (train_dataloader, val_dataloader)")

    # -- the Member contract ---------------------------------------------------
    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.hparams = dict(hparams)
        self.module = self.configure_module(hparams)
        if not isinstance(self.module, pl.LightningModule):
            raise TypeError(f"{type(self).__name__}.configure_module returned "
                            f"{type(self.module).__name__}; return a lightning.pytorch."
                            "LightningModule.")
        self.data = self.configure_data()
        self._state: dict[str, Any] | None = None  # Lightning's checkpoint, once trained

    def train(self, steps: int) -> float | None:
        with tempfile.TemporaryDirectory(prefix="torchpbt-lightning-") as tmp, _quiet():
            trainer = self._trainer(max_steps=self.global_step + steps,
                                    callbacks=[_PushHparams(self)], limit_val_batches=0)
            ckpt = None
            if self._state is not None:
                ckpt = os.path.join(tmp, "resume.ckpt")
                torch.save(self._state, ckpt)
            trainer.fit(self.module, **self._fit_data(), ckpt_path=ckpt, weights_only=True)
        state = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        self._state = {k: v for k, v in state.items() if k not in _DROP}
        loss = trainer.callback_metrics.get(self.loss_metric) if self.loss_metric else None
        return None if loss is None else float(loss)

    def evaluate(self) -> float:
        data = self._fit_data()
        with _quiet():
            trainer = self._trainer()
            out = trainer.validate(self.module, dataloaders=data.get("val_dataloaders"),
                                   datamodule=data.get("datamodule"), verbose=False)
        metrics = out[0] if out else {}
        if self.monitor not in metrics:
            raise KeyError(f"{type(self).__name__}.monitor={self.monitor!r} was not logged "
                           f"during validation; logged: {sorted(metrics)}. Log it in "
                           "validation_step (self.log(...)) or set monitor.")
        return float(metrics[self.monitor])

    def state_dict(self) -> dict[str, Any]:
        if self._state is not None:
            return self._state
        return {"state_dict": self.module.state_dict()}  # never trained: the weights only

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["state_dict"])
        # the rest (optimizers, schedulers, loops) is restored by the next fit
        self._state = dict(state) if "loops" in state else None

    @property
    def global_step(self) -> int:
        """Optimizer steps these weights have been trained (Lightning's count)."""
        return int(self._state["global_step"]) if self._state is not None else 0

    # -- helpers ---------------------------------------------------------------
    def _trainer(self, **kwargs: Any) -> pl.Trainer:
        accelerator, devices = ("cpu", 1) if self.device == "cpu" else \
            ("gpu", [torch.device(self.device).index or 0])
        options: dict[str, Any] = dict(accelerator=accelerator, devices=devices, logger=False,
                                       enable_checkpointing=False, enable_progress_bar=False,
                                       enable_model_summary=False, num_sanity_val_steps=0,
                                       max_epochs=-1)
        options.update(self.trainer_kwargs)
        options.update(kwargs)
        return pl.Trainer(**options)

    def _fit_data(self) -> dict[str, Any]:
        if isinstance(self.data, pl.LightningDataModule):
            return {"datamodule": self.data}
        if isinstance(self.data, (tuple, list)) and len(self.data) == 2:
            return {"train_dataloaders": self.data[0], "val_dataloaders": self.data[1]}
        raise TypeError(f"{type(self).__name__}.configure_data returned "
                        f"{type(self.data).__name__}; return a LightningDataModule or "
                        "(train_dataloader, val_dataloader).")


class _quiet:
    """Lightning's info lines and its hints about our choices (no logger, few workers)."""

    def __enter__(self) -> None:
        self._log = logging.getLogger("lightning.pytorch")
        self._level = self._log.level
        self._log.setLevel(logging.ERROR)
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        warnings.filterwarnings("ignore", module="lightning")

    def __exit__(self, *exc: object) -> None:
        self._warn.__exit__(*exc)
        self._log.setLevel(self._level)
