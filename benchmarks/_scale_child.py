"""The measured side of benchmarks/scale.py: a synthetic member and one timed run.

``python benchmarks/_scale_child.py '{"store": ..., "population": N, ...}'`` runs one
configuration in its own process (so peak RSS is its own) and prints its figures
as JSON on a line starting with ``SCALE_RESULT``. The member does no torch
training (``x += lr * (1 - x)``, a one-float checkpoint), so what is timed is the
controller: scheduler report, the step's commit, checkpoint bookkeeping, plus the
interval runner's constant cost per interval (seeding, a ~1 KB checkpoint file),
which is timed apart ("worker").
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import _common as C

import torchpbt as pbt

STEPS, READY_EVERY = 5, 1
MARK = "SCALE_RESULT "
SPACE = {"lr": pbt.Float(1e-3, 0.5, log=True), "decay": pbt.Float(0.0, 0.1)}


class SyntheticMember(pbt.Member):
    """O(1) arithmetic per step and a one-float state: every cost left is torchpbt's."""

    def setup(self, hparams):
        self.hparams = dict(hparams)
        self.x = 0.0

    def train(self, steps):
        lr, decay = self.hparams["lr"], self.hparams["decay"]
        for _ in range(steps):
            self.x += lr * (1.0 - self.x) - decay * lr * self.x
        return (1.0 - self.x) ** 2

    def evaluate(self):
        return 1.0 - (1.0 - self.x) ** 2

    def state_dict(self):
        return {"x": self.x}

    def load_state_dict(self, state):
        self.x = float(state["x"])


class Timers:
    """Seconds spent in a few library functions (one perf_counter pair per call)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.json_bytes = 0

    def wrap(self, key: str, fn: Callable) -> Callable:
        spent = self.spent
        spent.setdefault(key, 0.0)
        clock = time.perf_counter

        def wrapper(*a, **kw):
            t0 = clock()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] += clock() - t0
        return wrapper

    def wrap_json(self, fn: Callable) -> Callable:
        inner = self.wrap("json", fn)

        def wrapper(obj):
            s = inner(obj)
            self.json_bytes += len(s)
            return s
        return wrapper

    def snapshot(self) -> dict[str, float]:
        # the process's CPU time too: other work on the machine lengthens wall time, and
        # CPU seconds per event show what the controller itself costs
        return {**self.spent, "json_bytes": self.json_bytes, "cpu": time.process_time()}


def _wchar() -> int:
    """Bytes this process passed to write() (files and sockets)."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _split(a: dict[str, float], b: dict[str, float], events: int, seconds: float) -> dict:
    """Per-event milliseconds of each part between two timer snapshots (b - a)."""
    d = {k: b[k] - a.get(k, 0.0) for k in b}
    parts = {
        "worker": d["worker"],
        "scheduler_report": d["scheduler_report"],
        "controller_state": d["controller_state"],
        "json_encode": d["json"],
        "sql": d["store_record"] - d["json"],
        "backend_queue": d["backend_wait"] - d["worker"],
    }
    parts["other_controller"] = seconds - sum(parts.values())
    out = {f"{k}_ms_per_event": 1000 * v / events for k, v in parts.items()}
    out.update({f"{k}_fraction": v / seconds for k, v in parts.items()})
    out["json_bytes_per_event"] = d["json_bytes"] / events
    out["cpu_ms_per_event"] = 1000 * d["cpu"] / events
    return out


def _instrument(timers: Timers) -> None:
    """Wrap the functions whose time the breakdown reports (the library is not changed)."""
    import torchpbt.store.sql as sql
    from torchpbt.algorithm.scheduler import AsyncScheduler
    from torchpbt.backends.serial import SerialBackend
    from torchpbt.backends.worker import IntervalRunner
    from torchpbt.engine.controller import Controller

    IntervalRunner.run = timers.wrap("worker", IntervalRunner.run)
    SerialBackend.wait = timers.wrap("backend_wait", SerialBackend.wait)
    AsyncScheduler.report = timers.wrap("scheduler_report", AsyncScheduler.report)
    Controller.global_state = timers.wrap("controller_state", Controller.global_state)
    Controller.member_states = timers.wrap("controller_state", Controller.member_states)
    sql.SQLStore.record_steps = timers.wrap("store_record", sql.SQLStore.record_steps)
    sql.json_dumps = timers.wrap_json(sql.json_dumps)  # the engine's json_serializer


def child(cfg: dict) -> dict:
    """Run one configuration: generations 1..``timed_generations`` timed, then up to
    ``profile_events`` events of the next one under cProfile, then stop (the Ctrl-C path)."""
    import cProfile

    import torch
    from _scale_report import profile_summary

    import torchpbt.engine.runner as runner

    torch.set_num_threads(1)
    population = cfg["population"]
    events = population * cfg["timed_generations"]
    profile_events = cfg.get("profile_events", 0)
    total = population * STEPS // READY_EVERY
    stop_at = min(events + profile_events, total)
    timers = Timers()
    _instrument(timers)
    ticks: list[float] = []
    marks: dict[str, Any] = {}
    prof = cProfile.Profile()
    clock = time.perf_counter

    def tick() -> None:  # after every committed step, before the next task is submitted
        ticks.append(clock())
        n = len(ticks)
        if n == 1:
            marks["wchar_first"] = _wchar()
            marks["timers_first"] = timers.snapshot()
        if n == population:
            marks["timers_gen1"] = timers.snapshot()
            marks["rss_gen1_mb"] = _rss_mb()
        if n == events:
            marks["wchar_last"] = _wchar()
            marks["timers_last"] = timers.snapshot()
            marks["rss_peak_mb"] = _rss_mb()
            if profile_events:
                prof.enable()
        if n == stop_at and profile_events:
            prof.disable()
        if n == stop_at and stop_at < total:
            raise KeyboardInterrupt  # the Ctrl-C path: the run stops cleanly, resumable

    class Listener:  # the controller calls it after each commit, and close() at the end
        __call__ = staticmethod(tick)

        def close(self) -> None:
            pass

    add_listeners = runner.add_listeners

    def add(controller, *args):
        add_listeners(controller, *args)
        controller.listeners.append(Listener())

    runner.add_listeners = add
    rss_before = _rss_mb()
    with C.temp_run_dir(f"scale-{population}") as tmp:
        t_call = clock()
        completed = True
        try:
            pbt.run(SyntheticMember, SPACE, population=population, steps=STEPS,
                    ready_every=READY_EVERY, seed=0, backend="serial", run_dir=tmp / "run",
                    storage=cfg.get("storage"), progress=False, summary=False)
        except pbt.RunInterrupted:
            completed = False
        t_end = clock()
    if len(ticks) < events:
        raise RuntimeError(f"only {len(ticks)} events committed, expected {events}")
    out = _figures(cfg, ticks[:events], marks, t_call)
    out.update({"events_total_run": total, "completed": completed,
                "run_call_seconds": t_end - t_call, "rss_after_imports_mb": rss_before})
    if profile_events:
        out["profile"] = {"events": stop_at - events, **profile_summary(prof)}
    return out


def _figures(cfg: dict, t: list[float], marks: dict[str, Any], t_call: float) -> dict:
    """Events per second (whole run, generation 1, steady state), latencies, the split."""
    population, events = cfg["population"], len(t)
    lat = [b - a for a, b in zip(t[:-1], t[1:], strict=True)]
    gen_rows = []
    for g in range(1, math.ceil(events / population) + 1):
        lo, hi = (g - 1) * population, min(g * population, events)  # events lo+1..hi
        seg = lat[max(lo - 1, 0):hi - 1]  # latencies ending at events lo+2..hi (and lo+1)
        if seg:
            gen_rows.append({"generation": g, "events": hi - lo,
                             "events_per_s": len(seg) / sum(seg),
                             "latency_ms_median": 1000 * statistics.median(seg),
                             "latency_ms_p95": 1000 * _quantile(seg, 0.95),
                             "latency_ms_max": 1000 * max(seg)})
    first, last, gen1 = marks["timers_first"], marks["timers_last"], marks["timers_gen1"]
    span_all = t[-1] - t[0]
    n_ss, span_ss = events - population, t[-1] - t[population - 1]
    worker_ss = last["worker"] - gen1["worker"]
    return {
        "store": cfg["store"], "population": population, "events_timed": events,
        "whole_run_events_per_s": events / (t[-1] - t_call),
        "seconds_to_first_event": t[0] - t_call,
        "event_loop_seconds": span_all,
        "event_loop_events_per_s": (events - 1) / span_all,
        "event_loop_controller_only_events_per_s":
            (events - 1) / (span_all - (last["worker"] - first["worker"])),
        "gen1_events_per_s": (population - 1) / (t[population - 1] - t[0]),
        "steady_events": n_ss,
        "steady_events_per_s": n_ss / span_ss,
        "steady_controller_only_events_per_s": n_ss / (span_ss - worker_ss),
        "steady_events_per_cpu_s": n_ss / (last["cpu"] - gen1["cpu"]),
        "generations": gen_rows,
        "rss_peak_mb": marks["rss_peak_mb"], "rss_gen1_mb": marks["rss_gen1_mb"],
        "json_bytes_per_step": (last["json_bytes"] - gen1["json_bytes"]) / n_ss,
        "file_bytes_written_per_event": (marks["wchar_last"] - marks["wchar_first"])
        / max(events - 1, 1),
        "breakdown_event_loop": _split(first, last, events - 1, span_all),
        "breakdown_steady": _split(gen1, last, n_ss, span_ss),
    }


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _scheduler(population: int, history: int, rng: Any) -> Any:
    """An async scheduler whose every member has reported ``history`` scores."""
    from torchpbt.algorithm.scheduler import AsyncScheduler, PBTConfig, Report

    sched = AsyncScheduler(pbt.Space(SPACE), PBTConfig(population, READY_EVERY, 10 ** 6),
                           pbt.Truncation(0.2), pbt.Perturb(), seed=0)
    for step in range(1, history + 1):
        for i in range(population):  # recorded as reports are, without deciding anything
            sched._record(Report(i, step, rng.random(), f"{rng.getrandbits(256):064x}"))
    return sched


def state_size(population: int, history: int, repeats: int = 3) -> dict:
    """Bytes and build/encode time of the state one step commits (the global part and
    one member's part) once every member holds ``history`` scores."""
    import random

    from torchpbt.backends.worker import Task
    from torchpbt.engine.controller import Controller
    from torchpbt.store.sql import json_dumps

    rng = random.Random(0)
    sched = _scheduler(population, history, rng)
    ctrl = Controller(sched, None, None, 0)  # type: ignore[arg-type]  # needs neither
    ctrl.in_flight = {m.member_id: Task(m.member_id, m.step, READY_EVERY, dict(m.hparams),
                                        m.checkpoint, rng.getrandbits(32))
                      for m in sched.members.values()}
    build, encode = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = (ctrl.global_state(), ctrl.member_states([0]))
        t1 = time.perf_counter()
        text = json_dumps(state[0]) + json_dumps(state[1][0])
        build.append(t1 - t0)
        encode.append(time.perf_counter() - t1)
    return {"population": population, "history": history, "state_bytes": len(text),
            "state_build_ms": 1000 * min(build), "json_encode_ms": 1000 * min(encode)}


def report_cost(population: int, history: int = STEPS) -> dict:
    """Mean cost of one steady-state ``AsyncScheduler.report`` (every member scored,
    Truncation ranking), measured on the scheduler alone."""
    import random

    from torchpbt.algorithm.scheduler import Report

    rng = random.Random(0)
    sched = _scheduler(population, history, rng)
    reports = max(200, min(5000, int(2e7 // population)))
    spent: list[float] = []
    exploits, order = 0, []
    while len(spent) < reports:  # generation by generation, members in random order
        if not order:
            order = rng.sample(range(population), population)
        i = order.pop()
        m = sched.members[i]
        if m.awaiting is not None:  # waits for its donor's report: not training
            continue
        report = Report(i, m.step + 1, rng.random(), f"{rng.getrandbits(256):064x}")
        t0 = time.perf_counter()
        decisions = sched.report(report)  # empty when it waits for a donor
        spent.append(time.perf_counter() - t0)
        exploits += sum(d.action == "exploit" for d in decisions)
    return {"population": population, "reports": reports, "exploits": exploits,
            "report_ms_mean": 1000 * statistics.fmean(spent),
            "report_ms_median": 1000 * statistics.median(spent)}


if __name__ == "__main__":
    print(MARK + json.dumps(child(json.loads(sys.argv[1]))), flush=True)
