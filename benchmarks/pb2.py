"""PBT (Perturb) vs PB2 (GP-bandit explore) with small populations, same seeds and compute.

For each workload, population (4 and 8) and seed, both methods start from the same
sampled population (the seed fixes it; checked) and differ only in explore:
``Perturb()`` or ``PB2()``. Both exploit with Truncation(0.25) in generational
(sync) mode on the serial backend: deterministic, and every member is ranked on
scores of the same step (in the serial backend, async PBT on a score that rises
every interval rarely exploits, since the member that just reported always holds the
freshest score). Recorded per run: the final best score and the best score in the
population at every ready step.

Workloads: ``toy`` (the PBT paper's toy quadratic, examples/toy_quadratic.py, h0/h1
sampled in [0, 1]^2). Any example member runs with ``--member MODULE:CLASS``
(its module's ``SPACE``), e.g. the CartPole example:

    python benchmarks/pb2.py                      # toy, populations 4 and 8, 10 seeds
    python benchmarks/pb2.py --quick
    python benchmarks/pb2.py --member cartpole:CartPoleMember --steps 120 --ready-every 10 \\
        --name pb2_cartpole
"""

from __future__ import annotations

import importlib
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import _common as C

C.use_examples()

METHODS = ("pbt", "pb2")
LABELS = {"pbt": "PBT (Perturb)", "pb2": "PB2"}


@dataclass(frozen=True)
class Workload:
    """One thing to tune: a member class, its space, and a budget."""

    name: str
    member: type
    space: dict[str, Any]
    steps: int
    ready_every: int
    mode: str = "max"
    optimum: float | None = None  # drawn as a line on the curves when known


def toy(quick: bool) -> Workload:
    from toy_quadratic import SPACE, Quadratic

    return Workload("toy", Quadratic, SPACE, steps=40 if quick else 100, ready_every=4,
                    optimum=1.2)


def from_example(ref: str, steps: int, ready_every: int, mode: str) -> Workload:
    """``MODULE:CLASS`` from examples/ (or anywhere importable), with the module's SPACE."""
    module_name, _, cls_name = ref.partition(":")
    module = importlib.import_module(module_name)
    return Workload(module_name, getattr(module, cls_name), module.SPACE, steps, ready_every,
                    mode)


def one_run(args: tuple[Workload, str, int, int]) -> dict:
    import torch

    import torchpbt as pbt

    work, method, population, seed = args
    torch.set_num_threads(1)  # two runs at a time, one thread each
    explore = pbt.Perturb() if method == "pbt" else pbt.PB2()
    with C.temp_run_dir(f"pb2-{work.name}-{method}") as run_dir:
        t0 = time.perf_counter()
        with C.ForeignCpu() as foreign:
            result = pbt.run(work.member, work.space, population=population, steps=work.steps,
                             ready_every=work.ready_every, exploit=pbt.Truncation(0.25),
                             explore=explore, sync=True, mode=work.mode, seed=seed,
                             backend="serial", run_dir=run_dir, progress=False)
        seconds = time.perf_counter() - t0
    curve = C.best_per_step(result.scores, result.mode)
    ops = [set(e["operations"].values()) for e in result.exploits]
    return {"workload": work.name, "method": method, "population": population, "seed": seed,
            "best": result.best_score, "best_hparams": result.best_hparams,
            "population_mean": statistics.fmean(m["score"] for m in result.members),
            "exploits": len(ops), "gp_picks": sum(o == {"pb2"} for o in ops),
            "member_steps": result.member_steps,
            "seconds": round(seconds, 2), "foreign_cpu_s": round(foreign.seconds, 2),
            "steps": list(curve), "best_per_step": list(curve.values()),
            "initial_hparams": C.initial_hparams(result)}


def summarize(work: Workload, population: int, runs: list[dict]) -> dict[str, float]:
    """Headline figures for one (workload, population): means, difference, p-values."""
    from scipy import stats

    by = {m: sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"])
          for m in METHODS}
    best = {m: [r["best"] for r in by[m]] for m in METHODS}
    sign = 1.0 if work.mode == "max" else -1.0
    key = f"{work.name}_pop{population}"
    out: dict[str, float] = {}
    for m in METHODS:
        out[f"{key}_{m}_mean"], out[f"{key}_{m}_std"] = C.mean_std(best[m])
    out[f"{key}_pb2_minus_pbt"] = sign * (out[f"{key}_pb2_mean"] - out[f"{key}_pbt_mean"])
    out[f"{key}_p_value"] = C.welch_p(best["pb2"], best["pbt"])
    diffs = [a - b for a, b in zip(best["pb2"], best["pbt"], strict=True)]
    out[f"{key}_p_value_paired"] = (float(stats.ttest_rel(best["pb2"], best["pbt"]).pvalue)
                                    if len(diffs) > 1 and statistics.pstdev(diffs) > 0
                                    else float("nan"))
    out[f"{key}_pb2_wins_frac"] = statistics.fmean(float(sign * d > 0) for d in diffs)
    # a best score that hits a ceiling (CartPole's 500) says little: the whole population
    pop = {m: [r["population_mean"] for r in by[m]] for m in METHODS}
    for m in METHODS:
        out[f"{key}_{m}_population_mean"] = statistics.fmean(pop[m])
    out[f"{key}_population_p_value"] = C.welch_p(pop["pb2"], pop["pbt"])
    # the mean over ready steps of the population's best: how fast, not only how far
    for m in METHODS:
        out[f"{key}_{m}_curve_mean"] = statistics.fmean(
            statistics.fmean(r["best_per_step"]) for r in by[m])
    return out


def main(argv=None) -> None:
    def add(p):
        p.add_argument("--seeds", type=int, default=None, help="default 10 (quick: 2)")
        p.add_argument("--populations", type=int, nargs="+", default=[4, 8])
        p.add_argument("--member", default=None,
                       help="MODULE:CLASS of another workload (its module's SPACE); "
                            "default the toy")
        p.add_argument("--steps", type=int, default=None, help="per member (with --member)")
        p.add_argument("--ready-every", type=int, default=None, help="(with --member)")
        p.add_argument("--mode", choices=("max", "min"), default="max", help="(with --member)")
        p.add_argument("--name", default="pb2", help="result file name (default pb2)")
        p.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")

    args = C.parse_args(__doc__.splitlines()[0], argv, add)
    q = args.quick
    if args.member:
        if not (args.steps and args.ready_every):
            raise SystemExit("--member needs --steps and --ready-every")
        work = from_example(args.member, args.steps, args.ready_every, args.mode)
    else:
        work = toy(q)
    seeds = args.seeds or (2 if q else 10)
    cfg = {"workload": work.name, "member": f"{work.member.__module__}.{work.member.__name__}",
           "space": {k: repr(v) for k, v in work.space.items()}, "steps": work.steps,
           "ready_every": work.ready_every, "mode": work.mode, "populations": args.populations,
           "seeds": seeds, "exploit": "Truncation(0.25), sync=True, serial backend",
           "pbt": "Perturb() (factors 0.8/1.2, resample p=0.25)",
           "pb2": "PB2() (min_points=4, max_points=100, fallback Perturb())"}

    runs: list[dict] = []
    summary: dict[str, float] = {}
    jobs = [(work, m, pop, seed) for pop in args.populations for seed in range(seeds)
            for m in METHODS]
    with C.progress() as bar, ProcessPoolExecutor(args.jobs) as pool:
        task = bar.add_task(f"pb2 vs pbt on {work.name}", total=len(jobs))
        for r in pool.map(one_run, jobs):
            runs.append(r)
            bar.advance(task)
    for pop in args.populations:
        these = [r for r in runs if r["population"] == pop]
        C.check_comparison(these, pop * work.steps, paired=METHODS)
        summary.update(summarize(work, pop, these))

    figures = []
    for pop in args.populations:
        these = [r for r in runs if r["population"] == pop]
        axis = these[0]["steps"]
        curves = {LABELS[m]: (axis, [r["best_per_step"] for r in these
                                     if r["method"] == m and r["steps"] == axis])
                  for m in METHODS}
        png = C.artifact_path(f"{args.name}_{work.name}_pop{pop}", q, ".png")
        C.plot_bands(png, curves, ylabel="best score in the population",
                     title=(f"{work.name}: {pop} members × {work.steps} steps, mean ± std "
                            f"over {seeds} seeds"),
                     hline=(work.optimum, "optimum") if work.optimum is not None else None)
        figures.append(png)
    goals = {f"{work.name}_pop{p}_pb2_minus_pbt": C.goal(0.0, ">") for p in args.populations}
    notes = (
        "Goal is ours, from the PB2 paper's claim (PB2 beats PBT with small populations): "
        "PB2's mean final best score above PBT's. Both methods start from the same sampled "
        "population per seed (checked), so p_value_paired is given next to Welch's. "
        "curve_mean = mean over ready steps of the population's best score (speed). "
        "population_mean = mean final score over all members (telling where the best "
        "score hits a ceiling, as CartPole's 500 does). "
        "gp_picks per run (in runs) counts exploits whose hparams the GP chose; the others "
        "came from PB2's Perturb fallback before it had min_points observations.")
    path = C.write_result(args.name, q, config=cfg, summary=summary, goals=goals, runs=runs,
                          notes=notes, figures=figures)
    for pop in args.populations:
        k = f"{work.name}_pop{pop}"
        print(f"pop {pop}: pbt {summary[f'{k}_pbt_mean']:.4f} ± {summary[f'{k}_pbt_std']:.4f}"
              f"   pb2 {summary[f'{k}_pb2_mean']:.4f} ± {summary[f'{k}_pb2_std']:.4f}   "
              f"diff {summary[f'{k}_pb2_minus_pbt']:+.4f}  p={summary[f'{k}_p_value']:.3g} "
              f"(paired {summary[f'{k}_p_value_paired']:.3g})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
