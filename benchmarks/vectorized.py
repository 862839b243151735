"""backend="vectorized" vs backend="serial": member-steps per second, same PBT runs.

Workloads: ``small`` (MLP 16-64-10, batch 32, SGD on synthetic data), ``mnist``
(examples/mnist.py's MLP 784-128-10 with batch 64 fixed; lr, momentum, weight
decay and dropout searched) and ``cartpole`` (examples/cartpole.py's VectorCartPole:
A2C, 8 envs per member, 256 env steps per member-step; P ≤ 32). For each population size P both backends run the
same ``torchpbt.run`` (same seed, so the same initial population, Truncation +
Perturb, ready every ``ready_every``); the member-steps each trained are checked
equal to P × steps. Every run is its own fresh process on one thread, timed from
the call of ``pbt.run`` to its return (checkpoints, store and evaluation included);
its peak memory above the process's footprint before the run, divided by P, is
the memory per member. Repeats alternate the order of the backends; medians are
reported. A last comparison: the vectorized PBT run of 32 small members against 4
small members trained one by one in a plain PyTorch loop (no framework, the same
steps and evaluations).

    python benchmarks/vectorized.py                   # CPU, P = 8, 32, 128, 3 repeats
    python benchmarks/vectorized.py --quick           # < 60 s
    python benchmarks/vectorized.py --device cuda:0   # what benchmarks/gpu_check.sh runs
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

import _common as C

NAME = "vectorized"
WORKLOADS = {"small": {"steps": 1000, "ready_every": 100},
             "mnist": {"steps": 200, "ready_every": 50},
             "cartpole": {"steps": 40, "ready_every": 20}}
MAX_POPULATION = {"cartpole": 32}  # its greedy evaluations (up to 8,000 env steps) dominate beyond


def _members():
    """The two workloads' members (imported in the child only: torch stays out of the parent)."""
    import torch
    import torch.nn.functional as F
    from cartpole import VECTOR_SPACE, VectorCartPole
    from mnist import SPACE, MnistMember
    from torch import nn

    import torchpbt as pbt

    def small_data():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(4096, 16, generator=g)
        return x, (x[:, :10] + 0.5 * torch.randn(4096, 10, generator=g)).argmax(1)

    class Small(pbt.VectorMember):
        batch_size = 32

        @property
        def val(self):
            if not hasattr(self, "_val"):
                x, y = small_data()
                self._val = (x[:512].to(self.device), y[:512].to(self.device))
            return self._val

        def build(self, hparams):
            return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 10))

        def train_data(self):
            return small_data()

        def loss(self, model, batch, hparams):
            x, y = batch
            return F.cross_entropy(model(x), y)

        def score(self, model, hparams):
            x, y = self.val
            return (model(x).argmax(1) == y).float().mean()

    class Mnist64(MnistMember):
        batch_size = 64

    small_space = {"lr": pbt.Float(0.01, 0.3, log=True), "momentum": pbt.Float(0.0, 0.95)}
    mnist_space = {k: v for k, v in SPACE.items() if k != "batch_size"}
    return {"small": (Small, small_space), "mnist": (Mnist64, mnist_space),
            "cartpole": (VectorCartPole, VECTOR_SPACE)}


def _peak_bytes(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def child(spec: dict) -> dict:
    """One timed run in this fresh process; prints its figures as JSON."""
    import torch

    C.use_examples()
    torch.set_num_threads(1)
    import torchpbt as pbt

    member, space = _members()[spec["workload"]]
    device, P = spec["device"], spec["population"]
    if spec["workload"] != "cartpole":
        member().train_data()  # data loaded (and cached by the OS) before the timing
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    before = _peak_bytes(device) if device.startswith("cuda") else _current_rss()
    with C.temp_run_dir(f"vec-{spec['backend']}") as run_dir:
        t0 = time.perf_counter()
        if spec["backend"] == "plain":
            steps = _plain(member, space, P, spec["steps"], spec["ready_every"], device)
        else:
            r = pbt.run(member, space, population=P, steps=spec["steps"],
                        ready_every=spec["ready_every"], seed=spec["seed"],
                        exploit=pbt.Truncation(0.25), explore=pbt.Perturb(),
                        backend=spec["backend"], workers=1, devices=device, run_dir=run_dir,
                        progress=False)
            steps = r.member_steps
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    peak = _peak_bytes(device)
    return {**spec, "seconds": seconds, "member_steps": steps,
            "member_steps_per_s": steps / seconds,
            "memory_per_member_mb": max(0, peak - before) / P / 2**20}


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _plain(member_cls, space, P: int, steps: int, ready_every: int, device: str) -> int:
    """P members one after another through the class's own ordinary path, no framework:
    setup, train ``ready_every`` steps, evaluate, until ``steps``."""
    import random

    import torchpbt as pbt

    rng, done = random.Random(0), 0
    for _ in range(P):
        m = member_cls()
        m.device = device
        m.setup(pbt.Space(space).sample(rng))
        for start in range(0, steps, ready_every):
            m.train(min(ready_every, steps - start))
            m.evaluate()
            done += min(ready_every, steps - start)
    return done


def run_child(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return

    def add(p):
        p.add_argument("--device", default="cpu")
        p.add_argument("--repeats", type=int, default=None)
        p.add_argument("--sizes", default=None, help="population sizes, e.g. 8,32,128")
        p.add_argument("--workloads", default=",".join(WORKLOADS), help="e.g. small,mnist")
        p.add_argument("--steps", type=int, default=None, help="steps per member, every workload")
        p.add_argument("--name", default=NAME, help="result name (gpu_check.sh: gpu_check)")

    args = C.parse_args(__doc__.splitlines()[0], argv, add)
    q = args.quick
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([4, 8] if q else [8, 32, 128])
    repeats = args.repeats or (1 if q else 3)
    chosen = args.workloads.split(",")
    unknown = sorted(set(chosen) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"--workloads: unknown {unknown}; choose from {list(WORKLOADS)}")
    budget = {w: ({"steps": 40, "ready_every": 20} if q else dict(WORKLOADS[w])) for w in chosen}
    if args.steps:
        budget = {w: {"steps": args.steps, "ready_every": max(1, args.steps // 4)} for w in budget}
    cfg = {"device": args.device, "sizes": sizes, "repeats": repeats, "workloads": budget,
           "threads": 1, "seed": 0, "exploit": "Truncation(0.25)", "explore": "Perturb()"}
    specs = [{"workload": w, "population": P, **budget[w]} for w in budget for P in sizes
             if P <= MAX_POPULATION.get(w, P)]
    small = budget.get("small")
    pbt_32 = 8 if q else 32
    extra = [] if small is None else [  # the PBT-of-32 vs 4-one-by-one comparison
        {"workload": "small", "population": 4, **small, "backend": "plain"},
        {"workload": "small", "population": pbt_32, **small, "backend": "vectorized",
         "role": "pbt_vs_plain4"}]
    runs: list[dict] = []
    with C.progress() as bar:
        task = bar.add_task("vectorized vs serial", total=repeats * (2 * len(specs) + len(extra)))
        for rep in range(repeats):
            order = ("serial", "vectorized") if rep % 2 == 0 else ("vectorized", "serial")
            jobs = [{**s, "backend": b} for s in specs for b in order] + extra
            for job in jobs:
                row = run_child({**job, "device": args.device, "seed": 0, "repeat": rep})
                if row["member_steps"] != row["population"] * row["steps"]:
                    raise RuntimeError(f"{job}: trained {row['member_steps']} member-steps, "
                                       f"expected {row['population'] * row['steps']}")
                runs.append(row)
                bar.advance(task)
    summary, lines = _summary(runs, specs, pbt_32)
    goals = {} if q or not args.device.startswith("cpu") else {
        "speedup_small_p32": C.goal(5.0, ">="), "speedup_mnist_p8": C.goal(1.5, ">="),
        "pbt32_vs_plain4_time_ratio": C.goal(1.0, "<")}
    goals = {k: g for k, g in goals.items() if k in summary}
    notes = ("Median over repeats of member-steps per second (each run a fresh process, one "
             "thread, pbt.run's wall time). " + " ".join(lines))
    path = C.write_result(args.name, q, config=cfg, summary=summary, goals=goals, runs=runs,
                          notes=notes)
    print(notes)
    print(f"wrote {path}")


def _summary(runs: list[dict], specs: list[dict], pbt_32: int) -> tuple[dict, list[str]]:
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    summary, lines = {}, []
    def pick(w: str, P: int, backend: str) -> list[dict]:
        return [r for r in runs if r["workload"] == w and r["population"] == P
                and r["backend"] == backend and "role" not in r]

    for s in specs:
        w, P = s["workload"], s["population"]
        ser = med(pick(w, P, "serial"), "member_steps_per_s")
        vec = med(pick(w, P, "vectorized"), "member_steps_per_s")
        summary[f"speedup_{w}_p{P}"] = vec / ser
        summary[f"memory_per_member_mb_{w}_p{P}"] = med(pick(w, P, "vectorized"),
                                                         "memory_per_member_mb")
        summary[f"serial_memory_per_member_mb_{w}_p{P}"] = med(pick(w, P, "serial"),
                                                                "memory_per_member_mb")
        lines.append(f"{w} P={P}: serial {ser:.0f}, vectorized {vec:.0f} member-steps/s "
                     f"({vec / ser:.2f}×).")
    if not any(r["backend"] == "plain" for r in runs):
        return summary, lines
    plain = med([r for r in runs if r["backend"] == "plain"], "seconds")
    vec32 = med([r for r in runs if r.get("role") == "pbt_vs_plain4"], "seconds")
    summary["pbt32_vs_plain4_time_ratio"] = vec32 / plain
    lines.append(f"Vectorized PBT with {pbt_32} small members took {vec32:.2f} s; 4 small "
                 f"members one by one in plain PyTorch {plain:.2f} s (ratio {vec32 / plain:.2f}).")
    return summary, lines


if __name__ == "__main__":
    main()
