"""Trace a member's weights back through every exploit. Pure functions of stored rows.

Every interval records the checkpoint it started from and the one it wrote,
so following ``start_checkpoint`` back to the interval that wrote it walks the
weights' true history, across members, to a fresh initialisation. That chain is
the *discovered schedule*: which hyperparameters these weights were trained
with, step by step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def trace(intervals: Sequence[Mapping[str, Any]], member_id: int) -> list[dict[str, Any]]:
    """The intervals that produced ``member_id``'s latest weights, oldest first."""
    ok = [iv for iv in intervals if iv.get("end_checkpoint")]
    mine = [iv for iv in ok if iv["member_id"] == member_id]
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
        own = [w for w in writers if w["member_id"] == cur["member_id"]
               and w["end_step"] == cur["start_step"]]
        writer = (own or writers or [None])[-1]
        if writer is None or id(writer) in seen:
            break
        chain.append(writer)
        seen.add(id(writer))
    return list(reversed(chain))


def schedule(intervals: Sequence[Mapping[str, Any]], member_id: int) -> list[dict[str, Any]]:
    """The hparams the member's weights saw, as segments of the weights' own age in steps."""
    out: list[dict[str, Any]] = []
    age = 0
    for iv in trace(intervals, member_id):
        n = iv["end_step"] - iv["start_step"]
        seg = {"from_step": age, "to_step": age + n, "member_id": iv["member_id"],
               "hparams": dict(iv["hparams"]), "score": iv.get("score")}
        if out and out[-1]["hparams"] == seg["hparams"] and out[-1]["member_id"] == seg["member_id"]:
            out[-1]["to_step"], out[-1]["score"] = seg["to_step"], seg["score"]
        else:
            out.append(seg)
        age += n
    return out


def ancestors(intervals: Sequence[Mapping[str, Any]], member_id: int) -> list[int]:
    """Members whose weights flowed into ``member_id``, in order, without repeats."""
    out: list[int] = []
    for iv in trace(intervals, member_id):
        if not out or out[-1] != iv["member_id"]:
            out.append(iv["member_id"])
    return out


def check_log(intervals: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]],
              steps: int) -> list[str]:
    """Everything wrong with a finished run's log, as sentences (empty: the log is whole).

    Checked: each member's intervals chain from step 0 to ``steps`` with no gap,
    overlap or repeat (nothing lost, nothing run twice); at most one decision per
    member and step (no double exploit); every decision follows a recorded
    interval; and every interval starts from its member's previous weights or from
    the exact checkpoint its exploit decision handed it, written by the donor
    interval the decision names (lineage intact)."""
    problems: list[str] = []
    done = [iv for iv in intervals if iv.get("end_checkpoint")]
    ends = {(iv["member_id"], iv["end_step"]): iv for iv in done}
    decisions: dict[tuple[int, int], list[Mapping[str, Any]]] = {}
    for e in events:
        if e["kind"] in ("continue", "exploit", "explore", "reinit", "stop"):
            decisions.setdefault((e["member_id"], e["step"]), []).append(e)
        if e["kind"] in ("continue", "exploit", "explore", "reinit", "stop", "fail") \
                and e["step"] > 0 and (e["member_id"], e["step"]) not in ends \
                and not any(iv["member_id"] == e["member_id"] and iv["end_step"] == e["step"]
                            for iv in intervals):
            problems.append(f"{e['kind']} of member {e['member_id']} at step {e['step']} "
                            "follows no recorded interval")
    for (m, step), ds in decisions.items():
        if len(ds) > 1:
            problems.append(f"member {m} has {len(ds)} decisions at step {step}: "
                            f"{[d['kind'] for d in ds]}")
    for m in sorted({iv["member_id"] for iv in intervals}):
        mine = sorted((iv for iv in intervals if iv["member_id"] == m),
                      key=lambda iv: (iv["start_step"], iv["id"]))
        at, prev = 0, None
        for iv in mine:
            if iv["start_step"] != at:
                problems.append(f"member {m}: interval {iv['start_step']}-{iv['end_step']} "
                                f"does not start where the last ended ({at})")
            exploit = next((d for d in decisions.get((m, iv["start_step"]), [])
                            if d["kind"] in ("exploit", "reinit")), None)
            if exploit is not None:
                want = (exploit.get("detail") or {}).get("checkpoint")
                if exploit["kind"] == "exploit":
                    donor = ends.get((exploit["donor_id"], exploit["donor_step"]))
                    if donor is None or donor["end_checkpoint"] != want:
                        problems.append(f"member {m} at step {iv['start_step']}: exploit "
                                        "names no recorded donor checkpoint")
            else:
                want = prev["end_checkpoint"] if prev is not None else None
            if (exploit is None or exploit["kind"] == "exploit") \
                    and iv["start_checkpoint"] != want:
                problems.append(f"member {m}: interval at step {iv['start_step']} started from "
                                f"{iv['start_checkpoint']}, not {want}")
            at = iv["end_step"]
            prev = iv if iv.get("end_checkpoint") else prev
        if at != steps:
            problems.append(f"member {m} ended at step {at}, not {steps}")
    return problems
