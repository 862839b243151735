"""Task (b): PBT vs random search vs a grid on examples/cartpole.py (A2C, CartPole-v1).

CartPole-v1 caps returns at 500 and a good A2C run reaches the cap, so the
final return alone cannot separate the methods. The primary score is the
**area under the curve**: the mean, over ready steps, of the best greedy return
in the population (so a method that reaches 500 sooner and stays there scores
higher), with the environment steps to return 475 beside it.

Per seed, three runs of P members × S steps on the serial backend, every member
consuming exactly ``S × ENV_STEPS_PER_STEP`` environment transitions (checked
from the stored intervals): PBT (the example's Truncation(0.25) + Perturb()),
random search (the same sampled initial population, checked; exploit=None,
explore=None), and a fixed grid of P hparam sets. Also recorded: the population's
mean final return and the best member's greedy return on 100 fresh start states
("test"). Welch and paired t-tests over ≥ 10 seeds; runs go two at a time.

    python benchmarks/rl_cartpole.py            # 10 seeds × 8 members × 200 steps (51,200 env steps each)
    python benchmarks/rl_cartpole.py --quick    # 2 seeds, tiny budget
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import _common as C

C.use_examples()

NAME = "rl_cartpole"
METHODS = ("pbt", "random", "grid")
TARGET = 475.0  # CartPole-v1's "solved" return
TEST_EPISODES, TEST_SEED = 100, 777


def grid(n: int) -> list[dict]:
    """n fixed hparam sets: lr × entropy cost, the other hparams at common A2C values."""
    lrs = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2][: max(1, (n + 1) // 2)]
    out = [{"lr": lr, "entropy_cost": ent, "horizon": 100.0, "unroll": 16}
           for lr in lrs for ent in (1e-3, 1e-2)]
    return out[:n]


def test_return(result) -> float:
    """The best member's greedy return on fresh start states, from its checkpoint."""
    from cartpole import CartPoleMember, greedy_return

    import torchpbt as pbt

    member = CartPoleMember()
    member.setup(result.best_hparams)
    member.load_state_dict(pbt.CheckpointDir(result.run_dir / "checkpoints").load(
        result.best_member["checkpoint"]))
    return greedy_return(member.model, TEST_EPISODES, TEST_SEED)


def one_run(args: tuple[str, int, dict]) -> dict:
    import torch
    from cartpole import ENV_STEPS_PER_STEP, SPACE, CartPoleMember

    import torchpbt as pbt

    method, seed, cfg = args
    torch.set_num_threads(1)
    kw = C.method_kwargs(method, grid(cfg["population"]))
    with C.temp_run_dir(f"cartpole-{method}") as run_dir:
        t0 = time.perf_counter()
        result = pbt.run(CartPoleMember, SPACE, population=cfg["population"],
                         steps=cfg["steps"], ready_every=cfg["ready_every"], seed=seed,
                         backend="serial", run_dir=run_dir, progress=False, **kw)
        seconds = time.perf_counter() - t0
        test = test_return(result)  # needs the checkpoint: before the directory goes
    curve = C.best_per_step(result.scores, result.mode)
    env_steps = [s * ENV_STEPS_PER_STEP for s in curve]
    reached = next((e for e, v in zip(env_steps, curve.values(), strict=True) if v >= TARGET),
                   None)
    return {"seed": seed, "method": method, "auc": statistics.fmean(curve.values()),
            "best": result.best_score, "best_test": test,
            "population_mean": statistics.fmean(m["score"] for m in result.members),
            "env_steps_to_target": reached, "member_steps": result.member_steps,
            "best_hparams": result.best_hparams,
            "exploits": len(result.exploits),
            "failed_intervals": sum(1 for iv in result.intervals if iv["error"]),
            "seconds": round(seconds, 2), "env_steps": env_steps,
            "best_per_step": list(curve.values()), "initial_hparams": C.initial_hparams(result)}


def main(argv=None) -> None:
    def add(p):
        p.add_argument("--seeds", type=int, default=None, help="default 10 (quick: 2)")
        p.add_argument("--population", type=int, default=None, help="default 8 (quick: 4)")
        p.add_argument("--steps", type=int, default=None, help="default 200 (quick: 20)")
        p.add_argument("--ready-every", type=int, default=None, help="default 10 (quick: 5)")
        p.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")

    args = C.parse_args(__doc__.splitlines()[0], argv, add)
    from cartpole import ENV_STEPS_PER_STEP
    from scipy import stats

    q = args.quick
    cfg = {"seeds": args.seeds or (2 if q else 10), "population": args.population or (4 if q else 8),
           "steps": args.steps or (20 if q else 200),
           "ready_every": args.ready_every or (5 if q else 10), "backend": "serial",
           "env_steps_per_step": ENV_STEPS_PER_STEP,
           "pbt": "Truncation(0.25) + Perturb() (examples/cartpole.py)",
           "random": "exploit=None, explore=None", "space": "examples/cartpole.py SPACE",
           "score": "greedy return, 16 fixed start states",
           "auc": "mean over ready steps of the best score in the population",
           "test": f"greedy return of the best member, {TEST_EPISODES} fresh start states"}
    cfg["grid"] = grid(cfg["population"])
    cfg["env_steps_per_member"] = cfg["steps"] * ENV_STEPS_PER_STEP

    runs: list[dict] = []
    t0 = time.perf_counter()
    jobs = [(m, seed, cfg) for seed in range(cfg["seeds"]) for m in METHODS]
    with C.ForeignCpu() as foreign, C.progress() as bar, ProcessPoolExecutor(args.jobs) as pool:
        task = bar.add_task("rl_cartpole: seeds × (pbt, random, grid)", total=len(jobs))
        for r in pool.map(one_run, jobs):
            runs.append(r)
            bar.advance(task)
    wall = time.perf_counter() - t0
    C.check_comparison(runs, cfg["population"] * cfg["steps"])

    by = {m: sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"])
          for m in METHODS}
    summary: dict[str, float] = {}
    for m in METHODS:
        for key in ("auc", "best_test", "population_mean"):
            summary[f"{m}_{key}_mean"], summary[f"{m}_{key}_std"] = C.mean_std(
                [r[key] for r in by[m]])
        hit = [r["env_steps_to_target"] for r in by[m] if r["env_steps_to_target"] is not None]
        summary[f"{m}_seeds_reaching_{TARGET:.0f}"] = len(hit)
        summary[f"{m}_env_steps_to_{TARGET:.0f}_mean"] = C.mean_std(hit)[0]
    for other in ("random", "grid"):
        for key, tag in (("auc", "auc"), ("best_test", "test"), ("population_mean", "population")):
            a, b = [r[key] for r in by["pbt"]], [r[key] for r in by[other]]
            summary[f"{tag}_pbt_minus_{other}"] = statistics.fmean(a) - statistics.fmean(b)
            summary[f"{tag}_p_vs_{other}"] = C.welch_p(a, b)
            summary[f"{tag}_p_vs_{other}_paired"] = float(stats.ttest_rel(a, b).pvalue)
    summary["member_steps_per_run"] = cfg["population"] * cfg["steps"]
    summary["foreign_cpu_cores"] = foreign.seconds / wall
    goals = {"auc_pbt_minus_random": C.goal(0.0, ">"), "auc_p_vs_random": C.goal(0.05, "<")}

    axis = by["pbt"][0]["env_steps"]
    curves = {label: (axis, [r["best_per_step"] for r in by[m] if r["env_steps"] == axis])
              for m, label in (("pbt", "PBT"), ("random", "random search"), ("grid", "grid"))}
    png = C.artifact_path(NAME, q, ".png")
    C.plot_bands(png, curves, xlabel="environment steps per member",
                 ylabel="best greedy return in the population",
                 title=(f"A2C on CartPole-v1, {cfg['population']} members: "
                        f"mean ± std over {cfg['seeds']} seeds"),
                 hline=(TARGET, f"return {TARGET:.0f}"), ylim=(0.0, 520.0))
    notes = (
        "Goals are ours: PBT's mean AUC (mean over ready steps of the best greedy return in "
        "the population, max 500) above random search's, with Welch's p < 0.05; paired "
        "p-values pair by seed. PBT and random search start from the same sampled population "
        "per seed (checked); the grid's population is config.grid. Every run spent exactly "
        "population × steps member-steps (checked), one step being env_steps_per_step "
        f"transitions. env_steps_to_{TARGET:.0f}: first ready step at which the best score "
        f"reached {TARGET:.0f}, mean over the seeds that reached it. test: the final best "
        "member on 100 fresh start states (capped at 500, so it saturates). "
        "population_mean: mean final score over all members. foreign_cpu_cores: CPU used by "
        "other processes during the run (slows it, changes no figure: serial runs are "
        "deterministic).")
    path = C.write_result(NAME, q, config=cfg, summary=summary, goals=goals, runs=runs,
                          notes=notes, figures=[png])
    for m in METHODS:
        print(f"{m:7s} AUC {summary[f'{m}_auc_mean']:.1f} ± {summary[f'{m}_auc_std']:.1f}, test "
              f"{summary[f'{m}_best_test_mean']:.1f}, population "
              f"{summary[f'{m}_population_mean_mean']:.1f}, reached {TARGET:.0f} in "
              f"{summary[f'{m}_seeds_reaching_{TARGET:.0f}']:.0f}/{cfg['seeds']} seeds")
    for other in ("random", "grid"):
        print(f"AUC pbt - {other} {summary[f'auc_pbt_minus_{other}']:+.1f} (Welch p "
              f"{summary[f'auc_p_vs_{other}']:.3g}, paired {summary[f'auc_p_vs_{other}_paired']:.3g})")
    print(f"foreign CPU {summary['foreign_cpu_cores']:.2f} cores; wrote {path} and {png}")


if __name__ == "__main__":
    main()
