"""Fault injection points, so tests and the chaos benchmark can kill a controller
at an exact place (mid checkpoint write, mid store commit, ...) and prove resume.

``TORCHPBT_CRASH_AT=NAME:N`` makes the process SIGKILL itself the N-th time it
reaches point NAME (N defaults to 1). Unset, a point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "outcome",           # an interval's outcome reached the controller, nothing recorded yet
    "checkpoint_write",  # a checkpoint's bytes are in a temp file, not yet renamed
    "store_commit",      # every statement of a step ran, the transaction is not committed
    "after_commit",      # the step is committed, garbage checkpoints not yet deleted
    "before_submit",     # garbage deleted, the next intervals not yet handed to the backend
    "knowledge_publish", # a knowledge-table version is written, its hash file not yet
    "store_migrate",     # a store's schema migrations ran, their transaction not committed
)
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("TORCHPBT_CRASH_AT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
