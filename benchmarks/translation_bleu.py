"""Task (d): PBT vs random search vs a grid on generated translation, scored by BLEU.

The PBT paper's third domain is machine translation. The task is
examples/translation.py: a small seq2seq Transformer learns a rule-based
"translation" of sentences from a toy grammar (dictionary, reordering,
agreement); members are scored by sacrebleu corpus BLEU of greedy translations
of 200 validation sentences, and the best member is scored on 1,000 test
sentences. PBT tunes lr, dropout and label smoothing.

Per seed, three runs of P members × S steps on the serial backend: PBT
(Truncation(0.25) + Perturb()), random search (the same sampled initial
population, checked; exploit=None, explore=None) and a fixed grid of P hparam
sets. Every run's member-steps are counted from its intervals and must equal
P × S, or the benchmark stops. Scores: test BLEU of the member with the best
final validation BLEU (primary), the mean over ready steps of the best
validation BLEU (AUC) and the population's mean final validation BLEU. Welch
and paired t-tests over ≥ 10 seeds; runs go two at a time (one thread each).

The budget is the example's default. At a third of it BLEU still climbs steeply
for every learning rate, so no schedule beats the best fixed one and the top
member never needs to copy; near the ceiling a member that lowers its lr gains.

    python benchmarks/translation_bleu.py            # 10 seeds × 8 members × 1,200 steps
    python benchmarks/translation_bleu.py --quick    # 2 seeds, small budget
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import _common as C

C.use_examples()

NAME = "translation_bleu"
METHODS = ("pbt", "random", "grid")


def grid(n: int) -> list[dict]:
    """n fixed hparam sets: lr × dropout, label smoothing at the common 0.1."""
    lrs = [5e-4, 1e-3, 2e-3, 4e-3, 8e-3][: max(1, (n + 1) // 2)]
    return [{"lr": lr, "dropout": d, "label_smoothing": 0.1} for lr in lrs for d in (0.0, 0.1)][:n]


def one_run(args: tuple[str, int, dict]) -> dict:
    import torch
    from translation import SPACE, TranslationMember, test_bleu

    import torchpbt as pbt

    method, seed, cfg = args
    torch.set_num_threads(1)
    with C.temp_run_dir(f"translation-{method}") as run_dir:
        t0 = time.perf_counter()
        result = pbt.run(TranslationMember, SPACE, population=cfg["population"],
                         steps=cfg["steps"], ready_every=cfg["ready_every"], seed=seed,
                         backend="serial", run_dir=run_dir, progress=False,
                         **C.method_kwargs(method, cfg["grid"]))
        seconds = time.perf_counter() - t0
        test = test_bleu(result)  # needs the checkpoint: before the directory goes
    curve = C.best_per_step(result.scores, result.mode)
    return {"seed": seed, "method": method, "best_val": result.best_score, "best_test": test,
            "auc": statistics.fmean(curve.values()),
            "population_mean": statistics.fmean(m["score"] for m in result.members),
            "best_hparams": result.best_hparams, "exploits": len(result.exploits),
            "member_steps": result.member_steps,
            "failed_intervals": sum(1 for iv in result.intervals if iv["error"]),
            "seconds": round(seconds, 2), "steps": list(curve),
            "best_val_per_step": list(curve.values()),
            "initial_hparams": C.initial_hparams(result)}


def main(argv=None) -> None:
    def add(p):
        p.add_argument("--seeds", type=int, default=None, help="default 10 (quick: 2)")
        p.add_argument("--population", type=int, default=None, help="default 8 (quick: 4)")
        p.add_argument("--steps", type=int, default=None, help="default 1200 (quick: 60)")
        p.add_argument("--ready-every", type=int, default=None, help="default 100 (quick: 20)")
        p.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")

    args = C.parse_args(__doc__.splitlines()[0], argv, add)
    q = args.quick
    cfg = {"seeds": args.seeds or (2 if q else 10), "population": args.population or (4 if q else 8),
           "steps": args.steps or (60 if q else 1200),
           "ready_every": args.ready_every or (20 if q else 100), "backend": "serial",
           "task": "examples/translation.py (Transformer d=64, ff 128, 1+1 layers, batch 32)",
           "pbt": "Truncation(0.25) + Perturb()", "random": "exploit=None, explore=None",
           "space": "examples/translation.py SPACE",
           "score": "sacrebleu corpus BLEU, greedy, 200 validation sentences",
           "test": "BLEU of the best member on 1,000 test sentences"}
    cfg["grid"] = grid(cfg["population"])
    member_steps = cfg["population"] * cfg["steps"]

    runs: list[dict] = []
    t0 = time.perf_counter()
    jobs = [(m, seed, cfg) for seed in range(cfg["seeds"]) for m in METHODS]
    with C.ForeignCpu() as foreign, C.progress() as bar, ProcessPoolExecutor(args.jobs) as pool:
        task = bar.add_task("translation: seeds × (pbt, random, grid)", total=len(jobs))
        for r in pool.map(one_run, jobs):
            runs.append(r)
            bar.advance(task)
    wall = time.perf_counter() - t0
    C.check_comparison(runs, member_steps)

    summary: dict[str, float] = {}
    for key, tag in (("best_test", "test"), ("auc", "auc"), ("population_mean", "population")):
        summary |= C.compare(runs, key, tag)
    decisions = cfg["population"] * (cfg["steps"] // cfg["ready_every"] - 1)
    summary["pbt_exploit_rate"] = statistics.fmean(
        r["exploits"] / decisions for r in runs if r["method"] == "pbt")
    summary["member_steps_per_run"] = member_steps
    summary["foreign_cpu_cores"] = foreign.seconds / wall
    goals = {"test_pbt_minus_random": C.goal(0.0, ">"), "test_p_vs_random": C.goal(0.05, "<")}

    by = {m: sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"])
          for m in METHODS}
    axis = by["pbt"][0]["steps"]
    curves = {label: (axis, [r["best_val_per_step"] for r in by[m] if r["steps"] == axis])
              for m, label in (("pbt", "PBT"), ("random", "random search"), ("grid", "grid"))}
    png = C.artifact_path(NAME, q, ".png")
    C.plot_bands(png, curves, ylabel="best validation BLEU in the population",
                 title=(f"Transformer on generated translation, {cfg['population']} members: "
                        f"mean ± std over {cfg['seeds']} seeds"), ylim=(0.0, 100.0))
    notes = (
        "Goals are ours: PBT's mean test BLEU (of the member with the best final validation "
        "BLEU) above random search's, with Welch's p < 0.05; paired p-values pair by seed. "
        "PBT and random search start from the same sampled population per seed (checked); the "
        "grid's population is config.grid. Every run spent exactly population × steps "
        "member-steps (checked). auc: mean over ready steps of the best validation BLEU in the "
        "population. population: mean final validation BLEU over all members. "
        "foreign_cpu_cores: CPU used by other processes during the run (slows it, changes no "
        "figure: serial runs are deterministic).")
    path = C.write_result(NAME, q, config=cfg, summary=summary, goals=goals, runs=runs,
                          notes=notes, figures=[png])
    for m in METHODS:
        print(f"{m:7s} test BLEU {summary[f'{m}_test_mean']:.2f} ± {summary[f'{m}_test_std']:.2f}, "
              f"AUC {summary[f'{m}_auc_mean']:.2f}, population {summary[f'{m}_population_mean']:.2f}")
    for other in ("random", "grid"):
        print(f"test pbt - {other} {summary[f'test_pbt_minus_{other}']:+.2f} (Welch p "
              f"{summary[f'test_p_vs_{other}']:.3g}, paired {summary[f'test_p_vs_{other}_paired']:.3g})")
    print(f"foreign CPU {summary['foreign_cpu_cores']:.2f} cores; wrote {path} and {png}")


if __name__ == "__main__":
    main()
