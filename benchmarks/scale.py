"""Controller scale: ready events per second and memory from 100 to 10,000 members.

A synthetic member (no torch training: train() is ``x += lr * (1 - x)``, the
score a formula of x, the checkpoint one float) runs on the serial backend, so
what is timed is the controller: scheduler report, the step's commit to the
store (SQLite in the run directory, and PostgreSQL on a throwaway cluster this
script starts and stops), checkpoint bookkeeping, plus the synthetic member's
constant per-interval cost (seeding, a ~1 KB ``torch.save``), which is measured
and reported apart.

Every population runs ``steps=5, ready_every=1`` (5 ready events per member),
each configuration in a fresh process (so peak RSS is its own), after waiting
for a quiet CPU. Every event costs O(population) (the whole scheduler state is
rebuilt, encoded and written with each one: ~40 ms at 1,000 members), so each
run is capped at ``--work`` member-events (events x population <= 3e6) and
then stops cleanly (the Ctrl-C path): 100 members run all 5 generations
(500 events), 1,000 members generation 1 and 2,000 events of the steady state
(generation >= 2: exploit only ranks once every member has scored), 10,000
members the first 300 events of generation 1 (reaching generation 2 would take
10,000 events, over an hour per store). Reported per run:

* events/s over the whole run (from the call of ``torchpbt.run`` to the last
  timed event), over generation 1 and in the steady state (generation >= 2),
  with per-event latency percentiles; the same without the synthetic member's
  own time ("controller only");
* where each event's time goes (inline timers: worker, scheduler report,
  ``Controller.state()``, JSON encoding, SQL, backend queue, the rest);
* peak RSS of the process (``ru_maxrss``) at the last timed event, and after imports;
* bytes per step: the ``runs.scheduler_state`` JSON written with every commit,
  bytes this process wrote to files (``/proc/self/io`` wchar: SQLite's WAL and
  the checkpoints) and, on PostgreSQL, the server's WAL bytes (``pg_stat_wal``);
  and the state's size once every member holds its full 100-score history;
* a cProfile of further events after the timed window (so the timings are not
  profiled) of every population >= 1,000, on both stores: steady state at
  1,000, generation 1 at 10,000.

    python benchmarks/scale.py            # 100, 1,000, 10,000 members; SQLite and PostgreSQL
    python benchmarks/scale.py --quick    # 100 and 1,000 members
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

import torchpbt as pbt

NAME = "scale"
STEPS, READY_EVERY = 5, 1
GOAL_EVENTS_PER_S = 2000.0
MARK = "SCALE_RESULT "

# ---------------------------------------------------------------------------------------
# the synthetic member (the child processes run this file as __main__)

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


# ---------------------------------------------------------------------------------------
# child: one configuration in its own process


class _Timers:
    """Seconds spent in a few library functions (one perf_counter pair per call)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.json_bytes = 0
        self.json_max = 0

    def wrap(self, key: str, fn):
        spent = self.spent
        spent[key] = 0.0
        clock = time.perf_counter

        def wrapper(*a, **kw):
            t0 = clock()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] += clock() - t0
        return wrapper

    def wrap_json(self, fn):
        inner = self.wrap("json", fn)

        def wrapper(obj):
            s = inner(obj)
            self.json_bytes += len(s)
            self.json_max = max(self.json_max, len(s))
            return s
        return wrapper

    def snapshot(self) -> dict[str, float]:
        return {**self.spent, "json_bytes": self.json_bytes}


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
    return out


KEY_FUNCTIONS = {  # (file suffix, function) -> label, for the profile's headline shares
    ("torchpbt/controller.py", "_handle"): "Controller._handle (one event, all of it)",
    ("torchpbt/controller.py", "state"): "Controller.state (build the state dict)",
    ("torchpbt/scheduler.py", "state_dict"): "_Scheduler.state_dict",
    ("torchpbt/store/sql.py", "record"): "SQLStore.record (commit, JSON included)",
    ("torchpbt/store/sql.py", "json_dumps"): "json_dumps (all JSON columns)",
    ("torchpbt/scheduler.py", "report"): "AsyncScheduler.report",
    ("torchpbt/scheduler.py", "snapshot"): "_Scheduler.snapshot",
    ("torchpbt/scheduler.py", "_decide"): "_Scheduler._decide",
    ("torchpbt/exploit.py", "__call__"): "Truncation.__call__ (rank the population)",
    ("torchpbt/controller.py", "_task_keys"): "_task_keys (in-flight checkpoints)",
    ("torchpbt/backends/serial.py", "wait"): "SerialBackend.wait (queue + worker)",
    ("torchpbt/backends/worker.py", "run"): "IntervalRunner.run (the synthetic worker)",
}


def _profile_summary(prof, top: int = 25) -> dict:
    """Top functions by cumulative and own time, as fractions of the profiled wall time
    (this script's timer wrappers and listener are left out of the lists)."""
    import pstats

    st = pstats.Stats(prof)
    total = st.total_tt
    rows, keys = [], {}
    for (file, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():
        if file.endswith("scale.py"):
            continue
        where = func if file == "~" else f"{_short(file)}:{line}({func})"
        rows.append({"function": where, "calls": nc, "cumulative_s": ct, "own_s": tt,
                     "cumulative_fraction": ct / total, "own_fraction": tt / total})
        for (suffix, name), label in KEY_FUNCTIONS.items():
            if func == name and file.endswith(suffix):
                keys[label] = round(keys.get(label, 0.0) + ct / total, 4)
    keys = {label: keys.get(label, 0.0) for label in KEY_FUNCTIONS.values()}
    by_cum = sorted(rows, key=lambda r: -r["cumulative_s"])
    by_own = sorted(rows, key=lambda r: -r["own_s"])
    rnd = lambda r: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}  # noqa: E731
    return {"profiled_seconds": total, "key_functions_cumulative_fraction": keys,
            "top_cumulative": [rnd(r) for r in by_cum[:top]],
            "top_own": [rnd(r) for r in by_own[:top]]}


def _short(file: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return os.path.basename(file)


def child(cfg: dict) -> dict:
    """Run one configuration; return its figures (printed as JSON on the last line)."""
    import cProfile

    import torch

    import torchpbt.runner as runner
    import torchpbt.store.sql as sql
    from torchpbt.backends.serial import SerialBackend
    from torchpbt.backends.worker import IntervalRunner
    from torchpbt.controller import Controller
    from torchpbt.scheduler import AsyncScheduler

    torch.set_num_threads(1)
    population, events = cfg["population"], cfg["events"]
    profile_events = cfg.get("profile_events", 0)
    total = population * STEPS // READY_EVERY
    stop_at = events + profile_events

    timers = _Timers()
    IntervalRunner.run = timers.wrap("worker", IntervalRunner.run)
    SerialBackend.wait = timers.wrap("backend_wait", SerialBackend.wait)
    AsyncScheduler.report = timers.wrap("scheduler_report", AsyncScheduler.report)
    Controller.state = timers.wrap("controller_state", Controller.state)
    sql.SQLStore.record = timers.wrap("store_record", sql.SQLStore.record)
    sql.json_dumps = timers.wrap_json(sql.json_dumps)  # the engine's json_serializer

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
            marks["state_bytes_last"] = timers.json_max
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

    t = ticks
    lat = [b - a for a, b in zip(t[:events - 1], t[1:events], strict=True)]
    gen_rows = []
    for g in range(1, math.ceil(events / population) + 1):
        lo, hi = (g - 1) * population, min(g * population, events)  # events lo+1..hi
        seg = lat[max(lo - 1, 0):hi - 1]  # latencies ending at events lo+2..hi (and lo+1)
        if not seg:
            continue
        gen_rows.append({"generation": g, "events": hi - lo,
                         "events_per_s": len(seg) / sum(seg),
                         "latency_ms_median": 1000 * statistics.median(seg),
                         "latency_ms_p95": 1000 * _quantile(seg, 0.95),
                         "latency_ms_max": 1000 * max(seg)})
    k1 = min(population, events)  # generation 1 (or its timed part): events 1..k1
    out_gen1 = {"gen1_events_timed": k1, "gen1_events_per_s": (k1 - 1) / (t[k1 - 1] - t[0])}
    worker_all = marks["timers_last"]["worker"] - marks["timers_first"]["worker"]
    span_all = t[events - 1] - t[0]
    out: dict[str, Any] = {
        "store": cfg["store"], "population": population, "events_timed": events,
        "events_total_run": total, "completed": completed,
        "whole_run_events_per_s": events / (t[events - 1] - t_call),
        "seconds_to_first_event": t[0] - t_call,
        "event_loop_seconds": span_all,
        "event_loop_events_per_s": (events - 1) / span_all,
        "event_loop_controller_only_events_per_s": (events - 1) / (span_all - worker_all),
        "run_call_seconds": t_end - t_call,
        **out_gen1,
        "generations": gen_rows,
        "rss_after_imports_mb": rss_before, "rss_peak_mb": marks["rss_peak_mb"],
        "rss_gen1_mb": marks.get("rss_gen1_mb"),
        "state_bytes_per_step": marks["state_bytes_last"],
        "file_bytes_written_per_event": (marks["wchar_last"] - marks["wchar_first"])
        / max(events - 1, 1),
        "breakdown_event_loop": _split(marks["timers_first"], marks["timers_last"], events - 1,
                                       span_all),
    }
    out["headline_basis"] = "steady state (generation >= 2)" if events > population else (
        f"generation 1 (first {events} of {population} events)")
    out["headline_events_per_s"] = out["gen1_events_per_s"]
    if events > population:
        span_ss = t[events - 1] - t[population - 1]
        worker_ss = marks["timers_last"]["worker"] - marks["timers_gen1"]["worker"]
        n_ss = events - population
        out.update({
            "steady_events": n_ss,
            "steady_events_per_s": n_ss / span_ss,
            "headline_events_per_s": n_ss / span_ss,
            "steady_controller_only_events_per_s": n_ss / (span_ss - worker_ss),
            "breakdown_steady": _split(marks["timers_gen1"], marks["timers_last"], n_ss, span_ss),
        })
    if profile_events:
        out["profile"] = {"events": min(stop_at, len(ticks)) - events,
                          **_profile_summary(prof)}
    return out


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


# ---------------------------------------------------------------------------------------
# state size once histories are full (no run needed: the state is built directly)


def state_size(population: int, history: int, repeats: int = 3) -> dict:
    """Bytes and build/encode time of ``Controller.state()`` with ``history`` scores a member."""
    import random

    from torchpbt.backends.worker import Task
    from torchpbt.controller import Controller
    from torchpbt.scheduler import AsyncScheduler, PBTConfig
    from torchpbt.store.sql import json_dumps

    rng = random.Random(0)
    sched = AsyncScheduler(pbt.Space(SPACE), PBTConfig(population, READY_EVERY, 10 ** 6),
                           pbt.Truncation(0.2), pbt.Perturb(), seed=0)
    for m in sched.members.values():
        m.step, m.checkpoint = history, f"{rng.getrandbits(256):064x}"
        m.history = [rng.random() for _ in range(history)]
    ctrl = Controller(sched, None, None, 0)  # type: ignore[arg-type]  # state() needs neither
    ctrl.in_flight = {m.member_id: Task(m.member_id, m.step, READY_EVERY, dict(m.hparams),
                                        m.checkpoint, rng.getrandbits(32))
                      for m in sched.members.values()}
    build, encode = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = ctrl.state()
        t1 = time.perf_counter()
        text = json_dumps(state)
        build.append(t1 - t0)
        encode.append(time.perf_counter() - t1)
    return {"population": population, "history": history, "state_bytes": len(text),
            "state_build_ms": 1000 * min(build), "json_encode_ms": 1000 * min(encode)}


def report_cost(population: int, history: int = STEPS) -> dict:
    """Mean cost of one steady-state ``AsyncScheduler.report`` (every member scored:
    snapshot + Truncation ranking), the part of an event the 10,000-member runs cannot
    reach; measured on the scheduler alone."""
    import random

    from torchpbt.scheduler import AsyncScheduler, PBTConfig, Report

    rng = random.Random(0)
    sched = AsyncScheduler(pbt.Space(SPACE), PBTConfig(population, READY_EVERY, 10 ** 6),
                           pbt.Truncation(0.2), pbt.Perturb(), seed=0)
    for m in sched.members.values():
        m.step, m.checkpoint = history, f"{rng.getrandbits(256):064x}"
        m.history = [rng.random() for _ in range(history)]
    reports = max(50, min(1000, int(2e6 // population)))
    ids = [rng.randrange(population) for _ in range(reports)]
    spent, exploits = [], 0
    for i in ids:
        m = sched.members[i]
        report = Report(i, m.step + 1, rng.random(), f"{rng.getrandbits(256):064x}")
        t0 = time.perf_counter()
        decision = sched.report(report)[0]
        spent.append(time.perf_counter() - t0)
        exploits += decision.action == "exploit"
    return {"population": population, "reports": reports, "exploits": exploits,
            "report_ms_mean": 1000 * statistics.fmean(spent),
            "report_ms_median": 1000 * statistics.median(spent)}


# ---------------------------------------------------------------------------------------
# parent


def _pg_cpu_seconds(pgdata: Path | None) -> float:
    """CPU seconds of the throwaway server: its live processes and the ones it has reaped."""
    if pgdata is None:
        return 0.0
    try:
        master = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(d.name), int(fields[1])
        if pid == master:
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        elif ppid == master:
            total += int(fields[11]) + int(fields[12])
    return total / tck


def _pg_wal_bytes(server) -> float:
    with server._admin() as conn:
        return float(conn.execute("SELECT wal_bytes FROM pg_stat_wal").fetchone()[0])


def _events(population: int, work: float, cap: int | None = None) -> int:
    """Events for a run: every event costs O(population), so a fixed budget of work."""
    n = min(population * STEPS // READY_EVERY, max(int(work // population), 2))
    return min(n, cap) if cap is not None else n


def run_child(cfg: dict) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                           json.dumps(cfg)], capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {cfg} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


def start_pg(console) -> tuple[Any, str | None]:
    """The tests' throwaway cluster (tests/pg.py); (None, why) if it cannot start."""
    tests = str(C.ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    try:
        import pg  # tests/pg.py: initdb + pg_ctl as `postgres`, durability off

        return pg.start_server(), None
    except Exception as exc:  # PgUnavailable, or tests/pg.py's own imports missing
        why = f"{type(exc).__name__}: {exc}"
        console.print(f"[bold red]POSTGRESQL NOT MEASURED: cannot start a throwaway server: "
                      f"{why}[/bold red]")
        return None, why


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x (the growth exponent)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if y and y > 0]
    if len(pts) < 2:
        return math.nan
    mx = statistics.fmean(p[0] for p in pts)
    my = statistics.fmean(p[1] for p in pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den


def plot(path: Path, rows: list[dict], projections: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), dpi=110)
    colors = {"sqlite": "tab:blue", "postgresql": "tab:orange"}
    ax = axes[0]
    for store in ("sqlite", "postgresql"):
        rs = sorted((r for r in rows if r["store"] == store), key=lambda r: r["population"])
        if not rs:
            continue
        ns = [r["population"] for r in rs]
        ax.plot(ns, [r["headline_events_per_s"] for r in rs], "o-",
                color=colors[store], label=f"{store}: steady state (10,000: generation 1)")
        ax.plot(ns, [r["gen1_events_per_s"] for r in rs], "^:", color=colors[store],
                alpha=0.6, label=f"{store}: generation 1")
        ax.plot(ns, [r["whole_run_events_per_s"] for r in rs], "s--", color=colors[store],
                alpha=0.6, label=f"{store}: whole run")
    ax.axhline(GOAL_EVENTS_PER_S, color="grey", ls=":", label="goal (10,000 members, SQLite)")
    ax.set(xscale="log", yscale="log", xlabel="population", ylabel="ready events / s",
           title="events handled per second (serial backend)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower left")
    ax = axes[1]
    for store in ("sqlite", "postgresql"):
        rs = sorted((r for r in rows if r["store"] == store), key=lambda r: r["population"])
        if not rs:
            continue
        ns = [r["population"] for r in rs]
        ax.plot(ns, [r["rss_peak_mb"] for r in rs], "o-", color=colors[store],
                label=f"{store}: peak RSS")
        ax.plot(ns, [r["rss_peak_mb"] - r["rss_after_imports_mb"] for r in rs], "s--",
                color=colors[store], alpha=0.6, label=f"{store}: peak − after imports")
    ax.set(xscale="log", yscale="log", xlabel="population", ylabel="MB",
           title="controller process memory")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax = axes[2]
    rs = sorted((r for r in rows if r["store"] == "sqlite"), key=lambda r: r["population"])
    ax.plot([r["population"] for r in rs], [r["state_bytes_per_step"] for r in rs], "o-",
            label="scheduler_state per step (runs, ≤5 scores)")
    full = sorted((p for p in projections if p["history"] == 100),
                  key=lambda p: p["population"])
    ax.plot([p["population"] for p in full], [p["state_bytes"] for p in full], "s--",
            label="scheduler_state, 100-score histories")
    ax.plot([r["population"] for r in rs],
            [r["state_bytes_per_step"] * r["population"] for r in rs], "^:",
            label="per generation (N steps)")
    ax.set(xscale="log", yscale="log", xlabel="population", ylabel="bytes",
           title="state written with every step")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(MARK + json.dumps(child(json.loads(sys.argv[2]))), flush=True)
        return 0

    def add(p):
        p.add_argument("--sizes", type=int, nargs="+", default=None,
                       help="populations (default 100 1000 10000; quick: 100 1000)")
        p.add_argument("--work", type=float, default=None,
                       help="events timed per run = min(5 x population, work / population) "
                            "(default 3e6: 500, 3,000 and 300 events; quick: 2e5)")
        p.add_argument("--profile-work", type=float, default=None,
                       help="events profiled after the timed window = min(500, "
                            "profile_work / population), populations >= 1,000 (and the "
                            "largest) only (default 5e5: 500 and 50 events; quick: 5e4)")
        p.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"],
                       choices=["sqlite", "postgresql"])
        p.add_argument("--max-wait", type=float, default=None,
                       help="seconds to wait for a quiet CPU before each run (default 600; "
                            "quick: 2)")

    args = C.parse_args(__doc__.splitlines()[0], argv, add)
    q = args.quick
    sizes = sorted(args.sizes or ([100, 1000] if q else [100, 1000, 10000]))
    work = args.work or (2e5 if q else 3e6)
    profile_work = args.profile_work if args.profile_work is not None else (
        5e4 if q else 5e5)
    max_wait = args.max_wait if args.max_wait is not None else (2.0 if q else 600.0)
    cfg: dict[str, Any] = {
        "sizes": sizes, "steps": STEPS, "ready_every": READY_EVERY, "work": work,
        "profile_work": profile_work, "stores": args.stores, "backend": "serial",
        "exploit": "Truncation(0.2)", "explore": "Perturb()", "seed": 0,
        "member": "SyntheticMember: x += lr*(1-x) - decay*lr*x per step, score 1-(1-x)^2, "
                  "checkpoint {'x': float}",
    }
    t_start = time.perf_counter()
    rows: list[dict] = []
    server = None
    with C.progress() as bar:
        pg_note = None
        if "postgresql" in args.stores:
            server, pg_note = start_pg(bar.console)
            if server is not None:
                cfg["postgresql_server"] = ("throwaway cluster from tests/pg.py: fsync=off, "
                                            "synchronous_commit=off, full_page_writes=off; "
                                            f"started in {server.start_seconds:.1f}s")
            else:
                cfg["postgresql_skipped"] = pg_note
        stores = [s for s in args.stores if s != "postgresql" or server is not None]
        task = bar.add_task("scale runs", total=len(sizes) * len(stores))
        pgdata = (server.owned_dir / "data") if server is not None and server.owned_dir else None
        try:
            for n in sizes:
                for store in stores:
                    events = _events(n, work)
                    child_cfg: dict[str, Any] = {"store": store, "population": n,
                                                 "events": events}
                    if n >= 1000 or n == sizes[-1]:
                        left = n * STEPS // READY_EVERY - events
                        child_cfg["profile_events"] = min(_events(n, profile_work, 500), left)
                    url = server.new_database() if store == "postgresql" else None
                    child_cfg["storage"] = url
                    try:
                        waited = C.wait_for_quiet(max_wait=max_wait, console=bar.console)
                        wal0 = _pg_wal_bytes(server) if url else 0.0
                        pg0 = _pg_cpu_seconds(pgdata) if url else 0.0
                        t0 = time.perf_counter()
                        with C.ForeignCpu() as foreign:
                            row = run_child(child_cfg)
                        wall = time.perf_counter() - t0
                        pg_cpu = (_pg_cpu_seconds(pgdata) - pg0) if url else 0.0
                        if url:
                            row["pg_wal_bytes_per_event"] = (_pg_wal_bytes(server) - wal0) / (
                                row["events_timed"] + row.get("profile", {}).get("events", 0))
                    finally:
                        if url:
                            server.drop_database(url)
                    row.update({"waited_for_quiet_seconds": waited, "child_wall_seconds": wall,
                                "pg_server_cpu_seconds": pg_cpu,
                                "foreign_cpu_seconds": foreign.seconds,
                                "foreign_cpu_seconds_excluding_pg": max(
                                    0.0, foreign.seconds - pg_cpu),
                                "foreign_cpu_fraction": max(0.0, foreign.seconds - pg_cpu) / wall})
                    rows.append(row)
                    bar.advance(task)
                    bar.console.print(
                        f"{store:10s} N={n:>6}: {row['events_timed']} events; whole run "
                        f"{row['whole_run_events_per_s']:.1f}/s, gen 1 "
                        f"{row['gen1_events_per_s']:.1f}/s, steady "
                        f"{row.get('steady_events_per_s', math.nan):.1f}/s; peak RSS "
                        f"{row['rss_peak_mb']:.0f} MB; state {row['state_bytes_per_step']:,} B"
                        f"/step; foreign CPU {row['foreign_cpu_fraction']:.1%} (PG server "
                        f"{pg_cpu:.1f}s) in {wall:.0f}s")
        finally:
            if server is not None:
                server.stop()
        C.wait_for_quiet(max_wait=max_wait, console=bar.console)
        with C.ForeignCpu() as foreign:
            t0 = time.perf_counter()
            projections = [state_size(n, h) for n in sizes for h in (STEPS, 100)]
            reports = [report_cost(n) for n in sizes]
        cfg["component_foreign_cpu_fraction"] = foreign.seconds / (time.perf_counter() - t0)
    cfg["total_seconds"] = time.perf_counter() - t_start

    summary: dict[str, float] = {}
    for r in rows:
        s, n = r["store"], r["population"]
        summary[f"{s}_events_per_s_{n}"] = r["headline_events_per_s"]
        summary[f"{s}_gen1_events_per_s_{n}"] = r["gen1_events_per_s"]
        summary[f"{s}_whole_run_events_per_s_{n}"] = r["whole_run_events_per_s"]
        summary[f"{s}_controller_only_events_per_s_{n}"] = r.get(
            "steady_controller_only_events_per_s", r["event_loop_controller_only_events_per_s"])
        summary[f"{s}_peak_rss_mb_{n}"] = r["rss_peak_mb"]
        summary[f"{s}_rss_growth_mb_{n}"] = r["rss_peak_mb"] - r["rss_after_imports_mb"]
        if s == "sqlite":
            summary[f"state_bytes_per_step_{n}"] = float(r["state_bytes_per_step"])
            summary[f"sqlite_file_bytes_per_event_{n}"] = r["file_bytes_written_per_event"]
        else:
            summary[f"postgresql_wal_bytes_per_event_{n}"] = r["pg_wal_bytes_per_event"]
    for p in projections:
        if p["history"] == 100:
            summary[f"state_bytes_per_step_history100_{p['population']}"] = float(p["state_bytes"])
            summary[f"state_build_and_encode_ms_history100_{p['population']}"] = (
                p["state_build_ms"] + p["json_encode_ms"])
    for r in reports:
        summary[f"scheduler_report_steady_ms_{r['population']}"] = r["report_ms_mean"]
    report_ms = {r["population"]: r["report_ms_mean"] for r in reports}
    for r in rows:  # no steady state reached: add the steady report's extra cost to generation 1
        if "steady_events_per_s" not in r:
            extra = report_ms[r["population"]] - r["breakdown_event_loop"][
                "scheduler_report_ms_per_event"]
            summary[f"{r['store']}_steady_estimate_events_per_s_{r['population']}"] = 1 / (
                1 / r["gen1_events_per_s"] + max(extra, 0.0) / 1000)
    for s in stores:
        rs = sorted((r for r in rows if r["store"] == s), key=lambda r: r["population"])
        ns = [r["population"] for r in rs]
        summary[f"{s}_gen1_events_per_s_growth_exponent"] = _slope(
            ns, [r["gen1_events_per_s"] for r in rs])
        summary[f"{s}_rss_growth_exponent"] = _slope(
            ns, [r["rss_peak_mb"] - r["rss_after_imports_mb"] for r in rs])
    srs = sorted((r for r in rows if r["store"] == "sqlite"), key=lambda r: r["population"])
    summary["state_bytes_growth_exponent"] = _slope(
        [r["population"] for r in srs], [r["state_bytes_per_step"] for r in srs])
    summary["foreign_cpu_fraction_max"] = max(r["foreign_cpu_fraction"] for r in rows)
    goals = {}
    if "sqlite_events_per_s_10000" in summary:
        goals["sqlite_events_per_s_10000"] = C.goal(GOAL_EVENTS_PER_S, ">=")
    fig = plot(C.artifact_path(NAME, q, ".png"), rows, projections)
    notes = _notes(summary, rows, cfg)
    path = C.write_result(NAME, q, config=cfg, summary=summary, goals=goals,
                          runs=[*rows, *({"state_size": p} for p in projections),
                                *({"scheduler_report_steady": r} for r in reports)],
                          notes=notes, figures=[fig])
    print(f"wrote {path} and {fig} in {cfg['total_seconds']:.0f}s")
    for k, v in summary.items():
        print(f"  {k}: {v:.6g}")
    for r in rows:
        if "profile" not in r:
            continue
        prof = r["profile"]
        print(f"profile of {prof['events']} events after the timed window, "
              f"N={r['population']} ({r['store']}); share of profiled time:")
        for label, frac in prof["key_functions_cumulative_fraction"].items():
            print(f"  {frac:6.1%}  {label}")
        for x in prof["top_own"][:8]:
            print(f"  {x['own_fraction']:6.1%}  own time: {x['function']}")
    return 0


def _steady_vs_gen1(rows: list[dict]) -> str:
    said = [f"{r['store']} {r['steady_events_per_s'] / r['gen1_events_per_s'] - 1:+.0%}"
            for r in rows if r["population"] >= 1000 and "steady_events_per_s" in r]
    if not said:
        return ""
    return ("Steady state against generation 1 at 1,000 members (ranking, longer histories): "
            + ", ".join(said) + ".")


def _notes(summary: dict, rows: list[dict], cfg: dict) -> str:
    parts = [
        "events/s: committed ready events per second of wall time on the serial backend. "
        "{store}_events_per_s_N is the steady state (events after the whole first "
        "generation: exploit ranks the population only once every member has scored) where "
        "the run reached it (100, 1,000 members) and the first events of generation 1 at "
        "10,000 members (see runs[].headline_basis); {store}_gen1_events_per_s_N is "
        "generation 1 at every size (like for like: the growth exponents use it). 'whole "
        "run' counts from the torchpbt.run call (preflight, creating N members) to the last "
        "timed event; controller_only takes the synthetic member's own interval time "
        "(seeding, torch.save) out. Timings carry inline timers (one perf_counter pair per "
        "wrapped call, < 0.1% of an event at 1,000 members).",
        "Each run is capped at `work` member-events because every event costs "
        "O(population): at 10,000 members generation 2 would start after 10,000 events "
        "(over an hour per store), so only the first events of generation 1 are timed. "
        f"{_steady_vs_gen1(rows)} {{store}}_steady_estimate_events_per_s_N adds the "
        "steady-state scheduler report's extra cost (scheduler_report_steady_ms_N, "
        "measured on the scheduler alone) to the generation-1 event: an estimate, not a "
        "measurement. Histories are ≤ 5 scores long in these runs; "
        "state_bytes_per_step_history100_N is the state once every member holds its 100 "
        "scores (the cap), measured by building that state directly.",
        "PostgreSQL is the tests' throwaway cluster with durability off (fsync, "
        "synchronous_commit, full_page_writes off): a durable server is slower. Its CPU "
        "is measured apart and not counted as foreign load.",
    ]
    if cfg.get("postgresql_skipped"):
        parts.insert(0, f"POSTGRESQL NOT MEASURED: {cfg['postgresql_skipped']}")
    key = "sqlite_events_per_s_10000"
    if key in summary and not C.goal_met(summary[key], {"value": GOAL_EVENTS_PER_S, "op": ">="}):
        parts.append(f"GOAL MISSED: {summary['sqlite_events_per_s_10000']:.1f} events/s at "
                     f"10,000 members on SQLite (goal {GOAL_EVENTS_PER_S:.0f}).")
    return " ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
