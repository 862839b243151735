"""Task (a): a supervised task where a schedule matters, PBT vs random search vs a grid.

The task is examples/mnist1d_schedule.py: an MLP on MNIST-1D, SGD with momentum,
only ``lr`` tuned. Two parts, both with the same model, data and budget:

1. **The gap, without PBT.** Per seed, plain PyTorch loops: every lr of a fixed
   grid, and decaying schedules (cosine and step decay) from a few starting lrs.
   A task where no decaying lr beats every fixed lr cannot show PBT's schedules
   winning; this measures that first (best by validation, scored on test).
2. **At equal compute.** Per seed, three torchpbt runs of P members × S steps on
   the serial backend: PBT (Truncation(0.25) + Perturb()), random search (the
   same sampled initial population, exploit=None, explore=None) and the best of
   a fixed log-spaced lr grid of P values. Each run's member-steps are counted
   from its intervals and must equal P × S, or the benchmark stops. Score: test
   accuracy of the member with the best final validation accuracy.

Welch and paired t-tests over ≥ 10 seeds; runs go two at a time (one thread each).

    python benchmarks/supervised_schedule.py            # 10 seeds × 8 members × 3,000 steps
    python benchmarks/supervised_schedule.py --quick    # 2 seeds, small budget
"""

from __future__ import annotations

import math
import statistics
from concurrent.futures import ProcessPoolExecutor

import _common as C

C.use_examples()

NAME = "supervised_schedule"
METHODS = ("pbt", "random", "grid")


def lr_grid(n: int, low: float = 1e-3, high: float = 0.5) -> list[float]:
    return [low * (high / low) ** (i / (n - 1)) for i in range(n)]


def schedules(steps: int) -> dict[str, object]:
    """Plain-loop lr schedules for part 1: name -> lr(step)."""
    out: dict[str, object] = {}
    for lr in (0.03, 0.1, 0.2):
        out[f"cosine from {lr}"] = (lambda t, lr=lr: lr * 0.5 * (1 + math.cos(math.pi * t / steps)))
        out[f"step /10 at 50%, 75% from {lr}"] = (
            lambda t, lr=lr: lr * 0.1 ** ((t >= steps // 2) + (t >= 3 * steps // 4)))
    return out


def plain_run(args: tuple[str, float | None, int, int]) -> dict:
    """Part 1: one plain PyTorch training (no torchpbt) with a fixed lr or a schedule."""
    import torch
    from mnist1d_schedule import BATCH, MOMENTUM, mlp, splits

    name, fixed, seed, steps = args
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    data = splits()
    (x, y), model = data["train"], mlp()
    lr_of = (lambda t: fixed) if fixed is not None else schedules(steps)[name]
    opt = torch.optim.SGD(model.parameters(), lr=lr_of(0), momentum=MOMENTUM)
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_of(t)
        idx = torch.randint(len(y), (BATCH,))
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = {s: (model(data[s][0]).argmax(1) == data[s][1]).float().mean().item()
               for s in ("val", "test")}
    return {"seed": seed, "name": name, "fixed_lr": fixed, **acc}


def pbt_run(args: tuple[str, int, dict]) -> dict:
    """Part 2: one torchpbt run of ``method`` for ``seed``."""
    import torch
    from mnist1d_schedule import SPACE, Mnist1DMember, test_accuracy

    import torchpbt as pbt

    method, seed, cfg = args
    torch.set_num_threads(1)
    kw = C.method_kwargs(method, [{"lr": lr} for lr in lr_grid(cfg["population"])])
    with C.temp_run_dir(f"sched-{method}") as run_dir:
        result = pbt.run(Mnist1DMember, SPACE, population=cfg["population"], steps=cfg["steps"],
                         ready_every=cfg["ready_every"], seed=seed, backend="serial",
                         run_dir=run_dir, progress=False, **kw)
        test = test_accuracy(result)
        schedule = [(s.from_step, s.to_step, s.hparams["lr"]) for s in result.schedule()]
    curve = C.best_per_step(result.scores, result.mode)
    return {"seed": seed, "method": method, "best_val": result.best_score, "best_test": test,
            "best_hparams": result.best_hparams, "exploits": len(result.exploits),
            "member_steps": result.member_steps, "best_schedule": schedule,
            "failed_intervals": sum(1 for iv in result.intervals if iv["error"]),
            "steps": list(curve), "best_val_per_step": list(curve.values()),
            "initial_hparams": C.initial_hparams(result)}


def gap_part(cfg: dict, pool: ProcessPoolExecutor, bar) -> tuple[dict, list[dict]]:
    jobs = [(f"fixed {lr:.3g}", lr, seed, cfg["steps"]) for seed in range(cfg["seeds"])
            for lr in lr_grid(cfg["population"])]
    jobs += [(name, None, seed, cfg["steps"]) for seed in range(cfg["seeds"])
             for name in schedules(cfg["steps"])]
    task = bar.add_task("part 1: fixed lrs vs schedules, plain PyTorch", total=len(jobs))
    rows = []
    for row in pool.map(plain_run, jobs):
        rows.append(row)
        bar.advance(task)
    best_fixed, best_sched = [], []
    for seed in range(cfg["seeds"]):
        mine = [r for r in rows if r["seed"] == seed]
        pick = max((r for r in mine if r["fixed_lr"] is not None), key=lambda r: r["val"])
        best_fixed.append(pick["test"])
        best_sched.append(max((r for r in mine if r["fixed_lr"] is None),
                              key=lambda r: r["val"])["test"])
    names = sorted({r["name"] for r in rows})
    means = {n: statistics.fmean(r["test"] for r in rows if r["name"] == n) for n in names}
    from scipy import stats

    summary = {"gap_best_fixed_test_mean": statistics.fmean(best_fixed),
               "gap_best_schedule_test_mean": statistics.fmean(best_sched),
               "gap_schedule_minus_fixed": statistics.fmean(best_sched) - statistics.fmean(best_fixed),
               "gap_p_paired": float(stats.ttest_rel(best_sched, best_fixed).pvalue),
               "gap_best_fixed_lr_mean_test": max(v for n, v in means.items() if n.startswith("fixed")),
               "gap_best_schedule_mean_test": max(v for n, v in means.items()
                                                  if not n.startswith("fixed"))}
    return summary | {f"mean_test[{n}]": v for n, v in means.items()}, rows


def main(argv=None) -> None:
    def add(p):
        p.add_argument("--seeds", type=int, default=None, help="default 10 (quick: 2)")
        p.add_argument("--population", type=int, default=None, help="default 8 (quick: 4)")
        p.add_argument("--steps", type=int, default=None, help="default 3000 (quick: 300)")
        p.add_argument("--ready-every", type=int, default=None, help="default 100 (quick: 50)")
        p.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")

    args = C.parse_args(__doc__.splitlines()[0], argv, add)
    from scipy import stats

    q = args.quick
    cfg = {"seeds": args.seeds or (2 if q else 10), "population": args.population or (4 if q else 8),
           "steps": args.steps or (300 if q else 3000),
           "ready_every": args.ready_every or (50 if q else 100),
           "task": "examples/mnist1d_schedule.py (MLP 40-128-128-10, SGD momentum 0.9, batch 32)",
           "pbt": "Truncation(0.25) + Perturb()", "random": "exploit=None, explore=None",
           "backend": "serial", "score": "validation accuracy (500)", "test": "1,000 held out"}
    cfg["grid"] = [round(lr, 5) for lr in lr_grid(cfg["population"])]
    runs: list[dict] = []
    with C.progress() as bar, ProcessPoolExecutor(args.jobs) as pool:
        summary, gap_rows = gap_part(cfg, pool, bar)
        jobs = [(m, seed, cfg) for seed in range(cfg["seeds"]) for m in METHODS]
        task = bar.add_task("part 2: pbt / random / grid at equal member-steps", total=len(jobs))
        for r in pool.map(pbt_run, jobs):
            runs.append(r)
            bar.advance(task)
    expected = cfg["population"] * cfg["steps"]
    C.check_comparison(runs, expected)
    test = {m: [r["best_test"] for r in sorted(runs, key=lambda r: r["seed"]) if r["method"] == m]
            for m in METHODS}
    for m in METHODS:
        summary[f"{m}_test_mean"], summary[f"{m}_test_std"] = C.mean_std(test[m])
    for other in ("random", "grid"):
        summary[f"pbt_minus_{other}"] = summary["pbt_test_mean"] - summary[f"{other}_test_mean"]
        summary[f"p_vs_{other}"] = float(stats.ttest_ind(test["pbt"], test[other],
                                                         equal_var=False).pvalue)
        summary[f"p_vs_{other}_paired"] = float(stats.ttest_rel(test["pbt"], test[other]).pvalue)
    decisions = cfg["population"] * (cfg["steps"] // cfg["ready_every"] - 1)
    summary["pbt_exploit_rate"] = statistics.fmean(
        r["exploits"] / decisions for r in runs if r["method"] == "pbt")
    summary["member_steps_per_run"] = expected
    goals = {"gap_schedule_minus_fixed": C.goal(0.0, ">"), "pbt_minus_random": C.goal(0.0, ">"),
             "p_vs_random": C.goal(0.05, "<")}
    png = C.artifact_path(NAME, q, ".png")
    figure(png, runs, gap_rows, cfg)
    notes = (
        "Part 1 (gap_*): plain PyTorch, per seed the best fixed lr of the grid and the best "
        "decaying schedule, each picked by validation, scored on test; gap_p_paired pairs them "
        "by seed. Part 2: every run spent exactly population × steps member-steps (checked). "
        "PBT and random search start from the same sampled population (checked); the grid's "
        "population is the fixed lr grid. Goals are PBT above random search with Welch p < 0.05; "
        "the grid comparison is reported beside it.")
    path = C.write_result(NAME, q, config=cfg, summary=summary, goals=goals,
                          runs=runs + [{"part": "gap", **r} for r in gap_rows], notes=notes,
                          figures=[png])
    print(f"part 1: best schedule {summary['gap_best_schedule_test_mean']:.4f} vs best fixed "
          f"{summary['gap_best_fixed_test_mean']:.4f} (paired p {summary['gap_p_paired']:.3g})")
    for m in METHODS:
        print(f"{m:7s} test {summary[f'{m}_test_mean']:.4f} ± {summary[f'{m}_test_std']:.4f}")
    print(f"pbt - random {summary['pbt_minus_random']:+.4f} (Welch p {summary['p_vs_random']:.3g}, "
          f"paired {summary['p_vs_random_paired']:.3g}); pbt - grid {summary['pbt_minus_grid']:+.4f} "
          f"(Welch p {summary['p_vs_grid']:.3g})")
    print(f"wrote {path} and {png}")


def figure(path, runs: list[dict], gap_rows: list[dict], cfg: dict) -> None:
    """Left: best validation accuracy per step, per method. Right: PBT's discovered lr
    schedules (the best member's, per seed) over the fixed grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=120)
    for m in METHODS:
        rows = [r for r in runs if r["method"] == m]
        arr = np.asarray([r["best_val_per_step"] for r in rows], dtype=float)
        mean, std = arr.mean(0), arr.std(0)
        line, = ax.plot(rows[0]["steps"], mean, label=f"{m} (n={len(rows)})")
        ax.fill_between(rows[0]["steps"], mean - std, mean + std, color=line.get_color(),
                        alpha=0.15, lw=0)
    ax.set(xlabel="step", ylabel="best validation accuracy in the population",
           title=f"MNIST-1D MLP, {cfg['population']} members × {cfg['steps']} steps")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    for r in runs:
        if r["method"] == "pbt":
            xs = [p for a, b, _ in r["best_schedule"] for p in (a, b)]
            ys = [lr for _, _, lr in r["best_schedule"] for _ in (0, 1)]
            ax2.plot(xs, ys, alpha=0.6, lw=1.2)
    ax2.set(yscale="log", xlabel="step (age of the weights)", ylabel="lr",
            title="PBT: the best member's lr schedule, one line per seed")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
