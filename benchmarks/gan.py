"""Task (c): PBT vs random search vs a grid on the GAN of examples/gan.py, equal compute.

Per seed, three runs of P members × S steps on the serial backend (one step =
one discriminator + one generator update): PBT (the example's Truncation(0.25,
max_lineage_share=0.5) + Perturb()), random search (the same sampled initial
population, checked; exploit=None, explore=None) and a fixed grid of P hparam
sets (the common GAN settings: equal lrs for G and D, β1 0 or 0.5). Every
run's member-steps are counted from its intervals and must equal P × S.
Recorded per run: the best member's final score (the example's score:
mode-matched mass averaged over 3 and 10 std, on the 2,000 fixed-noise samples
it was selected on), its mode-matched mass within 3 std on 10,000 fresh
samples (no selection bias: "test", the primary score), its modes covered, how
many final members are collapsed (at most 2 of the 8 modes covered) and how
many distinct initial members the final population descends from (its
diversity).

Why diversity is recorded, and kept: a generator collapsed onto one to three
modes has a 3-std mass of 0.125-0.375 early, while members that will cover
every mode may still score ~0 for their first ~800 steps, so the collapsed one
wins the first rankings. With plain truncation the whole population soon
descends from it and stays collapsed (one lineage in every seed);
max_lineage_share=0.5 lets one initial member's descendants hold at most half
the population, so slow starters in the other half live on. The example's
score adds the 10-std mass for the same reason: it credits a generator that is
near every mode before it is sharp, so early rankings predict the final ones
better. Welch and paired t-tests over ≥ 10 seeds; runs go two at a time (one
thread each).

    python benchmarks/gan.py            # 10 seeds × 8 members × 2,000 steps, serial
    python benchmarks/gan.py --quick    # 2 seeds, tiny budget
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import _common as C

C.use_examples()

NAME = "gan"
METHODS = ("pbt", "random", "grid")
TEST_SAMPLES, TEST_SEED = 10_000, 777
COLLAPSED_MODES = 2  # a member covering at most this many of the 8 modes is collapsed


def grid(n: int) -> list[dict]:
    """n fixed hparam sets: one lr for G and D × Adam β1 0.5 (DCGAN's) or 0."""
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2][: max(1, (n + 1) // 2)]
    return [{"lr_g": lr, "d_ratio": 1.0, "beta1": b} for lr in lrs for b in (0.5, 0.0)][:n]


def member_stats(result, member_id: int, noise) -> dict:
    """Mode statistics of one member's final generator on ``noise``, from its checkpoint."""
    import torch
    from gan import GANMember, mode_stats

    import torchpbt as pbt

    member = GANMember()
    member.setup(result.best_hparams)
    member.load_state_dict(pbt.CheckpointDir(result.run_dir / "checkpoints").load(
        result.checkpoint_of(member_id)))
    with torch.no_grad():
        return mode_stats(member.g(noise))


def one_run(args: tuple[str, int, dict]) -> dict:
    import torch
    from gan import EXPLOIT, NOISE, SPACE, GANMember

    import torchpbt as pbt

    method, seed, cfg = args
    torch.set_num_threads(1)
    with C.temp_run_dir(f"gan-{method}") as run_dir:
        t0 = time.perf_counter()
        result = pbt.run(GANMember, SPACE, population=cfg["population"], steps=cfg["steps"],
                         ready_every=cfg["ready_every"], seed=seed, backend="serial",
                         run_dir=run_dir, progress=False,
                         **C.method_kwargs(method, cfg["grid"], exploit=EXPLOIT))
        seconds = time.perf_counter() - t0
        # needs the checkpoints: before the directory goes
        z = torch.randn(TEST_SAMPLES, NOISE, generator=torch.Generator().manual_seed(TEST_SEED))
        test = member_stats(result, result.best_member_id, z)
        modes = [member_stats(result, m["member_id"], z[:2000])["modes"] for m in result.members]
    roots = {result.trace(m["member_id"])[0]["member_id"] for m in result.members}
    curve = C.best_per_step(result.scores, result.mode)
    return {"seed": seed, "method": method, "best": result.best_score,
            "best_test": test["matched_mass"], "modes_test": test["modes"],
            "high_quality_test": test["high_quality"],
            "population_mean": statistics.fmean(m["score"] for m in result.members),
            "collapsed_members": sum(k <= COLLAPSED_MODES for k in modes),
            "lineages": len(roots), "best_hparams": result.best_hparams,
            "exploits": len(result.exploits), "member_steps": result.member_steps,
            "seconds": round(seconds, 2), "steps": list(curve),
            "best_per_step": list(curve.values()), "initial_hparams": C.initial_hparams(result)}


def main(argv=None) -> None:
    def add(p):
        p.add_argument("--seeds", type=int, default=None, help="default 10 (quick: 2)")
        p.add_argument("--population", type=int, default=None, help="default 8 (quick: 3)")
        p.add_argument("--steps", type=int, default=None, help="default 2000 (quick: 100)")
        p.add_argument("--ready-every", type=int, default=None, help="default 100 (quick: 25)")
        p.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")

    args = C.parse_args(__doc__.splitlines()[0], argv, add)
    from gan import EXPLOIT

    q = args.quick
    cfg = {"seeds": args.seeds or (2 if q else 10), "population": args.population or (3 if q else 8),
           "steps": args.steps or (100 if q else 2000),
           "ready_every": args.ready_every or (25 if q else 100), "backend": "serial",
           "pbt": f"{EXPLOIT!r} + Perturb()", "random": "exploit=None, explore=None",
           "space": "examples/gan.py SPACE",
           "score": "mean mode-matched mass within 3 and 10 std, 2,000 fixed-noise samples",
           "test": f"mode-matched mass (3 std) of the best member, {TEST_SAMPLES:,} fresh "
                   "samples",
           "collapsed": f"final members covering at most {COLLAPSED_MODES} modes"}
    cfg["grid"] = grid(cfg["population"])
    member_steps = cfg["population"] * cfg["steps"]

    runs: list[dict] = []
    t0 = time.perf_counter()
    jobs = [(m, seed, cfg) for seed in range(cfg["seeds"]) for m in METHODS]
    with C.ForeignCpu() as foreign, C.progress() as bar, ProcessPoolExecutor(args.jobs) as pool:
        task = bar.add_task("gan: seeds × (pbt, random, grid)", total=len(jobs))
        for r in pool.map(one_run, jobs):
            runs.append(r)
            bar.advance(task)
    wall = time.perf_counter() - t0
    C.check_comparison(runs, member_steps)

    summary: dict[str, float] = {}
    for key, tag in (("best_test", "test"), ("population_mean", "population"),
                     ("modes_test", "modes"), ("collapsed_members", "collapsed"),
                     ("lineages", "lineages")):
        summary |= C.compare(runs, key, tag)
    summary["member_steps_per_run"] = member_steps
    summary["foreign_cpu_cores"] = foreign.seconds / wall
    goals = {"test_pbt_minus_random": C.goal(0.0, ">"), "test_p_vs_random": C.goal(0.05, "<")}

    by = {m: sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"])
          for m in METHODS}
    axis = by["pbt"][0]["steps"]
    curves = {label: (axis, [r["best_per_step"] for r in by[m] if r["steps"] == axis])
              for m, label in (("pbt", "PBT"), ("random", "random search"), ("grid", "grid"))}
    png = C.artifact_path(NAME, q, ".png")
    C.plot_bands(png, curves, ylabel="best score in the population (mass within 3 and 10 std)",
                 title=(f"GAN on 8 Gaussians, {cfg['population']} members × {cfg['steps']} "
                        f"steps: mean ± std over {cfg['seeds']} seeds"),
                 hline=(0.97, "true mixture (2,000 samples)"), ylim=(0.0, 1.0))
    notes = (
        "Goals are ours: PBT's mean test score (mode-matched mass of the best member on "
        f"{TEST_SAMPLES:,} fresh samples; the true mixture scores ~0.985 on that many) above "
        "random search's, with Welch's p < 0.05; paired p-values pair by seed. PBT and random "
        "search start from the same sampled population per seed (checked); the grid's "
        "population is config.grid. Every run spent exactly population × steps member-steps "
        "(checked). collapsed: final members covering at most "
        f"{COLLAPSED_MODES} modes (on 2,000 fresh samples). lineages: distinct initial "
        "members the final population descends from (random search and the grid keep all). "
        "foreign_cpu_cores: CPU used by other processes during the run (slows it, changes no "
        "figure: serial runs are deterministic).")
    path = C.write_result(NAME, q, config=cfg, summary=summary, goals=goals, runs=runs,
                          notes=notes, figures=[png])
    for m in METHODS:
        print(f"{m:7s} test {summary[f'{m}_test_mean']:.3f} ± {summary[f'{m}_test_std']:.3f}, "
              f"modes {summary[f'{m}_modes_mean']:.1f}, collapsed members "
              f"{summary[f'{m}_collapsed_mean']:.1f}, lineages {summary[f'{m}_lineages_mean']:.1f}")
    for other in ("random", "grid"):
        print(f"test pbt - {other} {summary[f'test_pbt_minus_{other}']:+.3f} (Welch p "
              f"{summary[f'test_p_vs_{other}']:.3g}, paired {summary[f'test_p_vs_{other}_paired']:.3g})")
    print(f"foreign CPU {summary['foreign_cpu_cores']:.2f} cores; wrote {path} and {png}")


if __name__ == "__main__":
    main()
