"""The population exploit sees, kept ranked as reports arrive. Pure logic, no I/O.

Ranking a snapshot afresh for every ready member costs O(n log n) a report, which
dominates at thousands of members. The scheduler instead keeps a :class:`Ranking` up to
date (one member moves per report: O(log n) comparisons and one memmove), and
hands exploit strategies a :class:`Population`: a sequence of ``MemberView``
(in member-id order, built on access) that also answers rank queries in
O(log n), which the built-in strategies use. A strategy that iterates it still
works, at O(n).
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import overload


@dataclass(frozen=True)
class MemberView:
    """What exploit may know of one member: its id, step and oriented scores."""

    member_id: int
    step: int
    score: float
    history: Sequence[float] = field(default=())
    # random, drawn when the member reported: equal scores rank by it, the same way
    # for every decision until the member reports again
    tiebreak: float = 0.0
    # the initial member its weights descend from; -1 (a view built by hand): its own
    lineage: int = -1

    @property
    def root(self) -> int:
        return self.member_id if self.lineage < 0 else self.lineage


class Ranking:
    """Member ids best first: by score (higher first), then ``order`` (lower first), then id."""

    def __init__(self) -> None:
        self._keys: list[tuple[float, float, int]] = []  # (-score, order, id), ascending
        self._key: dict[int, tuple[float, float, int]] = {}
        self._ids: list[int] = []  # the same members in id order

    def set(self, member_id: int, score: float, order: float) -> None:
        self.discard(member_id)
        key = (-score, order, member_id)
        insort(self._keys, key)
        insort(self._ids, member_id)
        self._key[member_id] = key

    def discard(self, member_id: int) -> None:
        key = self._key.pop(member_id, None)
        if key is not None:
            del self._keys[bisect_left(self._keys, key)]
            del self._ids[bisect_left(self._ids, member_id)]

    def copy(self) -> Ranking:
        out = Ranking()
        out._keys, out._key, out._ids = list(self._keys), dict(self._key), list(self._ids)
        return out

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._key

    def best(self, rank: int) -> int:
        """The id at ``rank`` (0 is the best)."""
        return self._keys[rank][2]

    def rank_of(self, member_id: int) -> int | None:
        key = self._key.get(member_id)
        return None if key is None else bisect_left(self._keys, key)

    def count_above(self, score: float) -> int:
        """Members whose score is strictly higher than ``score``."""
        return bisect_left(self._keys, (-score,))

    def count_at_least(self, score: float) -> int:
        """Members whose score is ``score`` or higher."""
        return bisect_left(self._keys, (-score, math.inf))

    def id_at(self, index: int) -> int:
        return self._ids[index]

    def id_index(self, member_id: int) -> int:
        return bisect_left(self._ids, member_id)


class AgedRanking:
    """Members grouped by the age (step) of their latest score, each group a :class:`Ranking`.

    :meth:`at` ranks them all as seen from one age: each group's scores shifted by
    the gain the population makes between the two ages (see ``curve.py``). Members
    stay within an interval or two of each other, so there are few groups.
    """

    def __init__(self) -> None:
        self.groups: dict[int, Ranking] = {}
        self.age: dict[int, int] = {}  # member -> its group
        self._ids: list[int] = []

    def set(self, member_id: int, score: float, order: float, age: int) -> None:
        old = self.age.get(member_id)
        if old is None:
            insort(self._ids, member_id)
        elif old != age:  # moves to another group (the id list stays as it is)
            group = self.groups[old]
            group.discard(member_id)
            if not len(group):
                del self.groups[old]
        self.groups.setdefault(age, Ranking()).set(member_id, score, order)
        self.age[member_id] = age

    def discard(self, member_id: int) -> None:
        age = self.age.pop(member_id, None)
        if age is not None:
            group = self.groups[age]
            group.discard(member_id)
            if not len(group):
                del self.groups[age]
            del self._ids[bisect_left(self._ids, member_id)]

    def copy(self) -> AgedRanking:
        out = AgedRanking()
        out.groups = {a: g.copy() for a, g in self.groups.items()}
        out.age, out._ids = dict(self.age), list(self._ids)
        return out

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, member_id: object) -> bool:
        return member_id in self.age

    def at(self, shift: Mapping[int, float]) -> ShiftedRanking:
        """The ranking with each group's scores raised by ``shift[age]``."""
        return ShiftedRanking(self, shift)


class ShiftedRanking:
    """Rank queries (those of :class:`Ranking`) over groups whose scores are shifted."""

    def __init__(self, aged: AgedRanking, shift: Mapping[int, float]) -> None:
        self._aged, self._shift = aged, shift
        self._parts = [(g, shift.get(a, 0.0)) for a, g in aged.groups.items()]
        # one group, unshifted (every member at one age): its own queries are exact
        self._one = self._parts[0][0] if len(self._parts) == 1 and not self._parts[0][1] \
            else None

    def __len__(self) -> int:
        return len(self._aged)

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._aged

    @staticmethod
    def _count(group: Ranking, shift: float, target: tuple) -> int:
        """How many of ``group``'s keys, shifted, sort before ``target``. The bisect on
        the unshifted target can be off by rounding; the steps after it compare the
        shifted keys exactly (shifting is monotone, so the answer is a boundary)."""
        keys = group._keys
        if not shift:
            return bisect_left(keys, target)
        t0, rest = target[0], target[1:]
        i = bisect_left(keys, (t0 + shift, *rest))
        while i > 0:  # step back over keys that, shifted, do not sort before target
            k = keys[i - 1]
            v = k[0] - shift
            if v < t0 or (v == t0 and k[1:] < rest):
                break
            i -= 1
        while i < len(keys):
            k = keys[i]
            v = k[0] - shift
            if not (v < t0 or (v == t0 and k[1:] < rest)):
                break
            i += 1
        return i

    def _before(self, target: tuple) -> int:
        return sum(self._count(g, d, target) for g, d in self._parts)

    def best(self, rank: int) -> int:
        if len(self._parts) == 1:  # a shift common to all keeps their order
            return self._parts[0][0].best(rank)
        for g, d in self._parts:  # the member with exactly ``rank`` members before it
            keys, lo, hi = g._keys, 0, len(g._keys)
            while lo < hi:
                mid = (lo + hi) // 2
                neg, order, i = keys[mid]
                before = self._before((neg - d, order, i))
                if before == rank:
                    return i
                lo, hi = (mid + 1, hi) if before < rank else (lo, mid)
        raise IndexError("rank out of range")

    def rank_of(self, member_id: int) -> int | None:
        if self._one is not None:
            return self._one.rank_of(member_id)
        age = self._aged.age.get(member_id)
        if age is None:
            return None
        neg, order, _ = self._aged.groups[age]._key[member_id]
        return self._before((neg - self._shift.get(age, 0.0), order, member_id))

    def count_above(self, score: float) -> int:
        return self._one.count_above(score) if self._one is not None \
            else self._before((-score,))

    def count_at_least(self, score: float) -> int:
        return self._one.count_at_least(score) if self._one is not None \
            else self._before((-score, math.inf))

    def id_at(self, index: int) -> int:
        return self._aged._ids[index]

    def id_index(self, member_id: int) -> int:
        return bisect_left(self._aged._ids, member_id)


class Population(Sequence[MemberView]):
    """A ranked snapshot: ``MemberView``s in id order, plus O(log n) rank queries."""

    def __init__(self, ranking: Ranking | ShiftedRanking,
                 view: Callable[[int], MemberView]) -> None:
        self.ranking, self._view = ranking, view

    @classmethod
    def of(cls, population: Sequence[MemberView], order: Sequence[MemberView]) -> Population:
        """A plain sequence, ranked as ``order`` (best first) ranks it."""
        ranking = Ranking()
        for i, m in enumerate(order):
            ranking.set(m.member_id, m.score, i)
        views = {m.member_id: m for m in population}
        return cls(ranking, views.__getitem__)

    def __len__(self) -> int:
        return len(self.ranking)

    @overload
    def __getitem__(self, index: int) -> MemberView: ...

    @overload
    def __getitem__(self, index: slice) -> list[MemberView]: ...

    def __getitem__(self, index: int | slice) -> MemberView | list[MemberView]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("population index out of range")
        return self._view(self.ranking.id_at(index))

    def __iter__(self) -> Iterator[MemberView]:
        for i in range(len(self)):
            yield self._view(self.ranking.id_at(i))

    def get(self, member_id: int) -> MemberView | None:
        return self._view(member_id) if member_id in self.ranking else None

    def best(self, rank: int) -> MemberView:
        return self._view(self.ranking.best(rank))

    def other(self, index: int, member_id: int) -> MemberView:
        """The ``index``-th member in id order when ``member_id`` is left out."""
        if member_id in self.ranking and index >= self.ranking.id_index(member_id):
            index += 1
        return self._view(self.ranking.id_at(index))

    def others(self, member_id: int) -> int:
        """How many members there are besides ``member_id``."""
        return len(self) - (member_id in self.ranking)
