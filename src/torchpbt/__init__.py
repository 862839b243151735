"""torchpbt: Population Based Training for PyTorch."""

__version__ = "0.1.0"

from . import datasets, nas  # noqa: E402
from .checkpoints import CheckpointDir, CheckpointError  # noqa: E402
from .distill import KnowledgeSharing, distillation_loss  # noqa: E402
from .exploit import MemberView, Tournament, Truncation, TTest  # noqa: E402
from .explore import Perturb, Resample  # noqa: E402
from .lineage import check_log  # noqa: E402
from .member import Member, TorchMember  # noqa: E402
from .pb2 import PB2  # noqa: E402
from .replay import replay  # noqa: E402
from .report import write_report  # noqa: E402
from .result import Result  # noqa: E402
from .resume import resume  # noqa: E402
from .runner import RunInterrupted, load, run  # noqa: E402
from .schedule import Schedule, ScheduleError  # noqa: E402
from .scheduler import AsyncScheduler, Decision, NoProgress, PBTConfig, Report, SyncScheduler  # noqa: E402
from .space import Choice, Float, Int, Space, SpaceError  # noqa: E402
from .store import StoreError  # noqa: E402
from .tensorboard import export_tensorboard  # noqa: E402
from .vectorized.member import VectorMember  # noqa: E402
from .worker_service import serve as serve_worker  # noqa: E402

__all__ = [
    "AsyncScheduler", "CheckpointDir", "CheckpointError", "Choice", "Decision", "Float", "Int",
    "KnowledgeSharing", "datasets", "distillation_loss", "nas",
    "Member", "MemberView", "NoProgress", "PB2", "PBTConfig", "Perturb", "Report", "Resample", "Result", "Schedule",
    "ScheduleError", "Space", "SpaceError", "StoreError", "SyncScheduler", "TTest",
    "TorchMember", "Tournament", "Truncation", "RunInterrupted", "VectorMember", "__version__",
    "check_log", "export_tensorboard", "load", "replay", "resume", "run", "serve_worker",
    "write_report",
]
