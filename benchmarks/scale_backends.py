"""Controller throughput with real worker processes: 10,000 synthetic members, SQLite.

benchmarks/scale.py times the controller on the serial backend, where every interval
runs inside the controller's process, one event per commit. Here the same synthetic
member (``_scale_child.SyntheticMember``) also runs on the local backend with 2 worker
processes, as a user at that scale would run it: outcomes arrive while the controller
commits, so one wait() can hand it several (one transaction, one statement per table).

    python benchmarks/scale_backends.py            # 10,000 members
    python benchmarks/scale_backends.py --quick    # 1,000 members

Recorded per backend: steady-state committed events per second (generations 2 to 4:
every member has scored, so exploit ranks the population), the controller process's CPU
milliseconds per event, and the mean number of outcomes per commit.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import _common as C
from _scale_child import SPACE, SyntheticMember
from _scale_report import GOAL_EVENTS_PER_S

STEPS = 4
BACKENDS = ("serial", "local")
WORKERS = 2


def one_run(backend: str, population: int) -> dict[str, Any]:
    import torch

    import torchpbt as pbt
    import torchpbt.engine.controller as controller

    torch.set_num_threads(1)
    marks: list[tuple[float, float, int]] = []  # (wall, controller CPU, outcomes) per commit
    original = controller.Controller._handle

    def handle(self, be, outcomes, live):
        original(self, be, outcomes, live)
        marks.append((time.perf_counter(), time.process_time(), len(outcomes)))

    controller.Controller._handle = handle
    try:
        with C.temp_run_dir(f"scale-{backend}") as run_dir, C.ForeignCpu() as foreign:
            t0 = time.perf_counter()
            pbt.run(SyntheticMember, SPACE, population=population, steps=STEPS, ready_every=1,
                    seed=0, backend=backend, workers=WORKERS, run_dir=run_dir / "run",
                    progress=False, summary=False)
            seconds = time.perf_counter() - t0
    finally:
        controller.Controller._handle = original
    counts = [n for _, _, n in marks]
    total = sum(counts)
    if total != population * STEPS:
        raise RuntimeError(f"{backend}: {total} events committed, expected {population * STEPS}")
    done, first = 0, 0  # the first commit that completes generation 1
    for i, n in enumerate(counts):
        done += n
        if done >= population:
            first = i
            break
    (w0, c0, _), (w1, c1, _) = marks[first], marks[-1]
    steady = sum(counts[first + 1:])
    return {"backend": backend, "population": population, "events": total,
            "steady_events": steady, "steady_events_per_s": steady / (w1 - w0),
            "controller_cpu_ms_per_event": 1000 * (c1 - c0) / steady,
            "mean_outcomes_per_commit": statistics.fmean(counts[first + 1:]),
            "run_seconds": seconds, "foreign_cpu_fraction": foreign.seconds / seconds}


def main(argv=None) -> int:
    args = C.parse_args(__doc__.splitlines()[0], argv)
    population = 1000 if args.quick else 10000
    rows = []
    with C.progress() as bar:
        task = bar.add_task(f"{population} members", total=len(BACKENDS))
        for backend in BACKENDS:
            C.wait_for_quiet(max_wait=60, console=bar.console)
            rows.append(one_run(backend, population))
            bar.advance(task)
    summary: dict[str, float] = {}
    for r in rows:
        for k in ("steady_events_per_s", "controller_cpu_ms_per_event",
                  "mean_outcomes_per_commit"):
            summary[f"{r['backend']}_{k}_{population}"] = r[k]
    summary["foreign_cpu_fraction_max"] = max(r["foreign_cpu_fraction"] for r in rows)
    key = f"local_steady_events_per_s_{population}"
    goals = {key: C.goal(GOAL_EVENTS_PER_S, ">=")} if population == 10000 else {}
    notes = (
        "Events/s are absolute rates on this 2-core machine (not ratios): the controller and "
        f"the {WORKERS} local workers share the 2 cores, and foreign load lowers them "
        "(foreign_cpu_fraction_max, in cores). controller_cpu_ms_per_event is the "
        "controller process's CPU only (on the serial backend it includes the member's "
        "interval and checkpoint write). The goal (issue 8's, for events handled by the "
        "controller at 10,000 members on SQLite) is checked on the local backend here; "
        "benchmarks/scale.py checks it on the serial backend.")
    path = C.write_result("scale_backends", args.quick, config={
        "population": population, "steps": STEPS, "ready_every": 1, "workers": WORKERS,
        "store": "sqlite", "member": "benchmarks/_scale_child.py SyntheticMember",
        "exploit": "Truncation() default", "explore": "Perturb() default"},
        summary=summary, goals=goals, runs=rows, notes=notes)
    for r in rows:
        print(f"{r['backend']}: {r['steady_events_per_s']:.0f} events/s, controller "
              f"{r['controller_cpu_ms_per_event']:.2f} ms CPU/event, "
              f"{r['mean_outcomes_per_commit']:.1f} outcomes per commit")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
