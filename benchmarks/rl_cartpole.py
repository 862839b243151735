"""PBT vs random search on examples/cartpole.py (A2C, CartPole-v1) at equal environment steps.

For every seed both methods start from the same sampled population (checked)
and every member consumes exactly the same number of environment transitions
(``steps × ENV_STEPS_PER_STEP``, checked from the stored intervals); they differ
only in exploit/explore: PBT uses the example's Truncation(0.25) + Perturb(),
random search exploit=None, explore=None. Recorded per run: the best greedy
return in the population at each ready step (the curve, against env steps per
member), the first env step at which it reaches 475, the population's mean
return at the end, and the best member's greedy return on 100 fresh start
states (no selection bias: "test").

    python benchmarks/rl_cartpole.py            # 5 seeds × 8 members × 300 steps (76,800 env steps each)
    python benchmarks/rl_cartpole.py --quick    # 2 seeds, tiny budget
"""

from __future__ import annotations

import statistics
import time

import _common as C

C.use_examples()

NAME = "rl_cartpole"
METHODS = ("pbt", "random")
TARGET = 475.0  # CartPole-v1's "solved" return
TEST_EPISODES, TEST_SEED = 100, 777


def test_return(result) -> float:
    """The best member's greedy return on fresh start states, from its checkpoint."""
    from cartpole import CartPoleMember, greedy_return

    import torchpbt as pbt

    member = CartPoleMember()
    member.setup(result.best_hparams)
    member.load_state_dict(pbt.CheckpointDir(result.run_dir / "checkpoints").load(
        result.best_member["checkpoint"]))
    return greedy_return(member.model, TEST_EPISODES, TEST_SEED)


def one_run(method: str, seed: int, cfg: dict) -> dict:
    from cartpole import ENV_STEPS_PER_STEP, SPACE, CartPoleMember

    import torchpbt as pbt

    exploit, explore = ((pbt.Truncation(0.25), pbt.Perturb()) if method == "pbt"
                        else (None, None))
    with C.temp_run_dir(f"cartpole-{method}") as run_dir:
        t0 = time.perf_counter()
        result = pbt.run(CartPoleMember, SPACE, population=cfg["population"],
                         steps=cfg["steps"], ready_every=cfg["ready_every"], exploit=exploit,
                         explore=explore, seed=seed, backend="serial", run_dir=run_dir,
                         progress=False)
        seconds = time.perf_counter() - t0
        test = test_return(result)  # needs the checkpoint: before the directory goes
    curve = C.best_per_step(result.scores, result.mode)
    env_steps = [s * ENV_STEPS_PER_STEP for s in curve]
    reached = next((e for e, v in zip(env_steps, curve.values(), strict=True) if v >= TARGET),
                   None)
    per_member: dict[int, int] = {}
    for iv in result.intervals:
        per_member[iv["member_id"]] = (per_member.get(iv["member_id"], 0)
                                       + (iv["end_step"] - iv["start_step"]) * ENV_STEPS_PER_STEP)
    return {"seed": seed, "method": method, "best": result.best_score, "best_test": test,
            "population_mean": statistics.fmean(m["score"] for m in result.members),
            "env_steps_to_target": reached, "env_steps_per_member": per_member,
            "best_hparams": result.best_hparams, "exploits": len(result.exploits),
            "failed_intervals": sum(1 for iv in result.intervals if iv["error"]),
            "seconds": round(seconds, 2), "env_steps": env_steps,
            "best_per_step": list(curve.values()), "initial_hparams": C.initial_hparams(result)}


def main(argv=None) -> None:
    def add(p):
        p.add_argument("--seeds", type=int, default=None, help="default 5 (quick: 2)")
        p.add_argument("--population", type=int, default=None, help="default 8 (quick: 3)")
        p.add_argument("--steps", type=int, default=None, help="default 300 (quick: 20)")
        p.add_argument("--ready-every", type=int, default=None, help="default 20 (quick: 10)")

    args = C.parse_args(__doc__.splitlines()[0], argv, add)
    from cartpole import ENV_STEPS_PER_STEP

    q = args.quick
    cfg = {"seeds": args.seeds or (2 if q else 5), "population": args.population or (3 if q else 8),
           "steps": args.steps or (20 if q else 300),
           "ready_every": args.ready_every or (10 if q else 20), "backend": "serial",
           "env_steps_per_step": ENV_STEPS_PER_STEP,
           "pbt": "Truncation(0.25) + Perturb() (examples/cartpole.py)",
           "random": "exploit=None, explore=None", "space": "examples/cartpole.py SPACE",
           "score": "greedy return, 16 fixed start states",
           "test": f"greedy return of the best member, {TEST_EPISODES} fresh start states"}
    budget = cfg["steps"] * ENV_STEPS_PER_STEP
    cfg["env_steps_per_member"] = budget

    runs: list[dict] = []
    t0 = time.perf_counter()
    with C.ForeignCpu() as foreign, C.progress() as bar:
        task = bar.add_task("rl_cartpole: seeds × (pbt, random)", total=cfg["seeds"] * 2)
        for seed in range(cfg["seeds"]):
            pair = {}
            for m in METHODS:
                pair[m] = one_run(m, seed, cfg)
                bar.advance(task)
            runs += pair.values()
            C.check_paired(f"seed {seed}", pair)
            for r in pair.values():
                if set(r["env_steps_per_member"].values()) != {budget}:
                    raise RuntimeError(f"{r['method']} seed {seed}: unequal env steps "
                                       f"{r['env_steps_per_member']}")
            bar.console.print(
                f"seed {seed}: " + ", ".join(
                    f"{m} test {pair[m]['best_test']:.0f} reached {TARGET:.0f} at "
                    f"{pair[m]['env_steps_to_target'] or 'never'}" for m in METHODS))
    wall = time.perf_counter() - t0

    by = {m: [r for r in runs if r["method"] == m] for m in METHODS}
    summary: dict[str, float] = {}
    for m in METHODS:
        for key in ("best_test", "population_mean"):
            summary[f"{m}_{key}_mean"], summary[f"{m}_{key}_std"] = C.mean_std(
                [r[key] for r in by[m]])
        hit = [r["env_steps_to_target"] for r in by[m] if r["env_steps_to_target"] is not None]
        summary[f"{m}_seeds_reaching_{TARGET:.0f}"] = len(hit)
        summary[f"{m}_env_steps_to_{TARGET:.0f}_mean"] = C.mean_std(hit)[0]
        summary[f"{m}_auc_mean"] = statistics.fmean(  # mean of the best-return curve
            statistics.fmean(r["best_per_step"]) for r in by[m])
    test = {m: [r["best_test"] for r in by[m]] for m in METHODS}
    pop = {m: [r["population_mean"] for r in by[m]] for m in METHODS}
    summary["test_diff"] = summary["pbt_best_test_mean"] - summary["random_best_test_mean"]
    summary["p_value"] = C.welch_p(test["pbt"], test["random"])
    summary["population_diff"] = (summary["pbt_population_mean_mean"]
                                  - summary["random_population_mean_mean"])
    summary["p_value_population"] = C.welch_p(pop["pbt"], pop["random"])
    summary["foreign_cpu_cores"] = foreign.seconds / wall
    goals = {"test_diff": C.goal(0.0, ">"), "p_value": C.goal(0.05, "<")}

    axis = by["pbt"][0]["env_steps"]
    curves = {label: (axis, [r["best_per_step"] for r in by[m] if r["env_steps"] == axis])
              for m, label in (("pbt", "PBT"), ("random", "random search"))}
    png = C.artifact_path(NAME, q, ".png")
    C.plot_bands(png, curves, xlabel="environment steps per member",
                 ylabel="best greedy return in the population",
                 title=(f"A2C on CartPole-v1, {cfg['population']} members: "
                        f"mean ± std over {cfg['seeds']} seeds"),
                 hline=(TARGET, f"return {TARGET:.0f}"), ylim=(0.0, 520.0))
    notes = (
        "Goals are ours: PBT's mean test return (greedy return of the best member on "
        f"{TEST_EPISODES} fresh start states, max 500) above random search's, with Welch's "
        "t-test p < 0.05. Both methods start from the same sampled population per seed "
        "(checked) and every member consumes the same environment steps (checked). "
        f"env_steps_to_{TARGET:.0f}: first ready step at which the best score in the "
        f"population (greedy return on 16 fixed start states) reached {TARGET:.0f}, mean over "
        "the seeds that reached it (seeds_reaching says how many). population_mean: mean "
        "final score over all members. foreign_cpu_cores = CPU used by other processes "
        "during the benchmark, in cores (the machine has 2); it slows the run but does not "
        "change the figures, which are deterministic on the serial backend.")
    path = C.write_result(NAME, q, config=cfg, summary=summary, goals=goals, runs=runs,
                          notes=notes, figures=[png])
    for m in METHODS:
        print(f"{m:7s} test {summary[f'{m}_best_test_mean']:.1f} ± "
              f"{summary[f'{m}_best_test_std']:.1f}, population "
              f"{summary[f'{m}_population_mean_mean']:.1f}, reached {TARGET:.0f} in "
              f"{summary[f'{m}_seeds_reaching_{TARGET:.0f}']:.0f}/{cfg['seeds']} seeds")
    print(f"difference {summary['test_diff']:+.1f}, Welch p = {summary['p_value']:.3g}; "
          f"foreign CPU {summary['foreign_cpu_cores']:.2f} cores; wrote {path} and {png}")


if __name__ == "__main__":
    main()
