"""Controller scale: ready events per second and memory from 100 to 10,000 members.

A synthetic member (no torch training; ``_scale_child.py``) runs on the serial
backend, so what is timed is the controller: scheduler report, the step's commit
to the store (SQLite in the run directory, and PostgreSQL on a throwaway cluster
this script starts and stops), checkpoint bookkeeping, plus the interval
runner's constant per-interval cost (seeding, writing a ~1 KB checkpoint file),
which is measured and reported apart.

Every population runs ``steps=5, ready_every=1`` (5 ready events per member),
each configuration in a fresh process (so peak RSS is its own), after waiting
for a quiet CPU: generations 1 to 4 are timed (generation 1 alone: exploit
ranks only once every member has scored; 2 to 4: the steady state), then up to
``--profile-events`` events of generation 5 run under cProfile and the run stops
(the Ctrl-C path). Reported per run: events/s (whole run, generation 1, steady
state, and "controller only" without the interval runner's time), latency
percentiles per generation, where each event's time goes (inline timers), peak
RSS, JSON and file bytes written per step, PostgreSQL's WAL bytes; and, on the
scheduler alone, the steady-state report cost and the state's size once
histories are full.

    python benchmarks/scale.py            # 100, 1,000, 10,000 members; SQLite and PostgreSQL
    python benchmarks/scale.py --quick    # 100 and 1,000 members
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as C
from _scale_child import MARK, READY_EVERY, STEPS, report_cost, state_size
from _scale_report import GOAL_EVENTS_PER_S, notes, plot, slope

NAME = "scale"
TIMED_GENERATIONS = 4
CHILD = Path(__file__).resolve().with_name("_scale_child.py")


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


def _pg_wal_bytes(server: Any) -> float:
    with server._admin() as conn:
        return float(conn.execute("SELECT wal_bytes FROM pg_stat_wal").fetchone()[0])


def run_child(cfg: dict) -> dict:
    proc = subprocess.run([sys.executable, str(CHILD), json.dumps(cfg)], capture_output=True,
                          text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {cfg} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


def start_pg(console: Any) -> tuple[Any, str | None]:
    """A throwaway cluster (torchpbt.testing.postgres); (None, why) if it cannot start."""
    try:
        from torchpbt.testing.postgres import start_server

        return start_server(), None
    except Exception as exc:  # PgUnavailable, or psycopg missing
        why = f"{type(exc).__name__}: {exc}"
        console.print(f"[bold red]POSTGRESQL NOT MEASURED: cannot start a throwaway server: "
                      f"{why}[/bold red]")
        return None, why


def measure(n: int, store: str, server: Any, profile_events: int, max_wait: float,
            console: Any) -> dict:
    """One configuration in a child process, with the foreign and server CPU around it."""
    cfg: dict[str, Any] = {"store": store, "population": n,
                           "timed_generations": TIMED_GENERATIONS,
                           "profile_events": min(profile_events, n)}
    url = server.new_database() if store == "postgresql" else None
    cfg["storage"] = url
    pgdata = (server.owned_dir / "data") if url and server.owned_dir else None
    try:
        waited = C.wait_for_quiet(max_wait=max_wait, console=console)
        wal0 = _pg_wal_bytes(server) if url else 0.0
        pg0 = _pg_cpu_seconds(pgdata)
        t0 = time.perf_counter()
        with C.ForeignCpu() as foreign:
            row = run_child(cfg)
        wall = time.perf_counter() - t0
        pg_cpu = _pg_cpu_seconds(pgdata) - pg0
        if url:
            row["pg_wal_bytes_per_event"] = (_pg_wal_bytes(server) - wal0) / (
                row["events_timed"] + row.get("profile", {}).get("events", 0))
    finally:
        if url:
            server.drop_database(url)
    own_foreign = max(0.0, foreign.seconds - pg_cpu)
    row.update({"waited_for_quiet_seconds": waited, "child_wall_seconds": wall,
                "pg_server_cpu_seconds": pg_cpu, "foreign_cpu_seconds": foreign.seconds,
                "foreign_cpu_seconds_excluding_pg": own_foreign,
                "foreign_cpu_fraction": own_foreign / wall})
    console.print(
        f"{store:10s} N={n:>6}: {row['events_timed']} events; steady "
        f"{row['steady_events_per_s']:.0f}/s (controller only "
        f"{row['steady_controller_only_events_per_s']:.0f}/s; "
        f"{row['steady_events_per_cpu_s']:.0f} per CPU-second), gen 1 "
        f"{row['gen1_events_per_s']:.0f}/s, whole run {row['whole_run_events_per_s']:.0f}/s; "
        f"peak RSS {row['rss_peak_mb']:.0f} MB; {row['json_bytes_per_step']:,.0f} B JSON/step; "
        f"foreign CPU {row['foreign_cpu_fraction']:.1%} (PG server {pg_cpu:.1f}s) in {wall:.0f}s")
    return row


def summarize(rows: list[dict], sizes: list[dict], reports: list[dict],
              stores: list[str]) -> dict[str, float]:
    summary: dict[str, float] = {}
    for r in rows:
        s, n = r["store"], r["population"]
        summary[f"{s}_events_per_s_{n}"] = r["steady_events_per_s"]
        summary[f"{s}_controller_only_events_per_s_{n}"] = r["steady_controller_only_events_per_s"]
        summary[f"{s}_events_per_cpu_s_{n}"] = r["steady_events_per_cpu_s"]
        summary[f"{s}_gen1_events_per_s_{n}"] = r["gen1_events_per_s"]
        summary[f"{s}_whole_run_events_per_s_{n}"] = r["whole_run_events_per_s"]
        summary[f"{s}_peak_rss_mb_{n}"] = r["rss_peak_mb"]
        summary[f"{s}_rss_growth_mb_{n}"] = r["rss_peak_mb"] - r["rss_after_imports_mb"]
        if s == "sqlite":
            summary[f"json_bytes_per_step_{n}"] = r["json_bytes_per_step"]
            summary[f"sqlite_file_bytes_per_event_{n}"] = r["file_bytes_written_per_event"]
        else:
            summary[f"postgresql_wal_bytes_per_event_{n}"] = r["pg_wal_bytes_per_event"]
    for p in sizes:
        if p["history"] == 100:
            summary[f"state_bytes_per_step_history100_{p['population']}"] = float(p["state_bytes"])
    for r in reports:
        summary[f"scheduler_report_steady_ms_{r['population']}"] = r["report_ms_mean"]
    for s in stores:
        rs = sorted((r for r in rows if r["store"] == s), key=lambda r: r["population"])
        ns = [r["population"] for r in rs]
        summary[f"{s}_events_per_s_growth_exponent"] = slope(
            ns, [r["steady_events_per_s"] for r in rs])
        summary[f"{s}_rss_growth_exponent"] = slope(
            ns, [r["rss_peak_mb"] - r["rss_after_imports_mb"] for r in rs])
    summary["foreign_cpu_fraction_max"] = max(r["foreign_cpu_fraction"] for r in rows)
    return summary


def main(argv: list[str] | None = None) -> int:
    def add(p):
        p.add_argument("--sizes", type=int, nargs="+", default=None,
                       help="populations (default 100 1000 10000; quick: 100 1000)")
        p.add_argument("--profile-events", type=int, default=None,
                       help="events of generation 5 run under cProfile after the timed "
                            "window (default 2000; quick: 200)")
        p.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"],
                       choices=["sqlite", "postgresql"])
        p.add_argument("--max-wait", type=float, default=None,
                       help="seconds to wait for a quiet CPU before each run (default 600; "
                            "quick: 2)")

    args = C.parse_args(__doc__.splitlines()[0], argv, add)
    q = args.quick
    sizes = sorted(args.sizes or ([100, 1000] if q else [100, 1000, 10000]))
    profile_events = args.profile_events if args.profile_events is not None else (
        200 if q else 2000)
    max_wait = args.max_wait if args.max_wait is not None else (2.0 if q else 600.0)
    cfg: dict[str, Any] = {
        "sizes": sizes, "steps": STEPS, "ready_every": READY_EVERY,
        "timed_generations": TIMED_GENERATIONS, "profile_events": profile_events,
        "stores": args.stores, "backend": "serial", "exploit": "Truncation(0.2)",
        "explore": "Perturb()", "seed": 0,
        "member": "SyntheticMember: x += lr*(1-x) - decay*lr*x per step, score 1-(1-x)^2, "
                  "checkpoint {'x': float}",
    }
    t_start = time.perf_counter()
    rows: list[dict] = []
    server = None
    with C.progress() as bar:
        if "postgresql" in args.stores:
            server, why = start_pg(bar.console)
            if server is not None:
                cfg["postgresql_server"] = ("throwaway cluster (torchpbt.testing.postgres): "
                                            "fsync=off, synchronous_commit=off, "
                                            f"full_page_writes=off; started in "
                                            f"{server.start_seconds:.1f}s")
            else:
                cfg["postgresql_skipped"] = why
        stores = [s for s in args.stores if s != "postgresql" or server is not None]
        task = bar.add_task("scale runs", total=len(sizes) * len(stores))
        try:
            for n in sizes:
                for store in stores:
                    rows.append(measure(n, store, server, profile_events, max_wait,
                                        bar.console))
                    bar.advance(task)
        finally:
            if server is not None:
                server.stop()
        C.wait_for_quiet(max_wait=max_wait, console=bar.console)
        with C.ForeignCpu() as foreign:
            t0 = time.perf_counter()
            state_sizes = [state_size(n, h) for n in sizes for h in (STEPS, 100)]
            reports = [report_cost(n) for n in sizes]
        cfg["component_foreign_cpu_fraction"] = foreign.seconds / (time.perf_counter() - t0)
    cfg["total_seconds"] = time.perf_counter() - t_start

    summary = summarize(rows, state_sizes, reports, stores)
    # the goal is for events "handled by the controller": checked on the whole serial event
    # (the member's interval, its checkpoint file included) and on the controller's part
    goals = {key: C.goal(GOAL_EVENTS_PER_S, ">=") for key in (
        "sqlite_events_per_s_10000", "sqlite_controller_only_events_per_s_10000")
        if key in summary}
    fig = plot(C.artifact_path(NAME, q, ".png"), rows, state_sizes)
    path = C.write_result(NAME, q, config=cfg, summary=summary, goals=goals,
                          runs=[*rows, *({"state_size": p} for p in state_sizes),
                                *({"scheduler_report_steady": r} for r in reports)],
                          notes=notes(summary, rows, cfg), figures=[fig])
    print(f"wrote {path} and {fig} in {cfg['total_seconds']:.0f}s")
    for k, v in summary.items():
        print(f"  {k}: {v:.6g}")
    for r in rows:
        prof = r.get("profile")
        if not prof:
            continue
        print(f"profile of {prof['events']} events after the timed window, "
              f"N={r['population']} ({r['store']}); share of profiled time:")
        for label, frac in prof["key_functions_cumulative_fraction"].items():
            print(f"  {frac:6.1%}  {label}")
        for x in prof["top_own"][:8]:
            print(f"  {x['own_fraction']:6.1%}  own time: {x['function']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
