"""``torchpbt.replay``: train one fresh model along a run's discovered schedule.

A member's final weights were trained by several members in turn (each exploit
copied them on). Replay follows that lineage with a single fresh model, interval
by interval, exactly as the worker ran each one: the interval trained as member
``m`` from its step ``s`` is seeded with ``derive_seed(run_seed, m, s)`` before
``setup`` (first interval only) and again before ``train``; where the original
weights moved to another member (an exploit), the state goes through a
checkpoint round trip as the worker's load did; ``apply_hparams`` sets the
segment's values; ``evaluate`` runs after every interval. Nothing is read from
the run's checkpoints. So where the run is deterministic (the serial backend,
or any backend when intervals do not depend on scheduling), the replayed score
equals the original's bit for bit, and each interval's weights hash to the
checkpoint key the run stored for it.

Not replayable: knowledge sharing (training read other members' predictions)
and PBT-NAS *mixing* (a child of two parents is not a copy of one). Replay
also assumes what shapes training lives in ``state_dict()``, or is rebuilt the
same by ``setup()`` whatever the member's initial hparams were.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..backends import derive_seed, resolve_devices
from ..backends.worker import seed_everything
from ..engine.checkpoints import _canonical
from ..engine.member import as_score, check_member_class
from ..engine.resume import member_class_of
from .result import Result
from .schedule import Schedule, ScheduleError, Segment


@dataclass
class Replayed:
    """What a replay produced: the trained member, and per segment its score and whether
    its weights are byte-identical to the run's checkpoint of that interval."""

    schedule: Schedule
    member: Any
    scores: list[float]
    same_weights: list[bool | None]  # None: the schedule knows no checkpoint key

    @property
    def score(self) -> float:
        return self.scores[-1]

    @property
    def original_score(self) -> float | None:
        return self.schedule.score


def replay(run_dir: str | Path, member: int | None = None, *, storage: str | None = None,
           device: str | None = None, member_class: type | None = None) -> float:
    """Train one fresh model along ``member``'s schedule (default: the best member's)
    and return its final score; the original's is ``Schedule.from_run(...).score``.

    ``member_class`` overrides the class stored in the run (if it cannot be imported
    back); ``device`` defaults to the run's first device.
    """
    return replay_run(run_dir, member, storage=storage, device=device,
                      member_class=member_class).score


def replay_run(run_dir: str | Path, member: int | None = None, *, storage: str | None = None,
               device: str | None = None, member_class: type | None = None,
               on_segment: Callable[[Segment, float, bool | None], None] | None = None,
               ) -> Replayed:
    """:func:`replay` with everything it found: see :class:`Replayed`."""
    result = Result.load(run_dir, storage)
    cfg = result.settings
    schedule = Schedule.from_result(result, member)
    if cfg.knowledge_sharing:
        raise ScheduleError(
            f"run {result.run['name']} used knowledge sharing: its members trained on each "
            "other's predictions, which a single replayed model cannot see; replay needs a run "
            "without knowledge_sharing."
        )
    mixed = {(e["member_id"], e["step"]) for e in result.exploits
             if (e.get("detail") or {}).get("mix")}
    for seg in schedule:
        if (seg.member_id, seg.member_step) in mixed:
            raise ScheduleError(
                f"member {schedule.member_id}'s weights came from an architecture mix at step "
                f"{seg.member_step} of member {seg.member_id} (two parents); replay can only "
                "follow copies. Pick a member whose lineage has no mix."
            )
    if member_class is None:
        member_class = member_class_of(
            cfg.member, "member_class=YourClass to torchpbt.replay")
    if device is None:
        device = resolve_devices(cfg.devices or "cpu")[0]
    return replay_schedule(member_class, schedule, device, on_segment)


def replay_schedule(member_class: type, schedule: Schedule, device: str = "cpu",
                    on_segment: Callable[[Segment, float, bool | None], None] | None = None,
                    ) -> Replayed:
    """Train a fresh ``member_class`` along ``schedule``, seeded as the run's workers were."""
    check_member_class(member_class)
    if schedule.seed is None:
        raise ScheduleError(
            "this schedule carries no run seed, so its intervals cannot be seeded as the run's "
            "were; build it with Schedule.from_run."
        )
    if any(s.member_id is None or s.member_step is None for s in schedule):
        raise ScheduleError(
            "this schedule does not say which member trained each segment from which step; "
            "build it with Schedule.from_run."
        )
    inst: Any = None
    previous: int | None = None
    scores: list[float] = []
    same: list[bool | None] = []
    for seg in schedule:
        seed = derive_seed(schedule.seed, seg.member_id, seg.member_step)  # type: ignore[arg-type]
        hparams = dict(seg.hparams)
        seed_everything(seed)
        if inst is None:
            inst = _fresh(member_class, device, hparams)
        elif inst.needs_setup(hparams):  # the worker builds anew, then loads the weights
            state = _round_trip(inst.state_dict())
            inst = _fresh(member_class, device, hparams)
            inst.load_state_dict(state)
        elif seg.member_id != previous:  # an exploit: the worker loaded the donor's checkpoint
            inst.load_state_dict(_round_trip(inst.state_dict()))
        inst.apply_hparams(hparams)
        seed_everything(seed)  # again: setup() above has used random numbers
        inst.train(seg.steps)
        score = as_score(inst.evaluate(), f"{member_class.__name__}.evaluate()")
        identical = None if seg.checkpoint is None else _key(inst.state_dict()) == seg.checkpoint
        scores.append(score)
        same.append(identical)
        previous = seg.member_id
        if on_segment is not None:
            on_segment(seg, score, identical)
    return Replayed(schedule, inst, scores, same)


def _fresh(member_class: type, device: str, hparams: dict[str, Any]) -> Any:
    inst = member_class()
    inst.device = device
    inst.setup(dict(hparams))
    return inst


def _serialize(state: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(_canonical(state), buf)  # as CheckpointDir.save writes it
    return buf.getvalue()


def _round_trip(state: Any) -> Any:
    return torch.load(io.BytesIO(_serialize(state)), weights_only=True, map_location="cpu")


def _key(state: Any) -> str:
    return hashlib.sha256(_serialize(state)).hexdigest()
