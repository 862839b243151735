"""A run's settings as one typed value: validated by ``run()``, stored once as JSON with
the run, read back by attribute everywhere (resume, workers, replay, report, CLI).

The stored JSON keeps the keys it always had, so stores written by earlier versions
read back: a key they lack takes the default it had when it was added.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..algorithm.scheduler_types import PBTConfig

if TYPE_CHECKING:
    from pathlib import Path

    from ..backends.worker import ClassRef
    from .extension import RunExtension


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    population: int
    ready_every: int
    steps: int
    mode: str
    sync: bool
    burn_in: int
    inherit_hparams: bool
    explore_when: str
    seed: int
    exploit: str  # repr, for people (the report, status)
    explore: str
    exploit_spec: Any  # what resume rebuilds the strategy from (engine.specs)
    explore_spec: Any
    backend: str
    workers: int
    devices: list[str]
    member: dict[str, Any]  # module, qualname, path: see ClassRef
    run_dir: str
    torchpbt: str  # the version that created the run
    knowledge_sharing: dict[str, Any] | None = None
    max_retries: int = 2
    worker_timeout: float = 60.0
    tensorboard: str | None = None  # the live TensorBoard log directory, if any
    extra: dict[str, Any] = field(default_factory=dict)  # stored keys this version lacks

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "extra"}
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSettings:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})

    @property
    def pbt_config(self) -> PBTConfig:
        return PBTConfig(self.population, self.ready_every, self.steps, self.mode,
                         self.burn_in, self.inherit_hparams, self.explore_when)

    @property
    def total_steps(self) -> int:
        return self.population * self.steps

    @property
    def member_ref(self) -> ClassRef:
        from ..backends.worker import ClassRef

        return ClassRef.from_dict(self.member)

    def extensions(self, run_path: Path) -> list[RunExtension]:
        """The controller's halves of the extensions this run turned on."""
        from .extension import run_extensions

        return run_extensions({"knowledge_sharing": self.knowledge_sharing}, run_path)
