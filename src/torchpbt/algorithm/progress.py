"""When a run cannot make progress: intervals that keep failing stop it, loudly.

Failures do not age weights, so a member whose intervals always fail would retry for
ever; the scheduler counts failures and raises :class:`NoProgress` instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MAX_FAILURES = 10  # failed intervals in a row after which one member stops the run


class NoProgress(RuntimeError):
    """Intervals keep failing: the run stops instead of retrying for ever. ``traceback``
    is the first failure's error as the worker reported it (None if unknown)."""

    def __init__(self, message: str, traceback: str | None = None) -> None:
        super().__init__(message)
        self.traceback = traceback


def failure_streak(history: Sequence[float]) -> int:
    """How many of a member's latest scores in a row are failures (not finite)."""
    for n, score in enumerate(reversed(history)):
        if math.isfinite(score):
            return n
    return len(history)


def check_progress(member_id: int, history: Sequence[float], failures_in_a_row: int,
                   population: int, first_failure: tuple[int, int, str] | None) -> None:
    """Raise :class:`NoProgress` if every recent interval failed (``failures_in_a_row``,
    across members, reaches three per member), or member ``member_id``'s last
    ``MAX_FAILURES`` did. ``first_failure``: (member, step, error) of the first one seen."""
    streak = failure_streak(history)
    everyone = failures_in_a_row >= 3 * population
    if streak < MAX_FAILURES and not everyone:
        return
    who = (f"the last {failures_in_a_row} intervals (of every member)" if everyone
           else f"member {member_id}'s last {streak} intervals")
    seen = ""
    if first_failure is not None:
        fid, fstep, error = first_failure
        last_line = (error.strip().splitlines() or [""])[-1]
        seen = f" The first failure (member {fid}, step {fstep}): {last_line.rstrip('.')}."
    raise NoProgress(
        f"{who} failed, so the run cannot make progress.{seen} Fix the member or narrow "
        "the search space, then start a new run; every failure's error is in the run's "
        "events (torchpbt status RUN_DIR).",
        traceback=first_failure[2] if first_failure else None)
