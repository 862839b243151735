"""The controller: the only writer of a run.

It turns outcomes into scheduler reports, decisions into tasks, and commits
each step (interval, events, members, and its own state) in one store
transaction *before* it hands the next tasks to the backend. So after a crash
the store always says exactly which intervals were running, and
``torchpbt resume`` can start them again: with the serial backend a resumed
run is identical to an uninterrupted one.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..algorithm.scheduler import Decision, Report
from ..algorithm.scheduler_types import plan_reads
from ..algorithm.space import Space
from ..backends import Backend, Outcome, Task, derive_seed
from ..backends.worker import task_from_json, task_to_json
from ..store import EventRecord, IntervalRecord, MemberUpdate, SQLStore, StepRecord
from ..ui.display import LiveDisplay
from .checkpoints import CheckpointDir, DeferredDeleter
from .extension import RunExtension
from .faults import crash_point


class WorkersKeepDying(RuntimeError):
    """Every interval so far died with its worker: retrying cannot help."""


class Controller:
    def __init__(self, scheduler: Any, store: SQLStore, checkpoints: CheckpointDir, seed: int,
                 extensions: Iterable[RunExtension] = (), max_retries: int = 2) -> None:
        self.scheduler, self.store, self.checkpoints, self.seed = scheduler, store, checkpoints, seed
        self.deleter = DeferredDeleter(checkpoints, lambda: self._submits)
        self.extensions, self.max_retries = list(extensions), max_retries
        self.in_flight: dict[int, Task] = {}
        self.retries: dict[int, int] = {}
        self.known: set[str] = set()
        self.refs = References()  # who still needs each checkpoint
        self._submits = 0  # tasks handed to the backend so far, this process
        # member -> number of its running task's submission, oldest first (O(1) to prune)
        self._sent: dict[int, int] = {}
        # key -> tasks handed out when its file was unlinked; the same, in order, to prune
        self._collected: dict[str, int] = {}
        self._collected_order: deque[tuple[int, str]] = deque()
        self.run_id = -1
        self.completed = 0  # intervals that came back with a checkpoint, this process
        self.listeners: list[Any] = []  # called after each committed step (e.g. TensorBoard)
        self._committed_global: dict[str, Any] | None = None  # as last written, if known
        self.crashes = 0

    # -- persistent state ---------------------------------------------------
    # Two parts, so a step's commit does not grow with the population: a small global
    # state on the run row, and one state per member rewritten only when a step
    # touches that member (it reported, was decided, or was retried).
    def global_state(self) -> dict[str, Any]:
        """What all members share: the scheduler's RNG, each extension's state."""
        state: dict[str, Any] = {"scheduler": self.scheduler.global_state()}
        if self.extensions:
            state["extensions"] = {e.name: e.state() for e in self.extensions}
        return state

    def _changed_global_state(self) -> dict[str, Any] | None:
        """The global state if it changed since this process last committed it, else
        None: its RNG alone is 4 KB, and most steps draw no random number."""
        state = self.global_state()
        return None if state == self._committed_global else state

    def member_state(self, member_id: int) -> dict[str, Any]:
        """One member's part: its scheduler state, the interval it runs, its retries."""
        task = self.in_flight.get(member_id)
        return {"scheduler": self.scheduler.member_state(member_id),
                "task": None if task is None else task_to_json(task),
                "retries": self.retries.get(member_id, 0)}

    def member_states(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        return {i: self.member_state(i) for i in ids}

    def restore(self, run_id: int, state: Mapping[str, Any]) -> list[Task]:
        """Load a committed state; return the intervals that were running at the crash."""
        self.run_id = run_id
        self.scheduler.load_global_state(state["scheduler"])
        self.scheduler.replay_scores((r["step"], r["score"]) for r in self.store.scores(run_id))
        tasks = []
        for member_id, part in self.store.member_states(run_id).items():
            self.scheduler.load_member_state(part["scheduler"])
            if part.get("retries"):
                self.retries[member_id] = part["retries"]
            if part.get("task") is not None:
                tasks.append(task_from_json(part["task"]))
        saved = state.get("extensions") or {}
        if state.get("sharing"):  # written before extensions had a seam
            saved = {**saved, "knowledge": state["sharing"]}
        for e in self.extensions:
            if saved.get(e.name) is not None:
                e.restore(saved[e.name])
        self.known = {c["key"] for c in self.store.checkpoints(run_id)}
        self.refs = References()
        for m in self.scheduler.members.values():
            self.refs.hold(m.member_id, m.checkpoint)
        for t in tasks:
            self.refs.add(t.checkpoints_read())
        # files written after the last commit, or garbage whose deletion was cut short
        self.checkpoints.collect_garbage(self.known | set(self.refs.count))
        return tasks

    def create(self, name: str, settings: Mapping[str, Any], space: Space) -> list[Task]:
        decisions = self.scheduler.start()
        members = [MemberUpdate(d.member_id, d.hparams, 0, None, "training") for d in decisions]
        events = [EventRecord("start", d.member_id, 0, new_hparams=d.hparams) for d in decisions]
        tasks = [self._task_for(d) for d in decisions]
        self.in_flight = {t.member_id: t for t in tasks}
        for t in tasks:
            self.refs.add(t.checkpoints_read())
        state = self.global_state()
        self.run_id = self.store.create_run(name, settings, space.to_dict(), members, events,
                                            state, self.member_states(self.scheduler.members))
        self._committed_global = state
        return tasks

    # -- the loop -----------------------------------------------------------
    def drive(self, backend: Backend, live: LiveDisplay, tasks: Iterable[Task]) -> None:
        self.in_flight = {t.member_id: t for t in tasks}
        self.deleter.synchronous = backend.runs_in_wait
        for t in self.in_flight.values():
            live.update(t.member_id, status="training", hparams=t.hparams, step=t.start_step)
            self._submit(backend, t)
        while backend.pending:
            self._handle(backend, backend.wait(), live)
        self.deleter.close()
        self.store.record(self.run_id, None, [], [], self.global_state(), status="done")

    def _task_for(self, d: Decision) -> Task:
        extras = {e.name: p for e in self.extensions
                  if (p := e.payload(d.member_id, self.scheduler)) is not None}
        if d.mix is not None:  # an architecture strategy's plan: a NAS child (ext/nas)
            extras["mix"] = d.mix
        return Task(d.member_id, d.start_step, d.train_steps, d.hparams, d.checkpoint,
                    derive_seed(self.seed, d.member_id, d.start_step), extras,
                    plan_reads(d.mix))

    def _retry(self, out: Outcome, task: Task) -> EventRecord | None:
        """A dead worker is not the member's fault: run the same interval again, a few times."""
        if not out.crashed:
            return None
        self.crashes += 1
        limit = len(self.scheduler.members) * (self.max_retries + 1)
        if self.completed == 0 and self.crashes >= limit:
            raise WorkersKeepDying(
                f"{self.crashes} intervals died with their worker process and none finished. "
                "Check the worker's error output above; a script run with the local backend "
                "must start torchpbt.run under `if __name__ == \"__main__\":`."
            )
        attempt = self.retries.get(out.member_id, 0) + 1
        if attempt > self.max_retries:
            return None
        self.retries[out.member_id] = attempt
        return EventRecord("retry", out.member_id, task.start_step,
                           detail={"error": out.error, "attempt": attempt})

    def _handle(self, backend: Backend, outcomes: list[Outcome], live: LiveDisplay) -> None:
        """Decide on every outcome one ``wait()`` returned, in order; commit them in one
        transaction; only then delete garbage and submit the next intervals."""
        steps: list[_Step] = []
        released: set[str] = set()
        for out in outcomes:
            crash_point("outcome")
            steps.append(self._step(out, released))
        # every known checkpoint was referenced after the last commit, so only the ones
        # these steps let go of (or wrote) can have become garbage
        garbage = sorted(k for k in released if k in self.known and not self.refs.count[k])
        touched = set().union(*(s.touched for s in steps))
        state = self._changed_global_state()
        self.store.record_steps(self.run_id, [s.record for s in steps], state,
                                deleted_checkpoints=garbage,
                                member_states=self.member_states(touched))
        if state is not None:
            self._committed_global = state
        crash_point("after_commit")
        self.deleter.delete(garbage)  # after the commit: a crash leaves only stray files
        self.known -= set(garbage)
        for e in self.extensions:
            e.after_commit(self.in_flight.values())
        crash_point("before_submit")
        for listener in self.listeners:
            listener()
        for s in steps:
            if not s.retried:
                _show(live, s)
        for s in steps:
            for t in s.new_tasks:
                self._submit(backend, t)

    def _vanished(self, out: Outcome, task: Task) -> EventRecord | None:
        """Equal weights hash to one file. If a worker found another member's identical
        checkpoint present (so wrote nothing) and we collected that file before its outcome
        arrived, the outcome names a file that is gone: run the interval again, uncharged
        (it was not the member's fault)."""
        sent = self._sent.pop(out.member_id, 0)
        # collected, but the deleter had not got to its file yet: it stays. Reclaim first:
        # a key it did not find pending is deleted and logged, so the drain below sees it
        kept = out.checkpoint is not None and self.deleter.reclaim(out.checkpoint)
        for n, key in self.deleter.drain():
            self._collected[key] = n
            self._collected_order.append((n, key))
        gone = out.checkpoint is not None and not kept and self._collected.get(
            out.checkpoint, -1) >= sent and not self.checkpoints.file(out.checkpoint).exists()
        # forget what no task still running can have seen (O(1) per event: with 10,000
        # members in flight a scan of either container took most of an event's time)
        oldest = next(iter(self._sent.values()), self._submits + 1)
        order = self._collected_order
        while order and order[0][0] < oldest:
            n, key = order.popleft()
            if self._collected.get(key) == n:
                del self._collected[key]
        if not gone:
            return None
        return EventRecord("retry", out.member_id, task.start_step, detail={
            "error": f"checkpoint {out.checkpoint} was collected as unused before this "
                     "interval, which wrote the same weights, reported it", "charged": False})

    def _submit(self, backend: Backend, task: Task) -> None:
        self._submits += 1
        self._sent.pop(task.member_id, None)  # re-inserted last: the dict stays in order
        self._sent[task.member_id] = self._submits
        backend.submit(task)

    def _step(self, out: Outcome, released: set[str]) -> _Step:
        """One outcome: the scheduler's decisions, what to write, the next intervals."""
        task = self.in_flight[out.member_id]
        retry = self._retry(out, task) or self._vanished(out, task)
        if retry is not None:
            return _Step(out, task, [], StepRecord(None, [retry]), [task], {out.member_id},
                         retried=True)
        del self.in_flight[out.member_id]
        released |= self.refs.remove(task.checkpoints_read())
        attempts = self.retries.pop(out.member_id, 0) + 1
        if not out.failed:
            self.completed += 1
        decisions = self.scheduler.report(Report(
            out.member_id, out.end_step, out.score, out.checkpoint, out.failed, out.error,
            out.bad_checkpoint))
        events: list[EventRecord] = []
        extra: dict[str, Any] | None = None
        for e in self.extensions:
            if e.name in task.extras:
                keep, logged = e.on_outcome(task, out)
                events += logged
                if keep:
                    extra = {**(extra or {}), **keep}
        interval = IntervalRecord(
            out.member_id, task.start_step, out.end_step, task.hparams, task.checkpoint,
            out.checkpoint, None if out.failed else out.score, out.loss, out.duration_s,
            out.worker, out.error, out.checkpoint_size, extra)
        if out.failed:
            detail: dict[str, Any] = {"error": out.error, "score": repr(out.score)}
            if out.crashed:
                detail["attempts"] = attempts
            if out.bad_checkpoint:
                detail["bad_checkpoint"] = out.bad_checkpoint
            events.append(EventRecord("fail", out.member_id, out.end_step, detail=detail))
        events += [_event(d) for d in decisions if d.action != "continue"]
        updates = [MemberUpdate(d.member_id, d.hparams, d.start_step, d.checkpoint,
                                "done" if d.action == "stop" else "training", d.donor_id,
                                d.action == "exploit") for d in decisions]
        new_tasks = [self._task_for(d) for d in decisions if d.train_steps > 0]
        self.in_flight.update({t.member_id: t for t in new_tasks})
        for t in new_tasks:
            self.refs.add(t.checkpoints_read())
        touched = {out.member_id, *(d.member_id for d in decisions)}
        for i in touched:
            released |= self.refs.hold(i, self.scheduler.members[i].checkpoint)
        if out.checkpoint:
            self.known.add(out.checkpoint)
            released.add(out.checkpoint)
        return _Step(out, task, decisions, StepRecord(interval, events, updates), new_tasks,
                     touched)


@dataclass
class _Step:
    """One outcome's share of a commit, and what follows once it is durable."""

    out: Outcome
    task: Task
    decisions: list[Decision]
    record: StepRecord
    new_tasks: list[Task]  # submitted after the commit (a retried interval: itself again)
    touched: set[int]  # members whose state changed
    retried: bool = False


def _show(live: LiveDisplay, step: _Step) -> None:
    out = step.out
    live.update(out.member_id, score=None if out.failed else out.score)
    for d in step.decisions:
        row: dict[str, Any] = {"step": d.start_step, "hparams": d.hparams,
                               "status": "done" if d.action == "stop" else "training"}
        if d.action == "exploit":
            row["parent_id"] = d.donor_id
            row["exploits"] = live.rows.get(d.member_id, {}).get("exploits", 0) + 1
        live.update(d.member_id, **row)
    live.advance(out.end_step - step.task.start_step)


def _event(d: Decision) -> EventRecord:
    detail: dict[str, Any] = {"reason": d.reason} if d.reason else {}
    if d.action == "exploit":
        detail.update(checkpoint=d.checkpoint, score=d.score, donor_score=d.donor_score)
        if d.mix is not None:
            detail["mix"] = d.mix
    return EventRecord(d.action, d.member_id, d.step, d.donor_id, d.donor_step,
                       d.old_hparams, d.hparams, d.operations, detail)


class References:
    """How many holders (members' current checkpoints, running intervals' inputs) each
    checkpoint has: a checkpoint nobody holds is garbage. Kept per change, so an event
    does not scan the population."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.held: dict[int, str | None] = {}  # each member's checkpoint, as last seen

    def add(self, keys: Iterable[str]) -> None:
        for k in keys:
            self.count[k] += 1

    def remove(self, keys: Iterable[str]) -> set[str]:
        """Drop one hold on each key; return the keys no longer held."""
        freed = set()
        for k in keys:
            self.count[k] -= 1
            if not self.count[k]:
                del self.count[k]
                freed.add(k)
        return freed

    def hold(self, member_id: int, key: str | None) -> set[str]:
        """Member ``member_id`` now holds ``key``; return the keys no longer held."""
        old = self.held.get(member_id)
        if old == key:
            return set()
        self.held[member_id] = key
        if key:
            self.add([key])
        return self.remove([old]) if old else set()
