"""Plain PBT vs PBT + knowledge sharing on MNIST-family data, same seeds and compute.

For every dataset and seed both methods run examples/knowledge_sharing.py's
Classifier (MLP 784/40/64 → 128 → 10, SGD) with the same search space, the
same population, the same total steps and Truncation(0.25) + Perturb(); the
seed fixes the sampled initial population (checked to be identical). The only
difference is ``knowledge_sharing=KnowledgeSharing(alpha=0.5, temperature=2,
top_k=2)`` (the example's defaults). Recorded per run: the best validation
accuracy in the population at each ready step ("accuracy over steps"), the
first ready step at which it reaches a fixed per-dataset threshold, and the
test accuracy of the best member's final weights. The fourth "dataset",
mnist1d_schedule, is task (a) of benchmarks/supervised_schedule.py: its own
member (examples/mnist1d_schedule.py, SGD with momentum, only lr tuned) and its
longer budget (3,000 steps), where a schedule matters.

Then a bounded sweep of variants (top_k, alpha, alpha tuned by PBT,
temperature), each changing one option of the main configuration, on one
dataset with the first seeds of the main comparison; each is compared with
the plain-PBT runs of the same seeds.

Runs use the serial backend (deterministic; members advance least-advanced
first, so every run spends exactly population × steps member-steps, checked),
two runs at a time with one thread each.

    python benchmarks/knowledge_sharing.py           # 10 seeds × 4 datasets + 7 variants × 5 seeds
    python benchmarks/knowledge_sharing.py --quick   # 1 seed, tiny budget (< 60 s)
"""

from __future__ import annotations

import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import _common as C

C.use_examples()

NAME = "knowledge_sharing"
METHODS = ("plain", "ks")
LABELS = {"plain": "plain PBT", "ks": "PBT + knowledge sharing"}
# validation accuracy to reach; chosen from plain PBT's curves (a value it reaches in most seeds)
THRESHOLDS = {"mnist": 0.90, "mnist1d": 0.55, "digits": 0.95, "mnist1d_schedule": 0.62}
# task (a) of supervised_schedule: its own member (examples/mnist1d_schedule.py, lr only) and
# its own, longer budget; the other datasets use examples/knowledge_sharing.py's Classifier
TASK_A, TASK_A_STEPS = "mnist1d_schedule", 3000
# stricter thresholds too, for a sensitivity check of steps-to-threshold (not headline figures)
THRESHOLD_GRID = {"mnist": (0.90, 0.91, 0.92, 0.93), "mnist1d": (0.55, 0.56, 0.57, 0.58),
                  "digits": (0.95, 0.96, 0.97, 0.98),
                  "mnist1d_schedule": (0.62, 0.64, 0.66, 0.68)}
MAIN_KS = {"alpha": 0.5, "temperature": 2.0, "top_k": 2}
# each variant changes one option of MAIN_KS; "tune_alpha" lets PBT tune alpha in [0, 1]
VARIANTS = {
    "topk1": ({"top_k": 1}, False),
    "topk4": ({"top_k": 4}, False),
    "alpha03": ({"alpha": 0.3}, False),
    "alpha07": ({"alpha": 0.7}, False),
    "alphatuned": ({"alpha": "alpha"}, True),
    "temp1": ({"temperature": 1.0}, False),
    "temp4": ({"temperature": 4.0}, False),
}


def one_run(dataset: str, method: str, seed: int, cfg: dict, sharing_opts: dict | None = None,
            tune_alpha: bool = False) -> dict:
    import knowledge_sharing as ks

    import torchpbt as pbt

    sharing = None if sharing_opts is None else pbt.KnowledgeSharing(**sharing_opts)
    steps = cfg["steps_of"][dataset]
    common = {"population": cfg["population"], "steps": steps, "ready_every": cfg["ready_every"],
              "seed": seed, "backend": cfg["backend"],
              "progress": False, "summary": False}
    with C.temp_run_dir(f"ks-{dataset}-{method}") as run_dir:
        t0 = time.perf_counter()
        if dataset == TASK_A:
            import mnist1d_schedule as task_a

            result = pbt.run(task_a.Mnist1DMember, task_a.SPACE, knowledge_sharing=sharing,
                             exploit=pbt.Truncation(0.25), explore=pbt.Perturb(),
                             run_dir=run_dir, **common)
            test = task_a.test_accuracy(result)  # before the directory goes
        else:
            result = ks.run(dataset, sharing, tune_alpha=tune_alpha, run_dir=run_dir, **common)
            test = ks.test_accuracy(result, ks.CLASSIFIERS[dataset])
        seconds = time.perf_counter() - t0
    curve = C.best_per_step(result.scores, result.mode)
    axis = list(range(cfg["ready_every"], steps + 1, cfg["ready_every"]))
    if axis[-1] != steps:
        axis.append(steps)
    values = [curve.get(s, math.nan) for s in axis]
    thr = cfg["thresholds"][dataset]
    first, reached = steps_to({"steps": axis, "best_val_per_step": values}, thr, steps)
    extras = [iv.get("extra") or {} for iv in result.intervals]
    versions = [e for e in result.events if e["kind"] == "knowledge"]
    return {"dataset": dataset, "method": method, "seed": seed,
            "sharing": sharing.to_dict() if sharing else None, "tune_alpha": tune_alpha,
            "best_val": result.best_score, "best_test": test,
            "best_member": result.best_member_id, "best_hparams": result.best_hparams,
            "threshold": thr, "steps_to_threshold": first, "reached_threshold": reached,
            "exploits": len(result.exploits),
            "failed_intervals": sum(1 for iv in result.intervals if iv["error"]),
            "writer_intervals": sum(1 for x in extras if x.get("writer")),
            "table_versions": len(versions),
            "table_entries": versions[-1]["detail"]["entries"] if versions else 0,
            "trained_steps": result.member_steps,
            "seconds": round(seconds, 2), "steps": axis, "best_val_per_step": values,
            "initial_hparams": C.initial_hparams(result)}


def _job(args: tuple) -> dict:
    import torch

    torch.set_num_threads(1)  # two runs at a time, one thread each
    return one_run(*args)


def steps_to(run: dict, threshold: float, budget: int) -> tuple[int, bool]:
    """First ready step at which the run's curve reaches ``threshold`` (else the budget)."""
    for step, v in zip(run["steps"], run["best_val_per_step"], strict=True):
        if math.isfinite(v) and v >= threshold:
            return step, True
    return budget, False


def paired_p(a: list[float], b: list[float]) -> float:
    """Paired t-test p-value (same seed = same initial population); NaN if undefined."""
    from scipy import stats

    if len(a) < 2 or len(a) != len(b) or all(x == y for x, y in zip(a, b, strict=True)):
        return math.nan
    return float(stats.ttest_rel(a, b).pvalue)


def add_section(path, key: str, value: dict) -> None:
    """Add a top-level section to the written result (NaN becomes null), atomically."""
    import json
    import os

    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return None if isinstance(v, float) and not math.isfinite(v) else v

    doc = json.loads(path.read_text())
    doc[key] = clean(value)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def plot_panels(path, datasets, by, cfg) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.3), dpi=120,
                             squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        for m in METHODS:
            rows = by[ds][m]
            arr = np.asarray([r["best_val_per_step"] for r in rows], dtype=float)
            mean, std = np.nanmean(arr, axis=0), np.nanstd(arr, axis=0)
            steps = rows[0]["steps"]
            line, = ax.plot(steps, mean, lw=1.8, label=f"{LABELS[m]} (n={len(rows)})")
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15,
                            lw=0)
        thr = cfg["thresholds"][ds]
        ax.axhline(thr, color="grey", ls="--", lw=1, label=f"threshold {thr}")
        lo = np.nanmin([np.nanmean([r["best_val_per_step"] for r in by[ds][m]], axis=0)
                        for m in METHODS])
        ax.set_ylim(max(0.0, min(lo, thr) - 0.05), None)
        ax.set_title(ds)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0][0].set_ylabel("best validation accuracy in the population")
    fig.suptitle(f"Plain PBT vs knowledge sharing: {cfg['population']} members × "
                 f"{'/'.join(map(str, sorted(set(cfg['steps_of'].values()))))} steps, "
                 f"mean ± std over {cfg['seeds']} seeds", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> None:
    def add(p):
        p.add_argument("--seeds", type=int, default=None, help="default 10 (quick: 1)")
        p.add_argument("--datasets", default=None,
                       help="comma-separated; default mnist,mnist1d,digits,mnist1d_schedule "
                            "(quick: mnist,mnist1d)")
        p.add_argument("--population", type=int, default=None, help="default 8 (quick: 4)")
        p.add_argument("--steps", type=int, default=None, help="default 1500 (quick: 200)")
        p.add_argument("--ready-every", type=int, default=None, help="default 100 (quick: 50)")
        p.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
        p.add_argument("--variant-dataset", default=None, help="default mnist")
        p.add_argument("--variant-seeds", type=int, default=None,
                       help="first N seeds of the main comparison; default 5 (quick: 1)")
        p.add_argument("--no-variants", action="store_true")

    args = C.parse_args(__doc__.splitlines()[0], argv, add)
    q = args.quick
    datasets = (args.datasets or ("mnist,mnist1d" if q else
                                  f"mnist,mnist1d,digits,{TASK_A}")).split(",")
    unknown = sorted(set(datasets) - set(THRESHOLDS))
    if unknown:
        raise SystemExit(f"--datasets: unknown {unknown}; choose from {sorted(THRESHOLDS)}")
    cfg = {"seeds": args.seeds or (1 if q else 10), "datasets": datasets,
           "population": args.population or (4 if q else 8),
           "steps": args.steps or (200 if q else 1500),
           "ready_every": args.ready_every or (50 if q else 100),
           "backend": "serial",
           "thresholds": {d: THRESHOLDS[d] for d in datasets},
           TASK_A: "examples/mnist1d_schedule.py (MLP, SGD momentum, lr only), "
                   f"{TASK_A_STEPS} steps, its own threshold",
           "exploit_explore": "Truncation(0.25) + Perturb() (examples/knowledge_sharing.run)",
           "space": "examples/knowledge_sharing.py SPACE (lr, momentum, batch_size)",
           "member": "examples/knowledge_sharing.py Classifier: MLP, one hidden layer of 128",
           "ks": dict(MAIN_KS), "score": "validation accuracy",
           "test": "test accuracy of the member with the best final validation score"}
    vds = args.variant_dataset or datasets[0]
    variants = {} if args.no_variants else (
        {"topk1": VARIANTS["topk1"]} if q else dict(VARIANTS))
    vseeds = min(args.variant_seeds or (1 if q else 5), cfg["seeds"])
    if variants:
        if vds not in datasets:
            raise SystemExit(f"--variant-dataset {vds} is not among --datasets {datasets}")
        cfg["variants"] = {"dataset": vds, "seeds": vseeds,
                           "options": {k: {**MAIN_KS, **o, "tune_alpha": t}
                                       for k, (o, t) in variants.items()}}

    runs: list[dict] = []
    by: dict[str, dict[str, list[dict]]] = {d: {m: [] for m in METHODS} for d in datasets}
    cfg["steps_of"] = {d: TASK_A_STEPS if d == TASK_A and not args.steps else cfg["steps"]
                       for d in datasets}

    def check(r: dict) -> None:
        expected = cfg["population"] * cfg["steps_of"][r["dataset"]]
        if r["trained_steps"] != expected:
            raise RuntimeError(f"{r['dataset']} {r['method']} seed {r['seed']} trained "
                               f"{r['trained_steps']} steps, expected {expected}")

    jobs = [(ds, m, seed, cfg, None if m == "plain" else MAIN_KS, False)
            for ds in datasets for seed in range(cfg["seeds"]) for m in METHODS]
    jobs += [(vds, f"ks_{name}", seed, cfg, {**MAIN_KS, **opts}, tune)
             for name, (opts, tune) in variants.items() for seed in range(vseeds)]
    with C.progress() as bar, ProcessPoolExecutor(args.jobs) as pool:
        task = bar.add_task("knowledge sharing: datasets × seeds × (plain, ks) + variants",
                            total=len(jobs))
        for r in pool.map(_job, jobs):
            check(r)
            runs.append(r)
            bar.advance(task)
    var_runs: dict[str, list[dict]] = {name: [] for name in variants}
    for r in runs:
        if r["method"] in METHODS:
            by[r["dataset"]][r["method"]].append(r)
        else:
            var_runs[r["method"].removeprefix("ks_")].append(r)
    for ds in datasets:
        for seed in range(cfg["seeds"]):
            pair = {m: by[ds][m][seed] for m in METHODS}
            C.check_paired(f"{ds} seed {seed}", pair)
            print(f"{ds} seed {seed}: test plain {pair['plain']['best_test']:.4f} "
                  f"ks {pair['ks']['best_test']:.4f}; steps to {THRESHOLDS[ds]} plain "
                  f"{pair['plain']['steps_to_threshold']} ks {pair['ks']['steps_to_threshold']}")

    summary: dict[str, float] = {}
    goals: dict[str, dict] = {}
    for ds in datasets:
        test = {m: [r["best_test"] for r in by[ds][m]] for m in METHODS}
        stt = {m: [float(r["steps_to_threshold"]) for r in by[ds][m]] for m in METHODS}
        auc = {m: [statistics.fmean(v for v in r["best_val_per_step"] if math.isfinite(v))
                   for r in by[ds][m]] for m in METHODS}
        for m in METHODS:
            summary[f"{ds}_{m}_test_mean"], summary[f"{ds}_{m}_test_std"] = C.mean_std(test[m])
        summary[f"{ds}_test_diff"] = summary[f"{ds}_ks_test_mean"] - summary[f"{ds}_plain_test_mean"]
        summary[f"{ds}_test_p"] = C.welch_p(test["ks"], test["plain"])
        summary[f"{ds}_test_p_paired"] = paired_p(test["ks"], test["plain"])
        summary[f"{ds}_ks_wins_frac"] = statistics.fmean(
            float(k > p) for k, p in zip(test["ks"], test["plain"], strict=True))
        summary[f"{ds}_threshold"] = THRESHOLDS[ds]
        for m in METHODS:
            summary[f"{ds}_{m}_steps_to_thr"], _ = C.mean_std(stt[m])
            summary[f"{ds}_{m}_reached_frac"] = statistics.fmean(
                float(r["reached_threshold"]) for r in by[ds][m])
        summary[f"{ds}_steps_saved"] = (summary[f"{ds}_plain_steps_to_thr"]
                                        - summary[f"{ds}_ks_steps_to_thr"])
        summary[f"{ds}_steps_p"] = C.welch_p(stt["ks"], stt["plain"])
        summary[f"{ds}_steps_p_paired"] = paired_p(stt["ks"], stt["plain"])
        for m in METHODS:
            summary[f"{ds}_{m}_curve_mean"], _ = C.mean_std(auc[m])
        summary[f"{ds}_curve_diff"] = summary[f"{ds}_ks_curve_mean"] - summary[f"{ds}_plain_curve_mean"]
        summary[f"{ds}_curve_p"] = C.welch_p(auc["ks"], auc["plain"])
        goals[f"{ds}_test_diff"] = C.goal(0.0, ">")
        goals[f"{ds}_test_p"] = C.goal(0.05, "<")
        goals[f"{ds}_steps_saved"] = C.goal(0.0, ">")
        goals[f"{ds}_steps_p"] = C.goal(0.05, "<")

    sensitivity: dict[str, dict] = {}
    for ds in datasets:
        sensitivity[ds] = {}
        for t in THRESHOLD_GRID.get(ds, (THRESHOLDS[ds],)):
            got = {m: [steps_to(r, t, cfg["steps_of"][ds]) for r in by[ds][m]] for m in METHODS}
            row: dict = {}
            for m in METHODS:
                row[f"{m}_steps_mean"] = C.mean_std([float(x) for x, _ in got[m]])[0]
                row[f"{m}_reached"] = sum(ok for _, ok in got[m])
                row[f"{m}_at_first_ready_step"] = sum(x == cfg["ready_every"] for x, _ in got[m])
            row["steps_p"] = C.welch_p([float(x) for x, _ in got["ks"]],
                                     [float(x) for x, _ in got["plain"]])
            sensitivity[ds][str(t)] = row

    variant_doc: dict[str, dict] = {}
    if variants:
        base = [r["best_test"] for r in by[vds]["plain"][:vseeds]]
        base_mean, base_std = C.mean_std(base)
        variant_doc["plain"] = {"test_mean": base_mean, "test_std": base_std, "n": len(base)}
        summary[f"{vds}_var_plain_test_mean"] = base_mean
        mainks = [r["best_test"] for r in by[vds]["ks"][:vseeds]]
        km, ksd = C.mean_std(mainks)
        variant_doc["main_ks"] = {**MAIN_KS, "test_mean": km, "test_std": ksd, "n": len(mainks),
                                  "test_diff": km - base_mean, "test_p": C.welch_p(mainks, base)}
        summary[f"{vds}_var_main_test_mean"] = km
        summary[f"{vds}_var_main_test_p"] = variant_doc["main_ks"]["test_p"]
        for name, (opts, tune) in variants.items():
            tests = [r["best_test"] for r in var_runs[name]]
            stt = [float(r["steps_to_threshold"]) for r in var_runs[name]]
            mean, std = C.mean_std(tests)
            p = C.welch_p(tests, base)
            variant_doc[name] = {**MAIN_KS, **opts, "tune_alpha": tune, "test_mean": mean,
                                 "test_std": std, "n": len(tests), "test_diff": mean - base_mean,
                                 "test_p": p, "steps_to_thr_mean": C.mean_std(stt)[0],
                                 "steps_to_thr_p": C.welch_p(
                                     stt, [float(r["steps_to_threshold"])
                                           for r in by[vds]["plain"][:vseeds]])}
            summary[f"{vds}_var_{name}_test_mean"] = mean
            summary[f"{vds}_var_{name}_test_std"] = std
            summary[f"{vds}_var_{name}_test_diff"] = mean - base_mean
            summary[f"{vds}_var_{name}_test_p"] = p

    png = C.artifact_path(NAME, q, ".png")
    plot_panels(png, datasets, by, cfg)
    parts = []
    for ds in datasets:
        parts.append(
            f"{ds}: test plain {summary[f'{ds}_plain_test_mean']:.4f} ± "
            f"{summary[f'{ds}_plain_test_std']:.4f} vs ks {summary[f'{ds}_ks_test_mean']:.4f} ± "
            f"{summary[f'{ds}_ks_test_std']:.4f} (Welch p {summary[f'{ds}_test_p']:.3g}); steps "
            f"to val {THRESHOLDS[ds]}: plain {summary[f'{ds}_plain_steps_to_thr']:.0f} vs ks "
            f"{summary[f'{ds}_ks_steps_to_thr']:.0f} (p {summary[f'{ds}_steps_p']:.3g})")
    notes = (
        "Claim tested (DESIGN.md, Oehmcke & Kramer 2018): knowledge sharing gives faster "
        "convergence and higher final accuracy than plain PBT at equal compute. Goals are "
        "ours: per dataset, KS minus plain mean test accuracy > 0 (DS_test_diff) and steps "
        "saved to the validation threshold (plain minus KS, DS_steps_saved) > 0, each with "
        "Welch's t-test p < 0.05. Both methods start from the same sampled population per seed "
        "(checked) and train population × steps steps (checked). 'Accuracy over steps' is the "
        "best validation accuracy in the population at each ready step (test accuracy is not "
        "stored per step); DS_*_curve_mean is its mean over the ready steps (an area under the "
        "curve, a second convergence measure). Steps to threshold = the first ready step at "
        "which that curve reaches DS_threshold; a run that never reaches it counts as the full "
        f"budget (config.steps_of), see DS_*_reached_frac. A threshold that a run reaches at "
        "the first ready step cannot show a speed-up, so the section threshold_sensitivity "
        "repeats the steps-to-threshold comparison for stricter thresholds (same runs; not "
        "headline figures). *_p_paired are paired t-tests over seeds (extra, no goal). Final test accuracy is that of "
        "the member with the best final validation score. Variants change one option of the "
        f"main KS configuration {MAIN_KS} and are compared with plain PBT on the same "
        f"{vseeds} seeds of {vds}; DS_var_plain_test_mean is that baseline. The variant "
        "p-values are uncorrected for multiple comparisons and carry no goal. "
        + " | ".join(parts))
    path = C.write_result(NAME, q, config=cfg, summary=summary, goals=goals, runs=runs,
                          notes=notes, figures=[png])
    add_section(path, "threshold_sensitivity", sensitivity)
    if variant_doc:
        add_section(path, "variants", variant_doc)
    for line in parts:
        print(line)
    for name, v in variant_doc.items():
        print(f"variant {name:10s} test {v['test_mean']:.4f} ± {v['test_std']:.4f}"
              + (f"  diff {v['test_diff']:+.4f} p {v['test_p']}" if "test_p" in v else ""))
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
