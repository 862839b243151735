"""Reporting for benchmarks/scale.py: profile summaries, growth exponents, the figure
and the notes written with the result."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

GOAL_EVENTS_PER_S = 2000.0

KEY_FUNCTIONS = {  # (file suffix, function) -> label, for the profile's headline shares
    ("torchpbt/engine/controller.py", "_handle"): "Controller._handle (one event, all of it)",
    ("torchpbt/engine/controller.py", "global_state"): "Controller.global_state",
    ("torchpbt/engine/controller.py", "member_states"): "Controller.member_states (touched members)",
    ("torchpbt/store/sql.py", "record_steps"): "SQLStore.record_steps (commit, JSON included)",
    ("torchpbt/store/sql.py", "json_dumps"): "json_dumps (all JSON columns)",
    ("torchpbt/algorithm/scheduler.py", "report"): "AsyncScheduler.report",
    ("torchpbt/algorithm/scheduler.py", "_decide"): "_Scheduler._decide",
    ("torchpbt/algorithm/exploit.py", "__call__"): "Truncation.__call__ (rank the population)",
    ("torchpbt/backends/serial.py", "wait"): "SerialBackend.wait (queue + worker)",
    ("torchpbt/backends/worker.py", "run"): "IntervalRunner.run (the synthetic worker)",
    ("torchpbt/engine/checkpoints.py", "save"): "CheckpointDir.save (torch.save + file)",
}


def profile_summary(prof: Any, top: int = 25) -> dict:
    """Top functions by cumulative and own time, as fractions of the profiled wall time
    (the benchmark's own timer wrappers and listener are left out of the lists)."""
    import pstats

    st = pstats.Stats(prof)
    total = st.total_tt
    rows, keys = [], {}
    for (file, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():
        if os.path.basename(file).startswith("_scale"):
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

    def rnd(r: dict) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}

    return {"profiled_seconds": total, "key_functions_cumulative_fraction": keys,
            "top_cumulative": [rnd(r) for r in by_cum[:top]],
            "top_own": [rnd(r) for r in by_own[:top]]}


def _short(file: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return os.path.basename(file)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x (the growth exponent)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if y and y > 0]
    if len(pts) < 2:
        return math.nan
    mx = statistics.fmean(p[0] for p in pts)
    my = statistics.fmean(p[1] for p in pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den


def _by_store(rows: list[dict], store: str) -> list[dict]:
    return sorted((r for r in rows if r["store"] == store), key=lambda r: r["population"])


def _per_store(ax: Any, rows: list[dict], colors: dict[str, str],
               series: list[tuple[str, Callable[[dict], float], str, float]]) -> None:
    """One line per (store, series) against population."""
    for store, color in colors.items():
        rs = _by_store(rows, store)
        if not rs:
            continue
        ns = [r["population"] for r in rs]
        for label, value, style, alpha in series:
            ax.plot(ns, [value(r) for r in rs], style, color=color, alpha=alpha,
                    label=f"{store}: {label}")


def plot(path: Path, rows: list[dict], sizes: list[dict]) -> Path:
    """Events/s, memory and bytes committed per step against the population."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), dpi=110)
    colors = {"sqlite": "tab:blue", "postgresql": "tab:orange"}
    _per_store(axes[0], rows, colors, [
        ("steady state", lambda r: r["steady_events_per_s"], "o-", 1.0),
        ("controller only", lambda r: r["steady_controller_only_events_per_s"], "^:", 0.6),
        ("generation 1", lambda r: r["gen1_events_per_s"], "s--", 0.6)])
    ax = axes[0]
    ax.axhline(GOAL_EVENTS_PER_S, color="grey", ls=":", label="goal (10,000 members, SQLite)")
    ax.set(xscale="log", yscale="log", xlabel="population", ylabel="ready events / s",
           title="events handled per second (serial backend)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower left")
    _per_store(axes[1], rows, colors, [
        ("peak RSS", lambda r: r["rss_peak_mb"], "o-", 1.0),
        ("peak − after imports", lambda r: r["rss_peak_mb"] - r["rss_after_imports_mb"], "s--",
         0.6)])
    ax = axes[1]
    ax.set(xscale="log", yscale="log", xlabel="population", ylabel="MB",
           title="controller process memory")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax = axes[2]
    rs = _by_store(rows, "sqlite")
    ax.plot([r["population"] for r in rs], [r["json_bytes_per_step"] for r in rs], "o-",
            label="JSON per step, steady state (all columns)")
    full = sorted((p for p in sizes if p["history"] == 100), key=lambda p: p["population"])
    ax.plot([p["population"] for p in full], [p["state_bytes"] for p in full], "s--",
            label="controller state per step, 100-score histories")
    ax.set(xscale="log", yscale="log", xlabel="population", ylabel="bytes",
           title="bytes committed with every step")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def notes(summary: dict, rows: list[dict], cfg: dict) -> str:
    """What the figures mean, how they were taken, and whether the goal was met."""
    parts = [
        "events/s: committed ready events per second of wall time on the serial backend, "
        "which runs each interval in the controller's own process. "
        "{store}_events_per_s_N is the steady state (generations 2 to "
        f"{cfg['timed_generations']}: exploit ranks the population once every member has "
        "scored); {store}_gen1_events_per_s_N is generation 1; 'whole run' counts from the "
        "torchpbt.run call (preflight, creating N members) to the last timed event. "
        "{store}_controller_only_events_per_s_N takes the interval runner's time (seeding, "
        "the synthetic member, writing its checkpoint file) out: the rate a controller "
        "could handle with its workers in other processes. "
        "{store}_events_per_cpu_s_N divides the steady-state events by the CPU time of "
        "the process that ran them (controller and worker, not the PostgreSQL server): "
        "less sensitive to other load on the machine than wall time. "
        "Timings carry inline timers "
        "(one perf_counter pair per wrapped call).",
        "json_bytes_per_step_N: all JSON a steady-state step commits (interval, events, "
        "the global state, the touched members' states); "
        "state_bytes_per_step_history100_N: the global state and one member's state once "
        "histories hold 100 scores (the cap), built directly.",
        "PostgreSQL is a throwaway cluster (torchpbt.testing.postgres) with durability off "
        "(fsync, synchronous_commit, full_page_writes off): a durable server is slower. Its "
        "CPU is measured apart and not counted as foreign load.",
        f"Foreign CPU (other processes on this 2-core machine, PostgreSQL's server excluded) "
        f"was at most {summary.get('foreign_cpu_fraction_max', math.nan):.0%} of a core "
        "during a run (runs[].foreign_cpu_fraction); these events/s are absolute rates, not "
        "ratios, so foreign load lowers them.",
    ]
    if cfg.get("postgresql_skipped"):
        parts.insert(0, f"POSTGRESQL NOT MEASURED: {cfg['postgresql_skipped']}")
    for key, what in (("sqlite_events_per_s_10000", "whole serial events (the member's "
                       "interval and its checkpoint file included)"),
                      ("sqlite_controller_only_events_per_s_10000", "the controller's part "
                       "alone (the interval runner's time taken out)")):
        if key in summary:
            ok = summary[key] >= GOAL_EVENTS_PER_S
            parts.append(f"GOAL {'MET' if ok else 'MISSED'} on {what}: {summary[key]:.0f} "
                         f"events/s at 10,000 members on SQLite (goal {GOAL_EVENTS_PER_S:.0f}).")
    return " ".join(parts)
