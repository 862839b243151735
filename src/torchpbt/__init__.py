"""torchpbt: Population Based Training for PyTorch.

The public names below load on first use (PEP 562): ``import torchpbt`` stays cheap,
and a worker process imports only the parts it runs, not the store, the report or
the dashboard.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → the module that defines it
_EXPORTS = {
    "CheckpointDir": "engine.checkpoints", "CheckpointError": "engine.checkpoints",
    "KnowledgeSharing": "ext.knowledge.sharing", "distillation_loss": "ext.knowledge.sharing",
    "MemberView": "algorithm.exploit", "Tournament": "algorithm.exploit", "Truncation": "algorithm.exploit", "TTest": "algorithm.exploit",
    "Perturb": "algorithm.explore", "Resample": "algorithm.explore",
    "check_log": "analysis.lineage",
    "Member": "engine.member", "TorchMember": "engine.member",
    "PB2": "algorithm.pb2",
    "replay": "analysis.replay",
    "write_report": "ui.report",
    "Result": "analysis.result",
    "resume": "engine.resume",
    "RunInterrupted": "engine.runner", "load": "engine.runner", "run": "engine.runner",
    "Schedule": "analysis.schedule", "ScheduleError": "analysis.schedule",
    "AsyncScheduler": "algorithm.scheduler", "Decision": "algorithm.scheduler", "NoProgress": "algorithm.scheduler",
    "PBTConfig": "algorithm.scheduler", "Report": "algorithm.scheduler", "SyncScheduler": "algorithm.scheduler",
    "Choice": "algorithm.space", "Float": "algorithm.space", "Int": "algorithm.space", "Space": "algorithm.space",
    "SpaceError": "algorithm.space",
    "StoreError": "store",
    "export_tensorboard": "analysis.tensorboard",
    "VectorMember": "backends.vectorized.member",
    "serve_worker": "backends.worker_service",
}
_ALIASES = {"serve_worker": "serve"}
_SUBMODULES = ("datasets", "nas")

__all__ = [  # literal, so tools see the public names
    "AsyncScheduler", "CheckpointDir", "CheckpointError", "Choice", "Decision", "Float", "Int",
    "KnowledgeSharing", "Member", "MemberView", "NoProgress", "PB2", "PBTConfig", "Perturb",
    "Report", "Resample", "Result", "RunInterrupted", "Schedule", "ScheduleError", "Space",
    "SpaceError", "StoreError", "SyncScheduler", "TTest", "TorchMember", "Tournament",
    "Truncation", "VectorMember", "__version__", "check_log", "datasets", "distillation_loss",
    "export_tensorboard", "load", "nas", "replay", "resume", "run", "serve_worker",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'torchpbt' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), _ALIASES.get(name, name))
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # what static tools see; at run time the names above load lazily
    from . import datasets, nas
    from .algorithm.exploit import MemberView, Tournament, Truncation, TTest
    from .algorithm.explore import Perturb, Resample
    from .algorithm.pb2 import PB2
    from .algorithm.scheduler import (
        AsyncScheduler,
        Decision,
        NoProgress,
        PBTConfig,
        Report,
        SyncScheduler,
    )
    from .algorithm.space import Choice, Float, Int, Space, SpaceError
    from .analysis.lineage import check_log
    from .analysis.replay import replay
    from .analysis.result import Result
    from .analysis.schedule import Schedule, ScheduleError
    from .analysis.tensorboard import export_tensorboard
    from .backends.vectorized.member import VectorMember
    from .backends.worker_service import serve as serve_worker
    from .engine.checkpoints import CheckpointDir, CheckpointError
    from .engine.member import Member, TorchMember
    from .engine.resume import resume
    from .engine.runner import RunInterrupted, load, run
    from .ext.knowledge.sharing import KnowledgeSharing, distillation_loss
    from .store import StoreError
    from .ui.report import write_report
