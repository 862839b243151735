"""Shared helpers for the benchmark scripts: one result format, one progress bar.

Every script takes ``--quick`` and writes ``benchmarks/results/NAME.json``
(``NAME.quick.json`` with ``--quick``, so a smoke test never overwrites a full
result) in the format described in DESIGN.md ("Benchmarks: one result format").
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import math
import multiprocessing
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EXAMPLES = ROOT / "examples"

OPS = {
    "<=": lambda v, t: v <= t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    ">": lambda v, t: v > t,
    "==": lambda v, t: v == t,
}


def use_examples() -> None:
    """Make ``examples/*.py`` importable (``import mnist``, ``import toy_quadratic``)."""
    path = str(EXAMPLES)
    if path not in sys.path:
        sys.path.insert(0, path)


def parse_args(description: str, argv: Sequence[str] | None = None,
               add: Any = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="small budget smoke test (< 60 s); writes NAME.quick.json")
    if add is not None:
        add(p)
    return p.parse_args(argv)


def goal(value: float, op: str) -> dict[str, Any]:
    if op not in OPS:
        raise ValueError(f"op {op!r}: use one of {sorted(OPS)}")
    return {"value": value, "op": op}


def goal_met(value: float | None, target: Mapping[str, Any] | None) -> bool | None:
    """True/False when a target exists and the value is a real number, else None."""
    if target is None:
        return None
    if value is None or not math.isfinite(value):
        return False
    return bool(OPS[target["op"]](value, target["value"]))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


CODE_DIRS = ("src", "examples", "benchmarks")


def dirty_files() -> list[str]:
    """Code files (src/, examples/, benchmarks/) that differ from HEAD or are untracked."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", *CODE_DIRS], cwd=ROOT,
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ["unknown"]
    files = [line[3:] for line in out.stdout.splitlines()]
    return [f for f in files if not f.startswith("benchmarks/results/")]


def code_hashes() -> dict[str, str]:
    """SHA-256 of every .py file the benchmarks may run, by path relative to the repo."""
    out = {}
    for d in CODE_DIRS:
        for path in sorted((ROOT / d).rglob("*.py")):
            out[str(path.relative_to(ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def code_state() -> dict[str, Any]:
    hashes = code_hashes()
    fingerprint = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()
    return {"git_commit": git_commit(), "dirty_files": dirty_files(), "fingerprint": fingerprint,
            "hashes": hashes}


def code_changes(start: Mapping[str, Any], end: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(files present at the start that changed or vanished, files added during the run).

    A file added during the run can only be imported by the run if a file present at
    the start changed to import it, so only the first list makes a result stale.
    """
    a, b = start.get("hashes", {}), end.get("hashes", {})
    changed = sorted(p for p in a if b.get(p) != a[p])  # by content: a commit alone is no change
    return changed, sorted(set(b) - set(a))


# Taken when a benchmark script starts (it imports this module first); not in the worker
# processes that re-import the script, so they start as fast as they would for a user.
START = code_state() if multiprocessing.parent_process() is None else {}


def machine() -> dict[str, Any]:
    import torch

    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gb = float("nan")
    return {"cores": os.cpu_count(), "memory_gb": round(memory_gb, 1), "torch": torch.__version__,
            "python": sys.version.split()[0]}


def command_line() -> str:
    """The exact command that started this process."""
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return shlex.join(argv)


def result_path(name: str, quick: bool) -> Path:
    return RESULTS / (f"{name}.quick.json" if quick else f"{name}.json")


def artifact_path(name: str, quick: bool, suffix: str) -> Path:
    """E.g. ``toy_figure.png`` (``toy_figure.quick.png`` for a quick run)."""
    return RESULTS / (f"{name}.quick{suffix}" if quick else f"{name}{suffix}")


def write_result(name: str, quick: bool, *, config: Mapping[str, Any],
                 summary: Mapping[str, float], goals: Mapping[str, Mapping[str, Any]],
                 runs: Sequence[Any], notes: str | None = None,
                 figures: Sequence[Path] = ()) -> Path:
    """Write the benchmark's JSON and return its path."""
    for key, value in summary.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"summary[{key!r}]={value!r}: every headline figure must be a number")
    unknown = sorted(set(goals) - set(summary))
    if unknown:
        raise KeyError(f"goals for figures not in the summary: {unknown}")
    end = code_state()
    changed, added = code_changes(START, end)
    if changed:
        warning = ("WARNING: code changed while this benchmark ran "
                   f"({', '.join(changed)}); rerun it.")
        notes = f"{warning} {notes}" if notes else warning
    doc: dict[str, Any] = {
        "benchmark": name,
        "command": command_line(),
        "git_commit": START["git_commit"],
        "git_dirty": bool(START["dirty_files"]),
        "code": {**{k: v for k, v in START.items() if k != "hashes"},
                 "git_commit_at_end": end["git_commit"],
                 "changed_during_run": changed, "added_during_run": added},
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": quick,
        "config": dict(config),
        "summary": {k: _finite_or_none(v) for k, v in summary.items()},
        "goal": {k: dict(v) for k, v in goals.items()},
        "met": {k: goal_met(summary[k], g) for k, g in goals.items()},
        "figures": [str(p.relative_to(ROOT)) for p in figures],
        "runs": list(runs),
    }
    if notes:
        doc["notes"] = notes
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = result_path(name, quick)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None  # strict JSON has no NaN


@contextlib.contextmanager
def temp_run_dir(prefix: str) -> Iterator[Path]:
    """A fresh run directory, deleted afterwards whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=f"torchpbt-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def progress():
    """A rich progress bar (description, bar, m/n, elapsed, remaining)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), transient=False)


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    xs = [float(x) for x in xs]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Welch's t-test p-value; NaN with fewer than 2 values a side or zero variance."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return math.nan
    return float(stats.ttest_ind(list(a), list(b), equal_var=False).pvalue)


def initial_hparams(result: Any) -> list[dict[str, Any]]:
    """Each member's starting hparams, in member order: what a paired comparison shares."""
    start = sorted((e["member_id"], e["new_hparams"]) for e in result.events
                   if e["kind"] == "start")
    return [h for _, h in start]


def check_paired(label: str, pair: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse a comparison whose methods did not start from the same population."""
    first, *others = (r["initial_hparams"] for r in pair.values())
    if any(o != first for o in others):
        raise RuntimeError(f"{label}: the methods started from different populations; the "
                           "comparison would not be paired")


def method_kwargs(method: str, grid: Sequence[Mapping[str, Any]],
                  exploit: Any = None) -> dict[str, Any]:
    """``pbt.run`` options of one compared method: PBT (``exploit``, by default
    Truncation(0.25), + Perturb()), random search (no exploit, no explore) or a fixed
    grid (``grid`` as the population)."""
    import torchpbt as pbt

    if method == "pbt":
        return {"exploit": exploit or pbt.Truncation(0.25), "explore": pbt.Perturb()}
    if method == "random":
        return {"exploit": None, "explore": None}
    if method == "grid":
        return {"exploit": None, "explore": None, "initial_hparams": [dict(h) for h in grid]}
    raise ValueError(f"unknown method {method!r}: use pbt, random or grid")


def check_comparison(runs: Sequence[Mapping[str, Any]], member_steps: int,
                     paired: Sequence[str] = ("pbt", "random")) -> None:
    """Refuse results that are not at equal compute (every run spent ``member_steps``) or
    whose ``paired`` methods started from different populations for some seed."""
    for r in runs:
        if r["member_steps"] != member_steps:
            raise RuntimeError(f"{r['method']} seed {r['seed']} spent {r['member_steps']} "
                               f"member-steps, not {member_steps}: not equal compute")
    for seed in sorted({r["seed"] for r in runs}):
        check_paired(f"seed {seed}", {r["method"]: r for r in runs
                                      if r["seed"] == seed and r["method"] in paired})


def compare(runs: Sequence[Mapping[str, Any]], key: str, tag: str,
            others: Sequence[str] = ("random", "grid")) -> dict[str, float]:
    """Per method the mean and std of ``runs[key]``; PBT minus each other method with
    Welch's p and the p paired by seed: ``{tag}_pbt_minus_{other}``, ``{tag}_p_vs_{other}``,
    ``{tag}_p_vs_{other}_paired``."""
    from scipy import stats

    by: dict[str, list[float]] = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        by.setdefault(r["method"], []).append(float(r[key]))
    out: dict[str, float] = {}
    for m, xs in by.items():
        out[f"{m}_{tag}_mean"], out[f"{m}_{tag}_std"] = mean_std(xs)
    for other in others:
        a, b = by["pbt"], by[other]
        out[f"{tag}_pbt_minus_{other}"] = statistics.fmean(a) - statistics.fmean(b)
        with warnings.catch_warnings():  # equal samples: scipy warns, the p is NaN or 1
            warnings.simplefilter("ignore", RuntimeWarning)
            out[f"{tag}_p_vs_{other}"] = welch_p(a, b)
            out[f"{tag}_p_vs_{other}_paired"] = float(stats.ttest_rel(a, b).pvalue)
    return out


def best_per_step(scores: Sequence[Mapping[str, Any]], mode: str = "max") -> dict[int, float]:
    """From ``Result.scores``: the best valid score over the population at each step."""
    pick = max if mode == "max" else min
    out: dict[int, float] = {}
    for s in scores:
        v = s["score"]
        if v is None or not math.isfinite(v):
            continue
        step = int(s["step"])
        out[step] = v if step not in out else pick(out[step], v)
    return dict(sorted(out.items()))


def plot_bands(path: Path, curves: Mapping[str, tuple[Sequence[int], Sequence[Sequence[float]]]],
               *, title: str, ylabel: str, xlabel: str = "step",
               hline: tuple[float, str] | None = None, ylim: tuple[float, float] | None = None) -> Path:
    """One line per label: the mean over seeds, with a ±1 std band. Agg backend, PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, (steps, per_seed) in curves.items():
        arr = np.asarray(per_seed, dtype=float)
        mean, std = np.nanmean(arr, axis=0), np.nanstd(arr, axis=0)
        line, = ax.plot(steps, mean, label=f"{label} (n={arr.shape[0]})", lw=1.8)
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)
    if hline is not None:
        ax.axhline(hline[0], color="grey", ls="--", lw=1, label=hline[1])
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# -- clean timings on a shared machine -------------------------------------------------------

def _system_busy_seconds() -> float:
    """CPU seconds all processes spent busy since boot (from /proc/stat; 0 elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _live_descendants_cpu_seconds() -> float:
    """CPU seconds of this process's live descendants (and of the children they waited for).

    Needed for servers that outlive one timing, e.g. Ray's raylet and its workers: their
    CPU is ours, not another user's. From /proc (0 elsewhere).
    """
    parent, ticks = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)  # fields[1] ppid; [11:15] utime stime cutime cstime
        parent[pid], ticks[pid] = int(fields[1]), sum(int(x) for x in fields[11:15])
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        total += ticks[pid]
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and all its descendants, live or finished and waited for."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
            + _live_descendants_cpu_seconds())


class ForeignCpu:
    """Measures CPU time other processes used while a block ran (timing contamination)."""

    def __enter__(self) -> ForeignCpu:
        self._busy, self._own = _system_busy_seconds(), _own_cpu_seconds()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        busy = _system_busy_seconds() - self._busy
        own = _own_cpu_seconds() - self._own
        self.seconds = max(0.0, busy - own)


def wait_for_quiet(max_wait: float = 300.0, threshold: float = 0.1, quiet_for: int = 3,
                   console: Any = None) -> float:
    """Wait until other processes use < ``threshold`` cores for ``quiet_for`` seconds.

    Returns the seconds waited (gives up after ``max_wait``: the run goes on, and
    the contamination is recorded by :class:`ForeignCpu`).
    """
    import time

    t0, calm, said = time.monotonic(), 0, False
    while calm < quiet_for and time.monotonic() - t0 < max_wait:
        with ForeignCpu() as fc:
            time.sleep(1.0)
        calm = calm + 1 if fc.seconds < threshold else 0
        if calm == 0 and not said and console is not None:
            console.print("[yellow]other processes are using the CPU; waiting for a quiet "
                          "machine so timings stay clean…[/yellow]")
            said = True
    return time.monotonic() - t0
