"""The discovered schedule follows the weights across exploits (pure, plain rows)."""

import pytest

from torchpbt.analysis import lineage
from torchpbt.analysis.schedule import Schedule, ScheduleError


def iv(i, member, start, end, lr, start_ck, end_ck, score=0.5):
    return {"id": i, "member_id": member, "start_step": start, "end_step": end,
            "hparams": {"lr": lr}, "start_checkpoint": start_ck, "end_checkpoint": end_ck,
            "score": score}


ROWS = [
    iv(1, 0, 0, 10, 0.1, None, "a1"),
    iv(2, 1, 0, 10, 0.2, None, "b1"),
    iv(3, 0, 10, 20, 0.1, "a1", "a2"),
    iv(4, 1, 10, 20, 0.24, "a1", "b2"),  # member 1 copied member 0 at step 10
    iv(5, 0, 20, 30, 0.1, "a2", None),   # a failed interval: no checkpoint
    iv(6, 1, 20, 30, 0.24, "b2", "b3"),
    iv(7, 0, 30, 40, 0.3, "b3", "a4"),   # member 0 copied member 1's step-30 weights
]


def test_trace_follows_checkpoints_across_members():
    chain = lineage.trace(ROWS, 0)
    assert [r["id"] for r in chain] == [1, 4, 6, 7]
    assert lineage.ancestors(ROWS, 0) == [0, 1, 0]


def test_schedule_is_in_the_weights_own_steps_and_merges_equal_runs():
    full = Schedule.from_intervals(ROWS, 0)
    s = full.merged()
    assert [(x.from_step, x.to_step, x.member_id, x.hparams["lr"]) for x in s] == [
        (0, 10, 0, 0.1), (10, 30, 1, 0.24), (30, 40, 0, 0.3)]
    assert len(full) == 4 and s.total == full.total  # merging joins, never drops, steps
    assert s[1]["member_step"] == full[1].member_step and s[1].checkpoint == full[2].checkpoint
    assert all(s.at(t) == full.at(t) for t in range(full.total))


def test_member_without_intervals_has_no_schedule_and_says_so():
    assert lineage.ancestors(ROWS, 9) == []
    with pytest.raises(ScheduleError, match="no trained weights yet"):
        Schedule.from_intervals(ROWS, 9)


# -- check_log: what a whole log must satisfy (used on distributed runs) ------------
def ev(kind, member, step, donor=None, donor_step=None, checkpoint=None):
    return {"kind": kind, "member_id": member, "step": step, "donor_id": donor,
            "donor_step": donor_step, "detail": {"checkpoint": checkpoint} if checkpoint else {}}


WHOLE_IV = [
    iv(1, 0, 0, 10, 0.1, None, "a1"),
    iv(2, 1, 0, 10, 0.2, None, "b1"),
    iv(3, 0, 10, 20, 0.1, "a1", "a2"),
    iv(4, 1, 10, 20, 0.24, "a1", "b2"),
]
WHOLE_EV = [ev("start", 0, 0), ev("start", 1, 0), ev("continue", 0, 10),
            ev("exploit", 1, 10, donor=0, donor_step=10, checkpoint="a1"),
            ev("continue", 0, 20), ev("stop", 1, 20)]


def test_check_log_accepts_a_whole_log():
    assert lineage.check_log(WHOLE_IV, WHOLE_EV, 20) == []


def test_check_log_finds_each_kind_of_damage():
    def problems(ivs=WHOLE_IV, evs=WHOLE_EV, steps=20):
        return " | ".join(lineage.check_log(ivs, evs, steps))

    assert "started at 15 from a1, not at 10 from a1" in problems(
        ivs=[*WHOLE_IV[:2], iv(3, 0, 15, 20, 0.1, "a1", "a2"), WHOLE_IV[3]])  # a gap
    assert "ended with weights 10 steps old, not 20" in problems(ivs=WHOLE_IV[:3])  # lost
    assert "started at 10 from a1, not at 20 from a2" in problems(
        ivs=[*WHOLE_IV, iv(5, 0, 10, 20, 0.1, "a1", "a2")])  # run twice
    assert "exploit of member 1 at step 10 follows no recorded interval" in problems(
        evs=[*WHOLE_EV, ev("exploit", 1, 10, donor=0, donor_step=10, checkpoint="a1")])
    assert "from b1, not at 10 from a1" in problems(
        ivs=[*WHOLE_IV[:3], iv(4, 1, 10, 20, 0.24, "b1", "b2")])  # exploit not applied
    assert "names no recorded donor checkpoint" in problems(
        evs=[*WHOLE_EV[:3], ev("exploit", 1, 10, donor=0, donor_step=10, checkpoint="zz"),
             *WHOLE_EV[4:]])
    assert "follows no recorded interval" in problems(evs=[*WHOLE_EV, ev("continue", 0, 30)])
    assert "from None, not at 10 from a1" in problems(
        ivs=[WHOLE_IV[0], WHOLE_IV[1], iv(3, 0, 10, 20, 0.1, None, "a2"), WHOLE_IV[3]])


def test_check_log_follows_copies_of_other_ages_reinits_and_failures():
    ivs = [iv(1, 0, 0, 10, 0.1, None, "a1"), iv(2, 1, 0, 10, 0.2, None, "b1"),
           iv(3, 1, 10, 20, 0.2, "b1", "b2"),
           iv(4, 0, 10, 20, 0.1, "a1", None, score=None),  # failed: keeps a1, 10 steps old
           iv(5, 0, 10, 20, 0.1, "b1", "a2"),  # copied member 1's weights of age 10
           iv(6, 2, 0, 10, 0.1, None, None, score=None), iv(7, 2, 0, 10, 0.1, None, "c1"),
           iv(8, 2, 10, 20, 0.1, "c1", "c2")]
    evs = [ev("exploit", 0, 20, donor=1, donor_step=10, checkpoint="b1"),
           ev("reinit", 2, 10)]
    assert lineage.check_log(ivs, evs, 20) == []
    # a copy of a finished member finishes without training: exploit, then stop
    ivs2 = [*ivs[:3], iv(4, 0, 10, 20, 0.1, "a1", None, score=None)]
    evs2 = [ev("exploit", 0, 20, donor=1, donor_step=20, checkpoint="b2"), ev("stop", 0, 20),
            ev("reinit", 2, 10)]
    assert lineage.check_log([*ivs2, *ivs[5:]], evs2, 20) == []
    ivs2 = [*ivs[:3], iv(4, 0, 10, 20, 0.1, "a1", "a2"), iv(9, 0, 20, 30, 0.1, "a2", "a3")]
    evs2 = [ev("exploit", 0, 30, donor=1, donor_step=20, checkpoint="b2"), ev("stop", 0, 20),
            ev("reinit", 2, 10)]
    assert lineage.check_log([*ivs2, *ivs[5:]], evs2, 20) == []


def test_equal_weights_written_by_two_members_keep_each_members_own_history():
    # both members converged to the same weights "z" at step 20; member 0 was never
    # exploited, so its history is its own, however member 1 got there
    rows = [
        iv(1, 0, 0, 10, 0.1, None, "a1"),
        iv(2, 1, 0, 10, 0.2, None, "b1"),
        iv(3, 1, 10, 20, 0.2, "b1", "z"),
        iv(4, 0, 10, 20, 0.1, "a1", "z"),
        iv(5, 1, 20, 30, 0.2, "z", "z"),
        iv(6, 0, 20, 30, 0.1, "z", "z"),
    ]
    assert [r["id"] for r in lineage.trace(rows, 0)] == [1, 4, 6]
    assert Schedule.from_intervals(rows, 0).total == 30


def test_check_log_accepts_a_copy_of_a_member_that_has_just_copied():
    """Async: member 1 copied member 0's a1; before member 1's next interval ended, member
    2 copied member 1, so it got a1 too, named after member 1 (which holds it)."""
    ivs = [iv(1, 0, 0, 10, 0.5, None, "a1"), iv(2, 1, 0, 10, 0.1, None, "b1"),
           iv(3, 2, 0, 10, 0.2, None, "c1"),
           iv(4, 0, 10, 20, 0.5, "a1", "a2"), iv(5, 1, 10, 20, 0.4, "a1", "b2"),
           iv(6, 2, 10, 20, 0.3, "a1", "c2")]
    evs = [ev("exploit", 1, 10, donor=0, donor_step=10, checkpoint="a1"),
           ev("exploit", 2, 10, donor=1, donor_step=10, checkpoint="a1")]
    assert lineage.check_log(ivs, evs, 20) == []
    evs[1] = ev("exploit", 2, 10, donor=1, donor_step=10, checkpoint="a9")  # never held
    assert "names no recorded donor checkpoint" in " ".join(lineage.check_log(ivs, evs, 20))
