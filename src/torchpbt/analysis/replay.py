"""``torchpbt.replay``: train one fresh model along a run's discovered schedule.

A member's final weights were trained by several members in turn (each exploit
copied them on). Replay follows that lineage with a single fresh model, interval
by interval, with the workers' own interval runner: the interval trained as
member ``m`` from its step ``s`` is the task ``(m, s)`` seeded with
``derive_seed(run_seed, m, s)``, starting from the weights the previous segment
wrote (in a scratch directory: nothing is read from the run's checkpoints), so
an exploit loads them into a fresh member as the worker's did. So where the run
is deterministic (the serial backend, or any backend when intervals do not
depend on scheduling), the replayed score
equals the original's bit for bit, and each interval's weights hash to the
checkpoint key the run stored for it.

Not replayable: knowledge sharing (training read other members' predictions)
and PBT-NAS *mixing* (a child of two parents is not a copy of one). Replay
also assumes what shapes training lives in ``state_dict()``, or is rebuilt the
same by ``setup()`` whatever the member's initial hparams were.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..backends import IntervalRunner, Task, derive_seed, resolve_devices
from ..engine.member import check_member_class
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
    scores: list[float] = []
    same: list[bool | None] = []
    key: str | None = None
    # the workers' own interval code on a scratch checkpoint directory: the same order of
    # seeding, setup, load, apply_hparams, train, evaluate and save as in the run
    with tempfile.TemporaryDirectory(prefix="torchpbt-replay-") as scratch:
        runner = IntervalRunner(member_class, scratch, device)
        for seg in schedule:
            member_id, step = cast(int, seg.member_id), cast(int, seg.member_step)
            out = runner.run(Task(member_id, step, seg.steps, dict(seg.hparams), key,
                                  derive_seed(schedule.seed, member_id, step)))
            if out.failed:
                raise ScheduleError(
                    f"replaying member {member_id}'s interval from step {step} failed, where "
                    f"the run's did not: {(out.error or '').strip().splitlines()[-1]}")
            key = out.checkpoint
            identical = None if seg.checkpoint is None else key == seg.checkpoint
            scores.append(out.score)
            same.append(identical)
            if on_segment is not None:
                on_segment(seg, out.score, identical)
        inst = runner.live_member(member_id)
    return Replayed(schedule, inst, scores, same)
