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
        # the writer of our start checkpoint: the latest one recorded before us
        writers = [w for w in by_end.get(cur["start_checkpoint"], []) if w["id"] < cur["id"]]
        if not writers or id(writers[-1]) in seen:
            break
        chain.append(writers[-1])
        seen.add(id(writers[-1]))
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
