"""The population's learning curve, so exploit compares scores of the same age. Pure.

On a rising curve an asynchronous reporter would otherwise be ranked against
members whose latest scores are older, hence lower: the leaders look good only
because they are ahead, and exploit fires far below its nominal rate. The curve
is the mean score reported at each age (step); a score measured at age ``t`` is
compared with a reporter at age ``s`` as ``score + level(s) − level(t)``: its
distance from its own cohort's mean, moved to the reporter's cohort.

Two details keep the comparison unbiased. The reporter's own score is left out
of its cohort's mean (in it, the reporter would pull the mean towards itself and
never look bad). And an age few members have reached yet is also predicted
from the two ages before it, which counts as one more report: the first
reporters at a new age would otherwise have no cohort at all. Mean gains of the
same members between two ages would not do: selection makes them regress
(a copy starts from its donor's high score), so even pure noise would look like
a falling curve.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping, Sequence


class LearningCurve:
    """Sum and count of the finite scores reported at each age."""

    def __init__(self) -> None:
        self._ages: list[int] = []  # sorted keys of _sums
        self._sums: dict[int, list[float]] = {}  # age -> [sum of scores, count]

    def record(self, age: int, score: float) -> None:
        if not math.isfinite(score):
            return
        acc = self._sums.get(age)
        if acc is None:
            acc = self._sums[age] = [0.0, 0.0]
            insort(self._ages, age)
        acc[0] += score
        acc[1] += 1

    def _mean(self, age: int) -> float | None:
        acc = self._sums.get(age)
        return acc[0] / acc[1] if acc else None

    def _level(self, age: int, own: float) -> float | None:
        """The cohort mean at ``age`` without the reporter's own ``own`` score, pooled
        with the prediction from the two ages before."""
        total, count = self._sums.get(age, (0.0, 0.0))
        if math.isfinite(own) and count:
            total, count = total - own, count - 1
        i = bisect_left(self._ages, age)
        before = [self._mean(a) for a in self._ages[max(0, i - 2):i]]
        if before:
            last = before[-1]
            trend = last - before[0] if len(before) == 2 else 0.0  # type: ignore[operator]
            total, count = total + last + trend, count + 1  # type: ignore[operator]
        return total / count if count else None

    def shifts(self, ages: Iterable[int], age: int, own: float) -> Mapping[int, float]:
        """What to add to a score measured at each of ``ages`` to compare it with the
        score ``own`` of a reporter at ``age``; empty when the curve knows too little."""
        here = self._level(age, own)
        if here is None:
            return {}
        out = {}
        for a in ages:
            level = here if a == age else self._mean(a)
            out[a] = 0.0 if level is None else here - level
        return out

    def state(self) -> list[list[float]]:
        return [[age, *self._sums[age]] for age in self._ages]

    def load(self, rows: Iterable[Sequence[float]]) -> None:
        self._ages, self._sums = [], {}
        for age, total, count in rows:
            self._sums[int(age)] = [float(total), float(count)]
            self._ages.append(int(age))
        self._ages.sort()
