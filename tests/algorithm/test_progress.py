"""When a run stops for lack of progress, with plain numbers."""

from __future__ import annotations

import math

import pytest

from torchpbt.algorithm.progress import MAX_FAILURES, NoProgress, check_progress, failure_streak

BAD = -math.inf


def test_the_streak_counts_only_the_latest_failures():
    assert failure_streak([]) == 0
    assert failure_streak([0.5, BAD, BAD]) == 2
    assert failure_streak([BAD, 0.5]) == 0
    assert failure_streak([BAD, math.nan, BAD]) == 3


def test_one_member_failing_max_failures_in_a_row_stops_the_run_naming_the_first_error():
    history = [0.1] + [BAD] * (MAX_FAILURES - 1)
    check_progress(3, history, failures_in_a_row=MAX_FAILURES - 1, population=8,
                   first_failure=None)  # one short: goes on
    with pytest.raises(NoProgress, match=r"member 3's last 10 intervals failed.*"
                       r"first failure \(member 3, step 40\): ValueError: boom") as info:
        check_progress(3, history + [BAD], failures_in_a_row=MAX_FAILURES, population=8,
                       first_failure=(3, 40, "Traceback ...\nValueError: boom\n"))
    assert info.value.traceback.endswith("ValueError: boom\n")


def test_every_member_failing_stops_the_run_after_three_rounds():
    check_progress(0, [BAD], failures_in_a_row=3 * 4 - 1, population=4, first_failure=None)
    with pytest.raises(NoProgress, match=r"the last 12 intervals \(of every member\)") as info:
        check_progress(0, [BAD], failures_in_a_row=3 * 4, population=4, first_failure=None)
    assert info.value.traceback is None
