"""Trace a member's weights back through every exploit. Pure functions of stored rows.

Every interval records the checkpoint it started from and the one it wrote,
so following ``start_checkpoint`` back to the interval that wrote it walks the
weights' true history, across members, to a fresh initialisation. That chain is
the *discovered schedule*: which hyperparameters these weights were trained
with, step by step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def trace(intervals: Sequence[Mapping[str, Any]], member_id: int,
          checkpoint: str | None = None) -> list[dict[str, Any]]:
    """The intervals that produced ``member_id``'s latest weights, oldest first.

    ``checkpoint``: the member's current weights (its row in the store), when a copy
    it made after its last interval (of a finished donor) holds another's weights."""
    ok = [iv for iv in intervals if iv.get("end_checkpoint")]
    mine = [iv for iv in ok if iv["member_id"] == member_id]
    if checkpoint is not None and not (mine and mine[-1]["end_checkpoint"] == checkpoint):
        mine = [iv for iv in ok if iv["end_checkpoint"] == checkpoint] or mine
    if not mine:
        return []
    chain = [mine[-1]]
    by_end: dict[str, list[Mapping[str, Any]]] = {}
    for iv in ok:
        by_end.setdefault(iv["end_checkpoint"], []).append(iv)
    seen = {id(chain[0])}
    while chain[-1]["start_checkpoint"]:
        cur = chain[-1]
        # the writer of our start checkpoint: the latest one recorded before us. Equal
        # weights hash to one key (a converged toy), so several may have written it:
        # then the member's own previous interval is the true history
        writers = [w for w in by_end.get(cur["start_checkpoint"], []) if w["id"] < cur["id"]]
        # and a copy carries its weights' age, so the writer ended at our start step
        aged = [w for w in writers if w["end_step"] == cur["start_step"]]
        own = [w for w in aged if w["member_id"] == cur["member_id"]]
        writer = (own or aged or writers or [None])[-1]
        if writer is None or id(writer) in seen:
            break
        chain.append(writer)
        seen.add(id(writer))
    return list(reversed(chain))


def ancestors(intervals: Sequence[Mapping[str, Any]], member_id: int,
              checkpoint: str | None = None) -> list[int]:
    """Members whose weights flowed into ``member_id``, in order, without repeats."""
    out: list[int] = []
    for iv in trace(intervals, member_id, checkpoint):
        if not out or out[-1] != iv["member_id"]:
            out.append(iv["member_id"])
    return out


DECISIONS = ("continue", "exploit", "explore", "reinit", "stop")


def check_log(intervals: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]],
              steps: int) -> list[str]:
    """Everything wrong with a finished run's log, as sentences (empty: the log is whole).

    Each member's intervals, in the order they were recorded, must follow one another
    as the decisions between them say (see README, "How steps count"): after an
    exploit the next interval starts at the donor's age from the exact checkpoint the
    decision names, written by the donor interval it names (or held by the donor from a
    copy of its own); after a reinit at 0 from
    nothing; otherwise where the member's weights are (the end of a good interval, or
    the start of a failed one, whose weights are kept). At most one decision follows
    an interval (a copy of a finished member also stops), none follows no interval,
    and every member ends holding weights exactly ``steps`` old."""
    problems: list[str] = []
    written = {(iv["member_id"], iv["end_step"], iv["end_checkpoint"])
               for iv in intervals if iv.get("end_checkpoint")}
    # a member that has copied holds its donor's weights (at their age) until its next
    # interval ends; in async mode another member may copy them from it in that time
    written |= {(e["member_id"], e["donor_step"], (e.get("detail") or {}).get("checkpoint"))
                for e in events if e["kind"] == "exploit"}
    decisions: dict[int, list[Mapping[str, Any]]] = {}
    for e in events:
        if e["kind"] in DECISIONS:
            decisions.setdefault(e["member_id"], []).append(e)
    members = sorted({iv["member_id"] for iv in intervals} | set(decisions))
    for m in members:
        mine = sorted((iv for iv in intervals if iv["member_id"] == m), key=lambda iv: iv["id"])
        queue = list(decisions.get(m, []))
        age, weights = 0, None
        for iv in mine:
            if (iv["start_step"], iv["start_checkpoint"]) != (age, weights):
                problems.append(
                    f"member {m}: interval {iv['start_step']}-{iv['end_step']} started at "
                    f"{iv['start_step']} from {iv['start_checkpoint']}, not at {age} from {weights}")
            good = iv.get("end_checkpoint") and finite_number(iv.get("score"))
            if good:
                age, weights = iv["end_step"], iv["end_checkpoint"]
            mine_now = []
            if queue and queue[0]["step"] == iv["end_step"]:
                mine_now.append(queue.pop(0))
                # a copy of a finished member stops at once, at its new age
                if mine_now[0]["kind"] == "exploit" and queue and queue[0]["kind"] == "stop" \
                        and queue[0]["step"] == mine_now[0]["donor_step"]:
                    mine_now.append(queue.pop(0))
            for d in mine_now:
                if d["kind"] == "exploit":
                    want = (d.get("detail") or {}).get("checkpoint")
                    if (d["donor_id"], d["donor_step"], want) not in written:
                        problems.append(f"member {m} at step {d['step']}: exploit names no "
                                        "recorded donor checkpoint")
                    age, weights = d["donor_step"], want
                elif d["kind"] == "reinit":
                    age, weights = 0, None
        for d in queue:
            problems.append(f"{d['kind']} of member {m} at step {d['step']} follows no "
                            "recorded interval")
        if mine and age != steps:
            problems.append(f"member {m} ended with weights {age} steps old, not {steps}")
    return problems


def finite_number(x: Any) -> bool:
    """A real, finite number (a stored score, say): not None, NaN, inf or a bool."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
