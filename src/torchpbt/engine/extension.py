"""The seam extensions plug into; knowledge sharing and PBT-NAS mixing are two.

An extension has up to two halves, each a small contract:

- a :class:`RunExtension` lives in the controller. For each task it may add a
  payload (what the task carries, plain JSON, under the extension's ``name``);
  it reads each outcome's record and says what the interval row and the event
  log keep; its state is committed with the run's, so a resumed run goes on
  where the crash left it.
- an :class:`IntervalHook` lives wherever intervals run (a worker process, a Ray
  actor, the serial backend). It is found by the payload's name, may set the
  member's weights itself (a NAS child of two checkpoints), attaches what the
  member uses while it trains, and returns what the outcome records.

The core never imports an extension's code: hooks are named in :data:`HOOKS` by
import path (or a task names one as ``"package.module:Class"``) and resolved the
first time a task carries their payload, the way entry points name plugins.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..backends.base import Outcome, Task
    from ..store import EventRecord
    from .checkpoints import CheckpointDir

# payload name -> the hook class that runs it, as "module:attribute"
HOOKS: Mapping[str, str] = MappingProxyType({
    "knowledge": "torchpbt.ext.knowledge.plugin:KnowledgeHook",
    "mix": "torchpbt.ext.nas.plugin:MixHook",
})

# run() option -> the class of the options a user passes for it; the options'
# ``run_extension(run_path)`` builds the controller's half
OPTIONS: Mapping[str, str] = MappingProxyType({
    "knowledge_sharing": "torchpbt.ext.knowledge.sharing:KnowledgeSharing",
})


class IntervalHook:
    """The worker's half; subclass it and override what the extension needs. One
    instance per interval runner and name, so it may cache (a table it read).

    ``sets_weights``: the hook builds the member's starting weights itself in
    :meth:`load`; the runner then starts from a fresh ``setup()`` and loads no
    checkpoint."""

    sets_weights = False

    def __init__(self, checkpoints: CheckpointDir) -> None:
        self.checkpoints = checkpoints

    def load(self, member: Any, task: Task, payload: Any) -> None:
        """Give ``member`` its starting weights (only called when ``sets_weights``)."""
        raise TypeError(f"{type(self).__name__} sets no weights (sets_weights is False)")

    def before_train(self, member: Any, task: Task, payload: Any) -> None:
        """Just before ``member.train``: attach what training reads."""

    def after_train(self, member: Any, task: Task, payload: Any) -> Any:
        """After a successful interval: detach, and return what the outcome records
        (``None``: nothing). Tensors are fine; the queue backend ships them in a file."""
        return None


class RunExtension(Protocol):
    """The controller's half."""

    name: str

    def payload(self, member_id: int, scheduler: Any) -> Any:
        """What member ``member_id``'s next task carries (JSON), or ``None``."""

    def on_outcome(self, task: Task, out: Outcome) -> tuple[dict[str, Any] | None,
                                                            list[EventRecord]]:
        """What the interval row keeps (``extra``) and which events the step logs."""

    def state(self) -> Any:
        """JSON committed with every step that changes it."""

    def restore(self, state: Any) -> None: ...

    def after_commit(self, in_flight: Iterable[Task]) -> None:
        """Tidy up once a step is durable (e.g. delete files no running task reads)."""


def import_path(path: str) -> Any:
    """The object ``"package.module:Name"`` (or ``"...:Outer.Inner"``) names, imported."""
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def hook_class(name: str) -> type[IntervalHook]:
    """The hook class for payload ``name``: a built-in name or ``"module:attribute"``."""
    path = HOOKS.get(name, name)
    if ":" not in path:
        raise ValueError(
            f"a task carries a payload named {name!r}, which names no interval hook: use one "
            f"of {sorted(HOOKS)} or 'package.module:Class'.")
    return import_path(path)


def options_class(option: str) -> type[Any]:
    """The options class of ``run(<option>=...)`` (imported on first use)."""
    return import_path(OPTIONS[option])


def run_extensions(options: Mapping[str, Any], run_path: Path) -> list[RunExtension]:
    """The controller's halves of the extensions a run's stored ``options`` turn on."""
    return [options_class(k)(**v).run_extension(run_path)
            for k, v in options.items() if v is not None]


class Hooks:
    """The hooks one interval runner has met so far, built on first use."""

    def __init__(self, checkpoints: CheckpointDir) -> None:
        self.checkpoints = checkpoints
        self._built: dict[str, IntervalHook] = {}

    def of(self, task: Task) -> list[tuple[str, IntervalHook, Any]]:
        """``(name, hook, payload)`` for each extension the task carries, in its order."""
        out = []
        for name, payload in task.extras.items():
            hook = self._built.get(name)
            if hook is None:
                hook = self._built[name] = hook_class(name)(self.checkpoints)
            out.append((name, hook, payload))
        return out
