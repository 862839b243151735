"""What ``import torchpbt`` costs, and what a worker process pays before it trains.

Each variant is a fresh ``python -c CODE`` process, timed wall-clock; the variants are
interleaved and repeated, medians reported. Figures are ratios within the run:

  import torchpbt            / import torch            (goal ≤ 0.05: nothing heavy loads)
  a local worker's imports   / import torch            (goal ≤ 1.1: torch is the whole cost)

    python benchmarks/import_time.py            # 15 repeats
    python benchmarks/import_time.py --quick    # 3
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import _common as C

NAME = "import_time"
VARIANTS = {
    "python": "pass",
    "torch": "import torch",
    "torchpbt": "import torchpbt",
    # what a local/ray/queue worker imports before the user's module
    "worker": "import torchpbt.backends.local_pool, torchpbt.backends.worker",
    "run": "from torchpbt import run",  # the whole engine, store and console included
    "everything": "import torchpbt as p; [getattr(p, n) for n in p.__all__]",
}


def time_once(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    def add(p):
        p.add_argument("--repeats", type=int, default=None, help="default 15 (quick: 3)")

    args = C.parse_args(__doc__.splitlines()[0], argv, add)
    repeats = args.repeats or (3 if args.quick else 15)
    for code in VARIANTS.values():  # warm the file cache: the first start reads from disk
        time_once(code)
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    with C.progress() as bar:
        task = bar.add_task("import times", total=repeats * len(VARIANTS))
        for _ in range(repeats):
            for name, code in VARIANTS.items():
                times[name].append(time_once(code))
                bar.advance(task)
    med = {k: statistics.median(v) for k, v in times.items()}
    summary = {f"{k}_seconds": v for k, v in med.items()}
    summary["torchpbt_over_torch"] = med["torchpbt"] / med["torch"]
    summary["worker_over_torch"] = med["worker"] / med["torch"]
    summary["run_over_torch"] = med["run"] / med["torch"]
    goals = {"torchpbt_over_torch": C.goal(0.05, "<="), "worker_over_torch": C.goal(1.1, "<=")}
    notes = (f"Medians of {repeats} fresh processes per variant, interleaved: python start-up "
             f"{med['python']:.3f} s, import torch {med['torch']:.2f} s, import torchpbt "
             f"{med['torchpbt']:.3f} s, a worker's imports {med['worker']:.2f} s, "
             f"`from torchpbt import run` {med['run']:.2f} s, every public name "
             f"{med['everything']:.2f} s. Before the imports were made lazy, `import torchpbt` "
             "loaded 20 modules (torch, the store, scipy for PB2) in every process.")
    path = C.write_result(NAME, args.quick, config={"repeats": repeats, "variants": VARIANTS},
                          summary=summary, goals=goals, runs=[times], notes=notes)
    print(notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
