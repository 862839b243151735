"""``backend="workers"``: intervals go into the store's task queue, and any number of
``torchpbt worker`` processes, on any hosts that share the database and the run's
checkpoint directory, claim and train them.

The controller stays the only decider, so decisions are as consistent as on one
machine; workers only train. A worker proves it is alive by beating while it
trains: if its count stops moving for ``timeout`` seconds (of the controller's
clock) the interval is declared lost and comes back as a crashed outcome, which
the controller retries like a dead local worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..store.queue import TaskQueue
from .base import Backend
from .worker import Outcome, Task

# an outcome's extras (tensors, say) travel in RUN_DIR/outcome-extras/<task id>.pt
EXTRAS_DIR = "outcome-extras"


def outcome_to_json(out: Outcome, extras_file: str | None = None) -> dict[str, Any]:
    """JSON for the queue; floats as repr so inf and nan survive strict JSON."""
    return {
        "member_id": out.member_id, "start_step": out.start_step, "end_step": out.end_step,
        "score": repr(float(out.score)), "loss": None if out.loss is None else repr(out.loss),
        "checkpoint": out.checkpoint, "checkpoint_size": out.checkpoint_size,
        "duration_s": out.duration_s, "worker": out.worker, "error": out.error,
        "extras_file": extras_file, "bad_checkpoint": out.bad_checkpoint,
    }


def outcome_from_json(d: Mapping[str, Any], extras: Mapping[str, Any] | None = None) -> Outcome:
    return Outcome(d["member_id"], d["start_step"], d["end_step"], float(d["score"]),
                   None if d["loss"] is None else float(d["loss"]), d["checkpoint"],
                   d["checkpoint_size"], d["duration_s"], d["worker"], d["error"],
                   extras=dict(extras or {}), bad_checkpoint=d["bad_checkpoint"])


class QueueBackend(Backend):
    name = "workers"

    def __init__(self, queue: TaskQueue, encode: Callable[[Task], dict[str, Any]],
                 run_path: Path, timeout: float = 60.0, poll: float = 0.05,
                 max_poll: float = 0.5) -> None:
        self.queue, self.encode, self.extras_dir = queue, encode, run_path / EXTRAS_DIR
        self.timeout, self.poll, self.max_poll = timeout, poll, max_poll
        self._tasks: dict[int, Task] = {}
        self._seen: dict[int, tuple[int, float]] = {}  # running row: (beats, when it moved)
        # rows left by a controller that stopped (crash, Ctrl-C): resume submits afresh
        self.cancelled_on_start = queue.cancel_open()

    def submit(self, task: Task) -> None:
        task_id = self.queue.put(task.member_id, task.start_step, self.encode(task))
        self._tasks[task_id] = task

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def wait(self) -> list[Outcome]:
        if not self._tasks:
            raise RuntimeError("wait() with no task submitted")
        delay = self.poll
        while True:
            outcomes = self._check()
            if outcomes:
                return outcomes
            time.sleep(delay)
            delay = min(self.max_poll, delay * 1.5)

    def _check(self) -> list[Outcome]:
        now = time.monotonic()
        out: list[Outcome] = []
        for row in self.queue.poll(self._tasks):
            task_id, status = row["id"], row["status"]
            if status == "done":
                data = self.queue.collect(task_id)
                if data is not None:
                    out.append(self._outcome(task_id, data))
            elif status == "running":
                beats, since = self._seen.get(task_id, (-1, now))
                if row["beats"] != beats:
                    self._seen[task_id] = (row["beats"], now)
                elif now - since > self.timeout and self.queue.mark_lost(task_id, beats):
                    out.append(self._lost(task_id, row["worker"]))
            elif status == "queued":  # released by a stopping worker: not yet anyone's
                self._seen.pop(task_id, None)
            elif status in ("lost", "cancelled", "collected"):  # someone else ended it
                out.append(self._lost(task_id, row["worker"], status))
        return out

    def _outcome(self, task_id: int, data: Mapping[str, Any]) -> Outcome:
        self._tasks.pop(task_id)
        self._seen.pop(task_id, None)
        if not data.get("extras_file"):
            return outcome_from_json(data)
        path = self.extras_dir / data["extras_file"]
        extras = torch.load(path, weights_only=True)
        path.unlink()
        return outcome_from_json(data, extras)

    def _lost(self, task_id: int, worker: str | None, status: str = "lost") -> Outcome:
        task = self._tasks.pop(task_id)
        self._seen.pop(task_id, None)
        why = (f"worker {worker} stopped sending heartbeats for {self.timeout:g} s (it died or "
               "lost the database)" if status == "lost" else f"its queue row was {status}")
        return Outcome.failure(task, worker or "?", f"interval lost: {why}", crashed=True)

    def abort(self) -> None:
        """Ctrl-C or a fatal error: workers' results for this run will be refused."""
        self.queue.cancel_open()
        self._tasks.clear()
