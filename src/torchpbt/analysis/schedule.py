"""The hyperparameter schedule a member's weights were trained with, as a plain object.

PBT's real output besides a model is a *schedule*: which hyperparameters the
final weights saw at which step, across every exploit that copied them from
member to member. :class:`Schedule` holds that schedule one interval per
segment, in the weights' own age (step 0 = fresh initialisation), each segment
saying which member trained it from which of its own steps. It needs no run to
be used: save it as JSON and follow it in a plain PyTorch loop::

    import torchpbt as pbt
    schedule = pbt.Schedule.from_json("schedule.json")   # or Schedule.from_run("runs/...")
    for step in range(schedule.total):
        for group in optimizer.param_groups:
            group["lr"] = schedule.at(step)["lr"]
        train_one_step(model, optimizer)
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import numbers
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import lineage

FORMAT = "torchpbt.schedule/1"


class ScheduleError(ValueError):
    """A schedule that cannot be built, read or used (with the fix in the message)."""


@dataclass(frozen=True)
class Segment:
    """``hparams`` in force from ``from_step`` to ``to_step`` (exclusive) of the weights'
    age; trained as member ``member_id`` from its own step ``member_step`` (the seed of
    that interval is ``derive_seed(run_seed, member_id, member_step)``)."""

    from_step: int
    to_step: int
    hparams: dict[str, Any]
    member_id: int | None = None
    member_step: int | None = None
    score: float | None = None  # the original run's score after this segment
    checkpoint: str | None = None  # the key of the weights it wrote, in RUN_DIR/checkpoints

    @property
    def steps(self) -> int:
        return self.to_step - self.from_step

    def __getitem__(self, name: str) -> Any:
        """``seg["hparams"]`` reads like ``seg.hparams`` (``Result.schedule()`` once gave dicts)."""
        if name not in _SEGMENT_FIELDS:
            raise KeyError(name)
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return {"from_step": self.from_step, "to_step": self.to_step,
                "hparams": dict(self.hparams), "member_id": self.member_id,
                "member_step": self.member_step, "score": self.score,
                "checkpoint": self.checkpoint}


_SEGMENT_FIELDS = frozenset(f.name for f in dataclasses.fields(Segment))


@dataclass(frozen=True)
class Schedule:
    """Segments covering steps ``[0, total)`` of one set of weights, oldest first.

    ``member_id`` is the member whose weights these are, ``seed`` the run's seed
    (``torchpbt.replay`` needs it), ``run`` the run's name; all three are ``None``
    for a hand-made schedule.
    """

    segments: tuple[Segment, ...]
    member_id: int | None = None
    seed: int | None = None
    run: str | None = None
    _starts: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        segs = tuple(s if isinstance(s, Segment) else _segment(s, i)
                     for i, s in enumerate(self.segments))
        if not segs:
            raise ScheduleError("a schedule needs at least one segment; none given.")
        expected = 0
        for i, s in enumerate(segs):
            if s.from_step != expected or s.to_step <= s.from_step:
                raise ScheduleError(
                    f"segment {i} covers steps [{s.from_step}, {s.to_step}); segments must be "
                    f"contiguous from step 0 and non-empty, so it should start at {expected}."
                )
            expected = s.to_step
        object.__setattr__(self, "segments", segs)
        object.__setattr__(self, "_starts", [s.from_step for s in segs])

    # -- building -----------------------------------------------------------
    @classmethod
    def from_run(cls, run_dir: str | Path, member: int | None = None,
                 storage: str | None = None) -> Schedule:
        """The schedule of ``member``'s latest weights (default: the best member's)."""
        from .result import Result

        return cls.from_result(Result.load(run_dir, storage), member)

    @classmethod
    def from_result(cls, result: Any, member: int | None = None) -> Schedule:
        ids = sorted(m["member_id"] for m in result.members)
        if member is None:
            member = result.best_member_id
        elif isinstance(member, bool) or not isinstance(member, numbers.Integral) \
                or member not in ids:
            raise ScheduleError(
                f"run {result.run['name']} has no member {member!r}; its members are "
                f"{ids[0]}–{ids[-1]}." if ids else f"run {result.run['name']} has no members."
            )
        return cls.from_intervals(result.intervals, int(member),
                                  result.checkpoint_of(int(member)), seed=result.settings.seed,
                                  run=result.run.get("name"))

    @classmethod
    def from_intervals(cls, intervals: Sequence[Mapping[str, Any]], member_id: int,
                       checkpoint: str | None = None, *, seed: int | None = None,
                       run: str | None = None) -> Schedule:
        """The schedule of the weights ``checkpoint`` (default: ``member_id``'s latest),
        from a run's interval rows: one segment per interval of their lineage."""
        chain = lineage.trace(intervals, member_id, checkpoint)
        if not chain:
            raise ScheduleError(
                f"member {member_id} of run {run or '?'} has no trained weights yet (no "
                "interval of its lineage finished with a checkpoint); pick another member or "
                "wait for the run."
            )
        segs, age = [], 0
        for iv in chain:
            n = iv["end_step"] - iv["start_step"]
            segs.append(Segment(age, age + n, dict(iv["hparams"]), iv["member_id"],
                                iv["start_step"], iv.get("score"), iv.get("end_checkpoint")))
            age += n
        return cls(tuple(segs), member_id, seed, run)

    def merged(self) -> Schedule:
        """Neighbouring segments trained as the same member with the same hparams joined
        into one (the compact view ``Result.schedule()`` gives). For reading: a replay
        needs one segment per interval, since each interval had its own seed."""
        out: list[Segment] = []
        for seg in self.segments:
            last = out[-1] if out else None
            if last is not None and last.member_id == seg.member_id \
                    and last.hparams == seg.hparams:
                out[-1] = dataclasses.replace(last, to_step=seg.to_step, score=seg.score,
                                              checkpoint=seg.checkpoint)
            else:
                out.append(seg)
        return Schedule(tuple(out), self.member_id, self.seed, self.run)

    # -- use ----------------------------------------------------------------
    @property
    def total(self) -> int:
        """Steps the schedule covers: valid steps are ``0 … total-1``."""
        return self.segments[-1].to_step

    @property
    def score(self) -> float | None:
        """The original run's score of the weights at the end of the schedule."""
        return self.segments[-1].score

    def segment_at(self, step: int) -> Segment:
        if isinstance(step, bool):
            raise TypeError(f"step={step!r}: give an int step.")
        try:
            step = operator.index(step)
        except TypeError:
            raise TypeError(f"step={step!r} is a {type(step).__name__}; give an int step.") from None
        if not 0 <= step < self.total:
            raise ScheduleError(
                f"step {step} is outside the schedule, which covers steps 0 to {self.total - 1} "
                f"([0, {self.total})); keep the last segment's values yourself to go further."
            )
        return self.segments[bisect.bisect_right(self._starts, step) - 1]

    def at(self, step: int) -> dict[str, Any]:
        """The hyperparameters in force at ``step`` of the weights' age (a fresh dict)."""
        return dict(self.segment_at(step).hparams)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def __getitem__(self, i: int) -> Segment:
        return self.segments[i]

    def __len__(self) -> int:
        return len(self.segments)

    def changes(self) -> list[tuple[int, dict[str, Any]]]:
        """``(step, hparams)`` wherever the hyperparameters change: the compact view."""
        out: list[tuple[int, dict[str, Any]]] = []
        for s in self.segments:
            if not out or out[-1][1] != s.hparams:
                out.append((s.from_step, dict(s.hparams)))
        return out

    # -- JSON ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "member_id": self.member_id, "seed": self.seed,
                "run": self.run, "total": self.total,
                "segments": [s.to_dict() for s in self.segments]}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Schedule:
        if not isinstance(doc, Mapping) or not isinstance(doc.get("segments"), list):
            raise ScheduleError(
                "a schedule document is an object with a 'segments' list (as written by "
                "Schedule.to_json)."
            )
        fmt = doc.get("format", FORMAT)
        if fmt != FORMAT:
            raise ScheduleError(f"schedule format {fmt!r} is not {FORMAT!r}; upgrade torchpbt.")
        return cls(tuple(_segment(s, i) for i, s in enumerate(doc["segments"])),
                   doc.get("member_id"), doc.get("seed"), doc.get("run"))

    def to_json(self, path: str | Path) -> Path:
        """Write the schedule as JSON (ints stay ints, floats stay floats); return the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> Schedule:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise ScheduleError(f"{path} does not exist; write it with Schedule.to_json.") from None
        except json.JSONDecodeError as exc:
            raise ScheduleError(f"{path} is not JSON ({exc}).") from None
        return cls.from_dict(doc)


def _segment(s: Any, i: int) -> Segment:
    if isinstance(s, Segment):
        return s
    if not isinstance(s, Mapping):
        raise ScheduleError(f"segment {i} is {s!r}; give an object with from_step, to_step, hparams.")
    missing = [k for k in ("from_step", "to_step", "hparams") if k not in s]
    if missing:
        raise ScheduleError(f"segment {i} lacks {', '.join(missing)}.")
    for k in ("from_step", "to_step", "member_id", "member_step"):
        v = s.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ScheduleError(f"segment {i}: {k}={v!r} must be an int.")
    if not isinstance(s["hparams"], Mapping):
        raise ScheduleError(f"segment {i}: hparams must be an object of name: value.")
    score = s.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                              or not math.isfinite(score)):
        raise ScheduleError(f"segment {i}: score={score!r} must be a finite number or null.")
    return Segment(s["from_step"], s["to_step"], dict(s["hparams"]), s.get("member_id"),
                   s.get("member_step"), None if score is None else float(score),
                   s.get("checkpoint"))
