"""The PBT paper's toy problem (Jaderberg et al. 2017, figure 2), four variants.

Runs ``examples/toy_quadratic.py`` (two members, ready every 4 steps, 200
steps) as PBT, exploit only, explore only and grid search over many seeds and
records the best true Q per run. DESIGN.md expects grid far below the others
and PBT highest (its simulation: grid 0.39, explore 1.13, exploit 1.17, PBT 1.18).

    python benchmarks/toy_figure.py            # 50 seeds → results/toy_figure.json + .png
    python benchmarks/toy_figure.py --quick    # 5 seeds  → results/toy_figure.quick.json
"""

from __future__ import annotations

import _common as C

C.use_examples()

NAME = "toy_figure"
VARIANT_ORDER = ("pbt", "exploit", "explore", "grid")
DESIGN_MEANS = {"grid": 0.39, "explore": 1.13, "exploit": 1.17, "pbt": 1.18}


def main(argv=None) -> None:
    def add(p):
        p.add_argument("--seeds", type=int, default=None, help="default 50 (quick: 5)")
        p.add_argument("--steps", type=int, default=200)

    args = C.parse_args(__doc__.splitlines()[0], argv, add)
    from toy_quadratic import VARIANTS, run_toy

    seeds = args.seeds or (5 if args.quick else 50)
    variants = [v for v in VARIANT_ORDER if v in VARIANTS]
    runs, curves = [], {v: [] for v in variants}
    steps_axis: list[int] | None = None
    with C.progress() as bar:
        task = bar.add_task("toy: seeds × variants", total=seeds * len(variants))
        for seed in range(seeds):
            for variant in variants:
                with C.temp_run_dir(f"toy-{variant}") as run_dir:
                    result = run_toy(variant, seed, args.steps, run_dir=run_dir, progress=False)
                curve = C.best_per_step(result.scores, result.mode)
                if steps_axis is None:
                    steps_axis = list(curve)
                if list(curve) != steps_axis:
                    raise RuntimeError(f"{variant} seed {seed}: ready steps {list(curve)} differ")
                curves[variant].append(list(curve.values()))
                runs.append({"seed": seed, "variant": variant, "best_q": result.best_score,
                             "best_member": result.best_member_id,
                             "exploits": len(result.exploits),
                             "best_q_per_step": [round(q, 6) for q in curve.values()]})
                bar.advance(task)

    summary: dict[str, float] = {}
    means = {}
    for v in variants:
        mean, std = C.mean_std([r["best_q"] for r in runs if r["variant"] == v])
        summary[f"{v}_mean"], summary[f"{v}_std"] = mean, std
        means[v] = mean
    others = [v for v in variants if v != "grid"]
    summary["grid_lowest"] = int(all(means["grid"] < means[v] for v in others))
    summary["pbt_highest"] = int(all(means["pbt"] > means[v] for v in variants if v != "pbt"))
    summary["pbt_minus_exploit"] = means["pbt"] - means["exploit"]
    # PBT vs exploit-only, paired by seed (same seed → same start); a one-sided sign count
    pairs = {}
    for r in runs:
        pairs.setdefault(r["seed"], {})[r["variant"]] = r["best_q"]
    summary["pbt_beats_exploit_frac"] = sum(
        p["pbt"] > p["exploit"] for p in pairs.values()) / len(pairs)
    goals = {"grid_lowest": C.goal(1, "=="), "pbt_highest": C.goal(1, "==")}

    png = C.artifact_path(NAME, args.quick, ".png")
    C.plot_bands(png, {v: (steps_axis, curves[v]) for v in variants},
                 title=f"PBT toy (paper fig. 2): best true Q per step, mean ± std over {seeds} seeds",
                 ylabel="Q(θ) of the best member", hline=(1.2, "optimum 1.2"), ylim=(-0.4, 1.3))
    notes = ("Goals are DESIGN.md's expected ordering (grid far below the rest; PBT highest). "
             "DESIGN.md's own simulation gave mean best Q " +
             ", ".join(f"{v} {DESIGN_MEANS[v]}" for v in VARIANT_ORDER) +
             ". best Q is result.best_score: the best member's true Q at the last step.")
    config = {"seeds": seeds, "steps": args.steps, "population": 2, "ready_every": 4,
              "variants": variants, "explore": "Gaussian sigma 0.1 at every ready point",
              "exploit": "Truncation(0.5, copy_ties=True)", "backend": "serial",
              "design_means": DESIGN_MEANS}
    path = C.write_result(NAME, args.quick, config=config, summary=summary, goals=goals,
                          runs=runs, notes=notes, figures=[png])
    for v in variants:
        print(f"{v:8s} best Q {summary[f'{v}_mean']:.4f} ± {summary[f'{v}_std']:.4f}")
    print(f"grid lowest: {bool(summary['grid_lowest'])}, pbt highest: {bool(summary['pbt_highest'])}")
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
