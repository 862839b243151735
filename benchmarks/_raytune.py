"""Ray Tune's side of benchmarks/vs_ray_tune.py: a Trainable wrapping our own member.

The trainable drives the very member class torchpbt trains (``Quadratic`` from
examples/toy_quadratic.py, ``MnistMember`` from examples/mnist.py) through the
same calls: ``setup`` + ``apply_hparams``, then per Tune iteration
``train(steps)`` and ``evaluate()``; its state travels through Tune's
checkpoint API (``save_checkpoint``/``load_checkpoint`` on a directory, which
Tune wraps in a ``ray.tune.Checkpoint``), so Ray's exploit really copies
weights and optimizer state. ``reset_config`` lets Tune reuse actors
(``reuse_actors=True``, its fastest mode for PBT). Ray is imported lazily: the
tests never import this module.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

import _common as C

META = ("workload", "member", "steps", "seed")  # config keys that are not hyperparameters


def member_class(workload: str) -> type:
    C.use_examples()
    if workload == "toy":
        from toy_quadratic import Quadratic

        return Quadratic
    from mnist import MnistMember

    return MnistMember


def init_ray(cpus: int) -> float:
    """Start a new local Ray with ``cpus`` CPUs (no dashboard); returns the seconds it took.

    ``address="local"``: never join another Ray instance running on the machine.

    Ray's worker processes inherit PYTHONPATH, so they can import this module and
    the examples (the trainable's class is pickled by reference).
    """
    import ray

    paths = [str(C.ROOT / "benchmarks"), str(C.EXAMPLES)]
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR", configure_logging=True)
    return time.perf_counter() - t0


def shutdown_ray() -> None:
    import ray

    ray.shutdown()


def _trainable_class():
    import torch
    from ray import tune

    class MemberTrainable(tune.Trainable):
        """One PBT member: ``config`` holds its hparams plus META keys."""

        def setup(self, config):
            torch.set_num_threads(1)  # as torchpbt's local backend: cores // workers
            torch.manual_seed(config["seed"] * 1000 + config["member"])
            self.member = member_class(config["workload"])()
            hp = self._hparams(config)
            self.member.setup(hp)
            self.member.apply_hparams(hp)

        @staticmethod
        def _hparams(config):
            return {k: v for k, v in config.items() if k not in META}

        def step(self):
            loss = self.member.train(self.config["steps"])
            score = self.member.evaluate()
            out = {"score": score, **{f"hp_{k}": v for k, v in self._hparams(self.config).items()}}
            if loss is not None:
                out["loss"] = loss
            return out

        def save_checkpoint(self, checkpoint_dir):
            torch.save(self.member.state_dict(), Path(checkpoint_dir) / "member.pt")

        def load_checkpoint(self, checkpoint_dir):
            state = torch.load(Path(checkpoint_dir) / "member.pt", weights_only=True,
                               map_location="cpu")
            self.member.load_state_dict(state)
            self.member.apply_hparams(self._hparams(self.config))  # the explored values, not the donor's

        def reset_config(self, new_config):
            self.member.apply_hparams(self._hparams(new_config))
            return True

    return MemberTrainable


def _bounds_callback():
    from ray import tune

    class Record(tune.Callback):
        """Driver-side record of every reported result: hparam extremes, last scores."""

        def __init__(self):
            self.iterations, self.last_score, self.seen = 0, {}, {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.iterations += 1
            self.last_score[trial.trial_id] = result["score"]
            for k, v in result.items():
                if k.startswith("hp_"):
                    lo, hi = self.seen.get(k[3:], (v, v))
                    self.seen[k[3:]] = (min(lo, v), max(hi, v))

    return Record()


def ray_tune_run(workload: str, space: dict, bounds: dict, initial: list[dict], cfg: dict,
                 seed: int, storage: Path) -> dict:
    """Ray Tune PBT over the same population; wall time of ``Tuner.fit()`` and what it did.

    ``space``: hparam name → ray.tune Domain (for resampling); ``bounds``: name →
    (low, high) as declared, to record values Ray's perturbation pushed outside them.
    """
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    random.seed(seed)  # Ray's explore draws from the global `random`
    iters = cfg["steps"] // cfg["ready_every"]
    fixed = {k: v for k, v in cfg.get("fixed_hparams", {}).items()}
    param_space = {"workload": workload, "steps": cfg["ready_every"], "seed": seed,
                   "member": tune.grid_search(list(range(len(initial)))), **fixed}
    for name in space:
        param_space[name] = tune.sample_from(
            lambda spec, n=name: initial[spec.config["member"]][n])
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration", perturbation_interval=1, quantile_fraction=cfg["quantile"],
        resample_probability=0.25, perturbation_factors=(1.2, 0.8), hyperparam_mutations=space,
        synch=False)
    record = _bounds_callback()
    tuner = tune.Tuner(
        tune.with_resources(_trainable_class(), {"cpu": 1}),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=scheduler,
                                    reuse_actors=True, num_samples=1),
        run_config=tune.RunConfig(name=f"{workload}-{seed}", storage_path=str(storage), verbose=0,
                                  stop={"training_iteration": iters}, callbacks=[record]),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    seconds = time.perf_counter() - t0
    errors = [str(r.error) for r in grid if r.error is not None]
    out_of_bounds = {}
    for name, (lo, hi) in record.seen.items():
        if name in bounds:
            blo, bhi = bounds[name]
            out_of_bounds[name] = {"min_seen": lo, "max_seen": hi, "declared": [blo, bhi],
                                   "outside": bool(lo < blo or hi > bhi)}
    scores = [s for s in record.last_score.values() if s is not None and math.isfinite(s)]
    return {"seconds": seconds, "iterations": record.iterations,
            "steps": record.iterations * cfg["ready_every"],
            "best_score": max(scores) if scores else float("nan"),
            "exploits": scheduler._num_perturbations, "errors": errors,
            "hparam_range": out_of_bounds}
