"""Knowledge sharing (Oehmcke & Kramer, 2018): the best members teach the population.

Our reading of the method (only the abstract is public): a shared table holds a
soft target per training sample. While a member ranks in the population's top
``top_k``, the predictions it makes (at temperature τ) on the samples it trains
on are written to that table. Every member trains on::

    (1 − α) · CE(labels) + α · τ² · KL(table ‖ student_τ)   for samples with an entry
    CE(labels)                                               for samples without one

The table lives in the run directory as versioned, content-checked files so
worker processes on the same machine read it; the controller alone writes it,
merging what the top members sent back with their interval outcomes. Pure
tensor code here; file I/O is in :class:`KnowledgeTable`.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...engine.checkpoints import atomic_write
from ...engine.faults import crash_point


@dataclass(frozen=True)
class KnowledgeSharing:
    """Options of knowledge sharing; pass to ``torchpbt.run(..., knowledge_sharing=...)``.

    ``alpha`` is a number in [0, 1] or the name of a hyperparameter in the
    search space (then PBT tunes it). ``top_k`` members may write;
    ``refresh_every`` is how many writer intervals are merged before a new
    table version is published.
    """

    alpha: float | str = 0.5
    temperature: float = 2.0
    top_k: int = 1
    refresh_every: int = 1

    def validate(self, space: Mapping[str, Any], population: int) -> None:
        if isinstance(self.alpha, str):
            if self.alpha not in space:
                raise ValueError(
                    f"KnowledgeSharing(alpha={self.alpha!r}) names no hyperparameter; the space "
                    f"has {sorted(space)}. Add e.g. {self.alpha!r}: torchpbt.Float(0.0, 1.0)."
                )
            dom = space[self.alpha]
            low, high = getattr(dom, "low", None), getattr(dom, "high", None)
            if low is None or high is None or low < 0 or high > 1:
                raise ValueError(
                    f"KnowledgeSharing(alpha={self.alpha!r}): that hyperparameter must be a "
                    f"Float inside [0, 1], not {dom!r}."
                )
        elif isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not (
            0.0 <= self.alpha <= 1.0
        ):
            raise ValueError(
                f"KnowledgeSharing(alpha={self.alpha!r}): alpha must be in [0, 1] "
                "(0 = plain PBT, 1 = only the shared soft targets)."
            )
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not self.temperature > 0:
            raise ValueError(
                f"KnowledgeSharing(temperature={self.temperature!r}): give a temperature > 0 "
                "(e.g. 2.0)."
            )
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or not (
            1 <= self.top_k <= population
        ):
            raise ValueError(
                f"KnowledgeSharing(top_k={self.top_k!r}): top_k must be an int in "
                f"[1, population={population}]."
            )
        if isinstance(self.refresh_every, bool) or not isinstance(self.refresh_every, int) \
                or self.refresh_every < 1:
            raise ValueError(
                f"KnowledgeSharing(refresh_every={self.refresh_every!r}): give an int >= 1."
            )

    def alpha_for(self, hparams: Mapping[str, Any]) -> float:
        return float(hparams[self.alpha]) if isinstance(self.alpha, str) else float(self.alpha)

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "temperature": self.temperature, "top_k": self.top_k,
                "refresh_every": self.refresh_every}

    def run_extension(self, run_path: Path) -> Any:
        """The controller's half (``ext/knowledge/plugin.py``)."""
        from .plugin import KnowledgeRun

        return KnowledgeRun(self, run_path)


def distillation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    soft_targets: torch.Tensor | None,
    has_target: torch.Tensor | None,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """Mean over the batch of the mixed loss above; exactly ``F.cross_entropy`` when alpha is 0
    or no sample of the batch has a shared target."""
    if alpha == 0.0 or soft_targets is None or has_target is None or not bool(has_target.any()):
        return F.cross_entropy(logits, labels)
    ce = F.cross_entropy(logits, labels, reduction="none")
    log_student = F.log_softmax(logits / temperature, dim=1)
    teacher = soft_targets.to(logits.dtype)
    # KL(teacher ‖ student) per sample; 0·log 0 taken as 0
    kl = (teacher * (torch.log(teacher.clamp_min(1e-12)) - log_student)).sum(dim=1)
    mask = has_target.to(logits.dtype)
    per_sample = (1 - alpha * mask) * ce + alpha * mask * temperature**2 * kl
    return per_sample.mean()


class SharedKnowledge:
    """What a member sees in one interval: the table to read, and whether it writes."""

    def __init__(self, options: KnowledgeSharing, probs: torch.Tensor | None,
                 has: torch.Tensor | None, version: int, writer: bool, alpha: float) -> None:
        self.options, self.probs, self.has = options, probs, has
        self.version, self.writer, self.alpha = version, writer, alpha
        self._written: dict[int, torch.Tensor] = {}

    def loss(self, logits: torch.Tensor, labels: torch.Tensor,
             indices: torch.Tensor) -> torch.Tensor:
        """The training loss for a batch of samples ``indices``; records the batch if writing."""
        tau = self.options.temperature
        if self.writer:
            soft = F.softmax(logits.detach().float() / tau, dim=1).cpu()
            for i, p in zip(indices.tolist(), soft, strict=True):
                self._written[i] = p  # the latest prediction on a sample wins
        if self.probs is None or self.has is None:
            return distillation_loss(logits, labels, None, None, self.alpha, tau)
        idx = indices.to(self.probs.device)
        # the table only reaches the highest index any writer has trained on so far
        inside = idx < len(self.has)
        safe = idx.clamp_max(len(self.has) - 1)
        return distillation_loss(logits, labels, self.probs[safe].to(logits.device),
                                 (self.has[safe] & inside).to(logits.device), self.alpha, tau)

    def contribution(self) -> dict[str, torch.Tensor] | None:
        if not self._written:
            return None
        keys = sorted(self._written)
        return {"indices": torch.tensor(keys, dtype=torch.long),
                "probs": torch.stack([self._written[k] for k in keys])}


WORKING = "table-working.pt"


class KnowledgeTable:
    """The versioned soft-target table in ``RUN_DIR/knowledge``; the controller writes it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.version = 0
        self.probs: torch.Tensor | None = None
        self.has: torch.Tensor | None = None
        self._pending = 0

    def file(self, version: int) -> Path:
        return self.path / f"table-v{version:06d}.pt"

    def merge(self, contribution: Mapping[str, torch.Tensor], refresh_every: int) -> bool:
        """Add one writer's predictions; publish a new version every ``refresh_every`` merges."""
        idx, probs = contribution["indices"], contribution["probs"].float()
        n = int(idx.max()) + 1
        if self.probs is None or self.has is None:
            self.probs = torch.zeros(n, probs.shape[1])
            self.has = torch.zeros(n, dtype=torch.bool)
        elif n > len(self.has):
            grow = n - len(self.has)
            self.probs = torch.cat([self.probs, torch.zeros(grow, self.probs.shape[1])])
            self.has = torch.cat([self.has, torch.zeros(grow, dtype=torch.bool)])
        self.probs[idx] = probs
        self.has[idx] = True
        self._pending += 1
        if self._pending < refresh_every:
            # merges not yet published must survive a controller crash too
            self._write(self.path / WORKING)
            return False
        self.publish()
        return True

    def _write(self, target: Path) -> str:
        buf = io.BytesIO()
        torch.save({"probs": self.probs, "has": self.has, "version": self.version}, buf)
        data = buf.getvalue()
        atomic_write(target, data)
        return hashlib.sha256(data).hexdigest()

    def publish(self) -> None:
        self._pending = 0
        self.version += 1
        digest = self._write(self.file(self.version))
        crash_point("knowledge_publish")
        (self.path / f"table-v{self.version:06d}.sha256").write_text(digest)

    def state(self) -> dict[str, int]:
        return {"version": self.version, "pending": self._pending}

    def restore(self, state: Mapping[str, int]) -> None:
        """Back to the state the store committed (files may be one merge ahead of it:
        that merge is redone identically when its interval runs again)."""
        self.version, self._pending = int(state["version"]), int(state["pending"])
        self.probs = self.has = None
        source = self.path / WORKING if self._pending else self.file(self.version)
        if self._pending or self.version:
            if not source.is_file():
                raise RuntimeError(
                    f"knowledge table {source} is missing; the run directory is incomplete."
                )
            if self._pending:
                data = torch.load(source, weights_only=True, map_location="cpu")
                self.probs, self.has = data["probs"], data["has"]
            else:
                self.probs, self.has = self.load(self.path, self.version)

    def prune(self, keep: set[int]) -> None:
        """Delete versions no queued or running interval reads (and not the latest)."""
        keep = keep | {self.version}
        for f in self.path.glob("table-v*.pt"):
            if int(f.stem.split("-v")[1]) not in keep:
                f.unlink(missing_ok=True)
                f.with_suffix(".sha256").unlink(missing_ok=True)

    @property
    def entries(self) -> int:
        return 0 if self.has is None else int(self.has.sum())

    @classmethod
    def load(cls, path: str | os.PathLike[str], version: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Read one version (any process); verified against its recorded hash."""
        table = cls.__new__(cls)
        table.path = Path(path)
        data = table.file(version).read_bytes()
        digest = table.file(version).with_suffix(".sha256").read_text().strip()
        if hashlib.sha256(data).hexdigest() != digest:
            raise RuntimeError(f"knowledge table v{version} in {path} is damaged")
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        return state["probs"], state["has"]
