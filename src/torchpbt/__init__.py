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
    "CheckpointDir": "checkpoints", "CheckpointError": "checkpoints",
    "KnowledgeSharing": "distill", "distillation_loss": "distill",
    "MemberView": "exploit", "Tournament": "exploit", "Truncation": "exploit", "TTest": "exploit",
    "Perturb": "explore", "Resample": "explore",
    "check_log": "lineage",
    "Member": "member", "TorchMember": "member",
    "PB2": "pb2",
    "replay": "replay",
    "write_report": "report",
    "Result": "result",
    "resume": "resume",
    "RunInterrupted": "runner", "load": "runner", "run": "runner",
    "Schedule": "schedule", "ScheduleError": "schedule",
    "AsyncScheduler": "scheduler", "Decision": "scheduler", "NoProgress": "scheduler",
    "PBTConfig": "scheduler", "Report": "scheduler", "SyncScheduler": "scheduler",
    "Choice": "space", "Float": "space", "Int": "space", "Space": "space",
    "SpaceError": "space",
    "StoreError": "store",
    "export_tensorboard": "tensorboard",
    "VectorMember": "vectorized.member",
    "serve_worker": "worker_service",
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
    from .checkpoints import CheckpointDir, CheckpointError
    from .distill import KnowledgeSharing, distillation_loss
    from .exploit import MemberView, Tournament, Truncation, TTest
    from .explore import Perturb, Resample
    from .lineage import check_log
    from .member import Member, TorchMember
    from .pb2 import PB2
    from .replay import replay
    from .report import write_report
    from .result import Result
    from .resume import resume
    from .runner import RunInterrupted, load, run
    from .schedule import Schedule, ScheduleError
    from .scheduler import AsyncScheduler, Decision, NoProgress, PBTConfig, Report, SyncScheduler
    from .space import Choice, Float, Int, Space, SpaceError
    from .store import StoreError
    from .tensorboard import export_tensorboard
    from .vectorized.member import VectorMember
    from .worker_service import serve as serve_worker
