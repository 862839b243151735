"""Bad input: every invalid configuration or usage fails before training, with one message
naming the problem and the fix, and leaves the disk exactly as it was.

One table: each row is one bad call, the exception it must raise and a regex that must
match both the problem and the fix in the message.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import NAS_SPACE, QSPACE, SPACE, Quadratic, ReturnsText, TinyNAS, TinyNet

import torchpbt as pbt
from torchpbt.engine.preflight import PreflightError, preflight
from torchpbt.nas import Mixing, Mutation
from torchpbt.store import StoreError

BASE = dict(population=2, ready_every=5, steps=10, backend="serial", progress=False, seed=0)


def run(t: Path, member: type = Quadratic, space=None, **kw):
    """One tiny serial run in ``t/run`` with ``kw`` overriding the defaults."""
    return pbt.run(member, QSPACE if space is None else space,
                   **{**BASE, "run_dir": t / "run", **kw})


# -- members that are broken in one way each (module level: picklable, importable) --

class Opaque:
    """Not a tensor and not a plain value: torch.load(weights_only=True) refuses it."""


class NoTrain(pbt.Member):
    def setup(self, hparams): ...
    def evaluate(self): return 0.0
    def state_dict(self): return {}
    def load_state_dict(self, state): ...


class NeedsArgs(Quadratic):
    def __init__(self, data):
        self.data = data


class SetupFails(Quadratic):
    def setup(self, hparams):
        raise FileNotFoundError("no dataset at /data/missing")


class ReturnsNone(Quadratic):
    def evaluate(self):
        self.x * 2  # forgot the return  # noqa: B018


class ReturnsVector(Quadratic):
    def evaluate(self):
        return torch.tensor([0.5, 0.25, 0.75])


class EvaluateNeedsTraining(Quadratic):
    def evaluate(self):
        return -self.last_loss  # set in train() only


class OpaqueState(Quadratic):
    def state_dict(self):
        return {"x": self.x, "extra": {"tokenizer": Opaque()}}


class LambdaState(Quadratic):
    def state_dict(self):
        return {"x": self.x, "schedule": lambda step: 0.1}


class LoadMismatch(Quadratic):
    def load_state_dict(self, state):
        self.x = state["weights"].clone()


class BadOptimizerKey(TinyNet):
    optimizer_hparams = {"lr": "learning_rate"}


# -- rows that need something on disk first --

def _existing_run(t: Path) -> None:
    run(t)


def _file_at_run_dir(t: Path) -> None:
    (t / "run").write_text("not a directory")


def _file_as_parent(t: Path) -> None:
    (t / "afile").write_text("not a directory")


def _plain_dir(t: Path) -> None:
    (t / "run").mkdir()
    (t / "run" / "notes.txt").write_text("no run here")


def _newer_schema(t: Path) -> None:
    run(t, run_dir=t / "old")
    with sqlite3.connect(t / "old" / "torchpbt.db") as db:
        db.execute("UPDATE torchpbt_meta SET value = '99' WHERE key = 'schema_version'")
    db.close()


def _old_db_url(t: Path) -> str:
    return f"sqlite:///{t / 'old' / 'torchpbt.db'}"


class NoArch(TinyNAS):
    arch = {"c0": ["lin"], "c1": ["lin"]}  # a dict, not an ArchSpace


def _run_with_lost_member(t: Path) -> None:
    """A run whose member class was defined in a file that has since been deleted."""
    src = t / "gone_member.py"
    src.write_text("from helpers import Quadratic\nclass Gone(Quadratic):\n    pass\n")
    from torchpbt.backends import load_module_from_path

    gone = load_module_from_path(str(src), "gone_member").Gone
    run(t, member=gone, run_dir=t / "old")
    _mark_running(t)
    src.unlink()
    sys.modules.pop("gone_member", None)


def _interrupted_run_with_lambda(t: Path) -> None:
    run(t, run_dir=t / "old", explore=lambda h, s, r: dict(h))
    _mark_running(t)


def _interrupted_run(t: Path) -> None:
    run(t, run_dir=t / "old")
    _mark_running(t)


def _without_ray(call: Callable[[], object]) -> object:
    """As if ray were not installed: ``import ray`` fails while ``call`` runs."""
    saved = sys.modules.get("ray")
    sys.modules["ray"] = None  # type: ignore[assignment]
    try:
        return call()
    finally:
        if saved is None:
            del sys.modules["ray"]
        else:
            sys.modules["ray"] = saved


def _mark_running(t: Path) -> None:
    """As if the controller had been killed: the store says the run is still going."""
    with sqlite3.connect(t / "old" / "torchpbt.db") as db:
        db.execute("UPDATE runs SET status = 'running'")
    db.close()


def bad(id, call, exc, match, prepare=None, needs=None):
    """A table row; ``needs`` names the change outside this test's reach that makes it pass.

    Such a row is a strict xfail that only counts a failed check (wrong message, no error,
    something written), so a broken ``prepare`` still fails loudly.
    """
    marks = [pytest.mark.xfail(strict=True, reason=needs,
                               raises=(AssertionError, pytest.fail.Exception))] if needs else []
    return pytest.param(prepare, call, exc, match, id=id, marks=marks)


CASES = [
    # -- search space --
    bad("float-low-not-below-high", lambda t: run(t, space={"lr": pbt.Float(1.0, 0.1)}),
        pbt.SpaceError, r"Float\(1\.0, 0\.1\): low must be < high; swap them or widen"),
    bad("choice-nan", lambda t: run(t, space={"lr": pbt.Choice([math.nan, 0.5])}),
        pbt.SpaceError, r"Choice\(\[nan, 0\.5\]\): nan is not a finite number.*drop it"),
    bad("choice-inf", lambda t: run(t, space={"lr": pbt.Choice([0.5, math.inf])}),
        pbt.SpaceError, r"inf is not a finite number and cannot be stored; drop it"),
    bad("run-dir-not-a-path", lambda t: run(t, run_dir=5),
        TypeError, r"run_dir=5 \(int\) is not a path; give a folder path"),
    bad("ready-every-above-steps", lambda t: run(t, ready_every=20),
        ValueError, r"ready_every=20 > steps=10: no member would ever be ready.*give "
                    r"ready_every <= steps"),
    bad("burn-in-not-below-steps", lambda t: run(t, burn_in=10),
        ValueError, r"burn_in=10 >= steps=10: no exploit could ever happen; give burn_in < steps"),
    bad("float-nan-bound", lambda t: run(t, space={"lr": pbt.Float(math.nan, 1.0)}),
        pbt.SpaceError, r"Float\(nan, 1\.0\): low must be a finite number; give real bounds"),
    bad("log-scale-low-not-positive",
        lambda t: run(t, space={"lr": pbt.Float(0.0, 1.0, log=True)}),
        pbt.SpaceError, r"a log scale needs low > 0; use a positive lower bound or log=False"),
    bad("choice-empty", lambda t: run(t, space={"opt": pbt.Choice([])}),
        pbt.SpaceError, r"Choice\(\[\]\) has no values; give at least one"),
    bad("choice-repeated", lambda t: run(t, space={"opt": pbt.Choice(["sgd", "sgd"])}),
        pbt.SpaceError, r"has repeated values; list each value once"),
    bad("choice-object-value", lambda t: run(t, space={"opt": pbt.Choice([torch.optim.SGD])}),
        pbt.SpaceError, r"only str, int, float, bool or None can be stored\. Map names to objects"),
    bad("int-float-bounds", lambda t: run(t, space={"n": pbt.Int(1.5, 10)}),
        pbt.SpaceError, r"Int\(1\.5, 10\): low must be an int; use Float for reals"),
    bad("space-empty", lambda t: run(t, space={}),
        pbt.SpaceError, r"search space \{\} is not a non-empty dict; give one such as"),
    bad("space-value-not-a-domain", lambda t: run(t, space={"lr": 0.1}),
        pbt.SpaceError, r"'lr' is 0\.1; wrap it as torchpbt\.Float, Int or Choice"),
    # -- strategies --
    bad("exploit-string", lambda t: run(t, exploit="truncation"),
        ValueError, r"exploit='truncation' is not a strategy; use torchpbt\.Truncation\(\)"),
    bad("exploit-class-not-instance", lambda t: run(t, exploit=pbt.Truncation),
        ValueError, r"exploit=Truncation is a class, not a strategy; pass an instance such as "
                    r"Truncation\(\)"),
    bad("exploit-wrong-signature", lambda t: run(t, exploit=lambda member: None),
        ValueError, r"cannot be called as exploit\(member, population, rng\).*def my_exploit"),
    bad("explore-string", lambda t: run(t, explore="perturb"),
        ValueError, r"explore='perturb' is not a strategy; use torchpbt\.Perturb\(\)"),
    bad("explore-class-not-instance", lambda t: run(t, explore=pbt.Perturb),
        ValueError, r"explore=Perturb is a class, not a strategy; pass an instance such as "
                    r"Perturb\(\)"),
    bad("truncation-quantile-0.9", lambda t: run(t, exploit=pbt.Truncation(0.9)),
        ValueError, r"Truncation\(quantile=0\.9\): quantile must be in \[0, 0\.5\]"),
    bad("ttest-alpha-2", lambda t: run(t, exploit=pbt.TTest(alpha=2)),
        ValueError, r"TTest\(alpha=2\): alpha must be in \(0, 1\), e\.g\. 0\.05"),
    bad("ttest-window-1", lambda t: run(t, exploit=pbt.TTest(window=1)),
        ValueError, r"TTest\(window=1\): window must be an int >= 2 .*e\.g\. 10"),
    bad("perturb-negative-factors", lambda t: run(t, explore=pbt.Perturb((-0.8, 1.2))),
        ValueError, r"factors must be finite numbers > 0; give e\.g\. \(0\.8, 1\.2\)"),
    bad("perturb-resample-probability-1.5",
        lambda t: run(t, explore=pbt.Perturb(resample_probability=1.5)),
        ValueError, r"resample_probability=1\.5\): must be in \[0, 1\]; give e\.g\. 0\.25"),
    bad("pb2-choice-hparam",
        lambda t: run(t, space={"lr": pbt.Float(0.01, 0.1), "opt": pbt.Choice(["sgd", "adam"])},
                      explore=pbt.PB2()),
        ValueError, r"PB2 models numeric and ordered hparams only; \['opt'\] are unordered "
                    r"Choice/Gene hparams\. Use explore=torchpbt\.Perturb\(\)"),
    bad("pb2-gene-hparam", lambda t: run(t, member=TinyNAS, space=NAS_SPACE, exploit=Mixing(),
                                         explore=pbt.PB2()),
        ValueError, r"PB2 models numeric and ordered hparams only; \['c0', 'c1'\].*torchpbt\.Perturb"),
    bad("pb2-min-points-0", lambda t: run(t, explore=pbt.PB2(min_points=0)),
        ValueError, r"PB2\(min_points=0\): give an int >= 1"),
    # -- run options --
    bad("population-1", lambda t: run(t, population=1),
        ValueError, r"population=1: PBT needs at least 2 members"),
    bad("ready-every-0", lambda t: run(t, ready_every=0),
        ValueError, r"ready_every=0: give a positive number of steps"),
    bad("steps-0", lambda t: run(t, steps=0),
        ValueError, r"steps=0: give a positive per-member step budget"),
    bad("steps-not-int", lambda t: run(t, steps=10.5),
        ValueError, r"steps=10\.5 must be an int"),
    bad("mode-maximize", lambda t: run(t, mode="maximize"),
        ValueError, r"mode='maximize': use 'max' \(higher score is better\) or 'min'"),
    bad("burn-in-negative", lambda t: run(t, burn_in=-1),
        ValueError, r"burn_in=-1: give a non-negative number of steps"),
    bad("explore-when-sometimes", lambda t: run(t, explore_when="sometimes"),
        ValueError, r"explore_when='sometimes': use 'exploit' .* or 'ready'"),
    bad("sync-not-bool", lambda t: run(t, sync="no"),
        ValueError, r"sync='no'.*True.*False"),
    bad("seed-string", lambda t: run(t, seed="abc"),
        ValueError, r"seed='abc' must be an int"),
    bad("workers-0", lambda t: run(t, workers=0),
        ValueError, r"workers=0: give a positive int"),
    bad("backend-gpu", lambda t: run(t, backend="gpu"),
        ValueError, r"backend='gpu': use 'serial', 'local', 'workers', 'ray' or 'vectorized'"),
    bad("backend-not-a-backend", lambda t: run(t, backend=object()),
        ValueError, r"backend=<object .*>: use 'serial', .* or pass a torchpbt\.backends\.Backend "
                    r"instance"),
    bad("worker-timeout-zero", lambda t: run(t, backend="workers", worker_timeout=0),
        ValueError, r"worker_timeout=0: give seconds > 0"),
    bad("worker-timeout-text", lambda t: run(t, worker_timeout="1m"),
        ValueError, r"worker_timeout='1m': give seconds > 0"),
    bad("backend-ray-not-installed", lambda t: _without_ray(lambda: run(t, backend="ray")),
        ImportError, r"backend='ray' needs the ray package, which is not installed; install "
                     r"it with pip install 'torchpbt\[ray\]'"),
    bad("resume-backend-ray-not-installed",
        lambda t: _without_ray(lambda: pbt.resume(t / "old", backend="ray", progress=False)),
        ImportError, r"backend='ray' needs the ray package.*pip install 'torchpbt\[ray\]'",
        prepare=_interrupted_run),
    bad("devices-not-a-device", lambda t: run(t, devices=["gpu9"]),
        ValueError, r"'gpu9' is not a torch device; use 'cpu', 'cuda:0', \.\.\. or 'auto'"),
    bad("devices-empty", lambda t: run(t, devices=[]),
        ValueError, r"devices=\[\] names no device; use 'cpu' or 'auto'"),
    bad("devices-cuda-absent", lambda t: run(t, devices="cuda:7"),
        ValueError, r"'cuda:7' is not available.*use 'cpu'"),
    bad("initial-hparams-wrong-length", lambda t: run(t, initial_hparams=[{"lr": 0.1}] * 3),
        ValueError, r"initial_hparams has 3 entries; give one per member \(population=2\)"),
    bad("initial-hparams-out-of-bounds",
        lambda t: run(t, initial_hparams=[{"lr": 0.1}, {"lr": 5.0}]),
        pbt.SpaceError, r"initial_hparams\[1\]: lr=5\.0 is outside Float\(.*\); give a number "
                        r"within its bounds"),
    bad("initial-hparams-unknown-name",
        lambda t: run(t, initial_hparams=[{"lr": 0.1}, {"lr": 0.1, "beta": 1}]),
        pbt.SpaceError, r"initial_hparams\[1\] names unknown hyperparameter\(s\) \['beta'\]; "
                        r"the space has \['lr'\]: use only those names"),
    bad("knowledge-sharing-not-options", lambda t: run(t, knowledge_sharing={"alpha": 0.5}),
        TypeError, r"knowledge_sharing=\{'alpha': 0\.5\}: pass torchpbt\.KnowledgeSharing"),
    bad("knowledge-sharing-alpha-1.5",
        lambda t: run(t, knowledge_sharing=pbt.KnowledgeSharing(alpha=1.5)),
        ValueError, r"alpha=1\.5\): alpha must be in \[0, 1\]"),
    bad("knowledge-sharing-alpha-unknown-hparam",
        lambda t: run(t, knowledge_sharing=pbt.KnowledgeSharing(alpha="kd")),
        ValueError, r"alpha='kd'\) names no hyperparameter.*Add e\.g\. 'kd': torchpbt\.Float"),
    bad("knowledge-sharing-top-k-above-population",
        lambda t: run(t, knowledge_sharing=pbt.KnowledgeSharing(top_k=3)),
        ValueError, r"top_k=3\): top_k must be an int in \[1, population=2\]"),
    bad("knowledge-sharing-temperature-0",
        lambda t: run(t, knowledge_sharing=pbt.KnowledgeSharing(temperature=0)),
        ValueError, r"temperature=0\): give a temperature > 0"),
    # -- the member class --
    bad("member-instance-not-class", lambda t: run(t, member=Quadratic()),
        TypeError, r"must be a class \(subclass torchpbt\.Member or TorchMember\), not an "
                   r"instance"),
    bad("member-missing-train", lambda t: run(t, member=NoTrain),
        TypeError, r"NoTrain does not implement train; a member needs setup, train"),
    bad("member-constructor-needs-args", lambda t: run(t, member=NeedsArgs),
        PreflightError, r"NeedsArgs\(\) raised TypeError.*Make the class constructible with no arguments"),
    bad("setup-raises", lambda t: run(t, member=SetupFails),
        PreflightError, r"SetupFails\.setup\(\) raised FileNotFoundError: no dataset at "
                        r"/data/missing \(while torchpbt checked the member before training; nothing "
                        r"was written\)\. Fix SetupFails\.setup\(\)"),
    bad("apply-hparams-raises", lambda t: run(t, member=BadOptimizerKey, space=SPACE),
        PreflightError, r"BadOptimizerKey\.apply_hparams\(\) raised KeyError.*no param_group "
                        r"key.*Fix BadOptimizerKey\.optimizer_hparams"),
    bad("evaluate-returns-str", lambda t: run(t, member=ReturnsText),
        TypeError, r"ReturnsText\.evaluate\(\) .*returned str 'good'; evaluate\(\) must return "
                   r"a float"),
    bad("evaluate-returns-none", lambda t: run(t, member=ReturnsNone),
        TypeError, r"ReturnsNone\.evaluate\(\) .*returned NoneType None; evaluate\(\) must "
                   r"return a float"),
    bad("evaluate-returns-vector", lambda t: run(t, member=ReturnsVector),
        TypeError, r"ReturnsVector\.evaluate\(\) .*returned a Tensor of shape \(3,\); "
                   r"evaluate\(\) must return a float"),
    bad("evaluate-needs-training", lambda t: run(t, member=EvaluateNeedsTraining),
        PreflightError, r"EvaluateNeedsTraining\.evaluate\(\) raised AttributeError.*Make "
                        r"EvaluateNeedsTraining\.evaluate\(\) work right after setup\(\)"),
    bad("state-dict-custom-object", lambda t: run(t, member=OpaqueState),
        PreflightError, r"OpaqueState\.state_dict\(\) cannot be checkpointed: "
                        r"state\['extra'\]\['tokenizer'\] is a [\w.]*Opaque\. Keep only "
                        r"tensors and plain Python values"),
    bad("state-dict-lambda", lambda t: run(t, member=LambdaState),
        PreflightError, r"LambdaState\.state_dict\(\) cannot be checkpointed: "
                        r"state\['schedule'\] is a builtins\.function\. Keep only "
                        r"tensors and plain Python values"),
    bad("load-state-dict-mismatch", lambda t: run(t, member=LoadMismatch),
        PreflightError, r"LoadMismatch\.load_state_dict\(\) raised KeyError: 'weights'.*accept "
                        r"what LoadMismatch\.state_dict\(\) returns"),
    # -- run directory and store --
    bad("run-dir-is-a-file", lambda t: run(t),
        NotADirectoryError, r"run_dir .*run is a file; give a directory path",
        prepare=_file_at_run_dir),
    bad("run-dir-inside-a-file", lambda t: run(t, run_dir=t / "afile" / "run"),
        NotADirectoryError, r"afile is a file; give a run_dir inside a directory",
        prepare=_file_as_parent),
    bad("run-dir-already-holds-a-run", lambda t: run(t),
        FileExistsError, r"already holds a run; .*pass a new run_dir",
        prepare=_existing_run),
    bad("storage-cannot-connect",
        lambda t: run(t, storage="sqlite:////nonexistent-dir/x/y.db"),
        StoreError, r"cannot connect to store .*nonexistent-dir.*Check the URL"),
    bad("storage-newer-schema", lambda t: run(t, storage=_old_db_url(t)),
        StoreError, r"schema version 99, newer than this torchpbt's \d+; upgrade torchpbt",
        prepare=_newer_schema),
    bad("load-missing-run-dir", lambda t: pbt.load(t / "run"),
        StoreError, r"run directory .*run does not exist; check the path"),
    bad("load-dir-without-run", lambda t: pbt.load(t / "run"),
        StoreError, r"holds no torchpbt\.db, so it is not a torchpbt run directory; pass the "
                    r"run_dir a run was written to", prepare=_plain_dir),
    bad("load-newer-schema", lambda t: pbt.load(t / "old"),
        StoreError, r"schema version 99, newer than this torchpbt's \d+; upgrade torchpbt",
        prepare=_newer_schema),
    bad("inherit-hparams-string", lambda t: run(t, inherit_hparams="yes"),
        ValueError, r"inherit_hparams='yes': give True or False"),
    bad("tensorboard-not-a-path", lambda t: run(t, tensorboard=5),
        ValueError, r"tensorboard=5: give True or a log directory"),
    bad("max-retries-negative", lambda t: run(t, max_retries=-1),
        ValueError, r"max_retries=-1: give an int >= 0"),
    bad("resume-missing-run-dir", lambda t: pbt.resume(t / "run", progress=False),
        StoreError, r"run directory .*run does not exist; check the path"),
    bad("resume-dir-without-run", lambda t: pbt.resume(t / "run", progress=False),
        StoreError, r"holds no torchpbt\.db, so it is not a torchpbt run directory",
        prepare=_plain_dir),
    bad("resume-newer-schema", lambda t: pbt.resume(t / "old", progress=False),
        StoreError, r"schema version 99, newer than this torchpbt's \d+; upgrade torchpbt",
        prepare=_newer_schema),
    bad("resume-member-not-importable", lambda t: pbt.resume(t / "old", progress=False),
        StoreError, r"cannot import the run's member class Gone.*pass member=YourClass",
        prepare=_run_with_lost_member),
    bad("resume-lambda-explore", lambda t: pbt.resume(t / "old", progress=False),
        StoreError, r"explore .*lambda.*was not stored.*pass it again: "
                    r"torchpbt\.resume\(RUN_DIR, explore=\.\.\.\)",
        prepare=_interrupted_run_with_lambda),
    # -- architecture search (torchpbt.nas) --
    bad("mixing-without-genes", lambda t: run(t, exploit=Mixing()),
        ValueError, r"changes architectures but the space has no genes; add them"),
    bad("mixing-member-not-nas", lambda t: run(t, space=NAS_SPACE, exploit=Mixing()),
        TypeError, r"needs a member that can be mixed; subclass torchpbt\.nas\.NASMember"),
    bad("mixing-lam-1.5", lambda t: run(t, member=TinyNAS, space=NAS_SPACE,
                                        exploit=Mixing(lam=1.5)),
        ValueError, r"Mixing\(lam=1\.5\): must be a number in \[0, 1\]"),
    bad("mixing-lam-and-gamma-0", lambda t: run(t, member=TinyNAS, space=NAS_SPACE,
                                                exploit=Mixing(lam=0, gamma=0)),
        ValueError, r"would zero every donor layer; use lam=1, gamma=0 to copy"),
    bad("mutation-fraction-0.7", lambda t: run(t, member=TinyNAS, space=NAS_SPACE,
                                               exploit=Mutation(fraction=0.7)),
        ValueError, r"Mutation\(fraction=0\.7\): must be in \(0, 0\.5\]"),
    bad("gene-empty", lambda t: run(t, space={"lr": pbt.Float(0.01, 0.1),
                                              "c0": pbt.nas.Gene([])}),
        pbt.SpaceError, r"Gene\(\[\]\) needs layer names.*give e\.g\. Gene\("),
    bad("arch-space-bad-position", lambda t: pbt.nas.ArchSpace({"0cell": ["conv"]}),
        pbt.nas.GenomeError, r"must be a Python identifier"),
    bad("nas-member-arch-not-archspace",
        lambda t: run(t, member=NoArch, space=NAS_SPACE, exploit=Mixing()),
        PreflightError, r"NoArch\.setup\(\) raised GenomeError.*must be a "
                        r"torchpbt\.nas\.ArchSpace"),
]


def _tree(root: Path) -> dict[str, str]:
    """Every path under root with the sha256 of each file: what 'nothing written' compares."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("prepare, call, exc, match", CASES)
def test_bad_input_fails_up_front_with_problem_and_fix(tmp_path, prepare, call, exc, match):
    if prepare is not None:
        prepare(tmp_path)
    before = _tree(tmp_path)
    db = tmp_path / "run" / "torchpbt.db"
    db_hash = hashlib.sha256(db.read_bytes()).hexdigest() if db.is_file() else None
    with pytest.raises(exc, match=match) as info:
        call(tmp_path)
    if isinstance(info.value, PreflightError):
        assert info.value.__cause__ is not None, "the member's own error is kept as the cause"
    assert "\n" not in str(info.value), "one message, not a dump"
    assert _tree(tmp_path) == before, "nothing may be written"
    if db_hash is not None:
        assert hashlib.sha256(db.read_bytes()).hexdigest() == db_hash
    elif "run" not in before:
        assert not (tmp_path / "run").exists()


def test_the_table_is_large_enough():
    assert len(CASES) >= 27


# -- what preflight accepts --------------------------------------------------------------

class NaNAtStart(Quadratic):
    def evaluate(self):
        return float("nan")


class InfTensorScore(Quadratic):
    def evaluate(self):
        return torch.tensor([-math.inf])


class NumpyScore(Quadratic):
    def evaluate(self):
        return np.float32(0.5)


class TrainIsNeverCalled(Quadratic):
    def train(self, steps):
        raise AssertionError("preflight must not train")


@pytest.mark.parametrize("member", [Quadratic, TinyNet, NaNAtStart, InfTensorScore, NumpyScore,
                                    TrainIsNeverCalled])
def test_preflight_accepts_working_members_and_numeric_faults(member):
    space = SPACE if issubclass(member, TinyNet) else QSPACE
    hparams = pbt.Space(space).sample(random.Random(0))
    preflight(member, hparams)


def test_preflight_leaves_the_callers_random_generators_alone():
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    preflight(TinyNet, {"lr": 0.1, "momentum": 0.5, "batch_size": 8})
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_run_whose_every_interval_fails_stops_loudly(tmp_path):
    # preflight leaves a NaN score to the run (it may depend on training); when every
    # interval then fails, the run stops with the reason instead of retrying for ever
    with pytest.raises(pbt.NoProgress, match="cannot make progress"):
        run(tmp_path, member=NaNAtStart)
    r = pbt.load(tmp_path / "run")
    assert r.run["status"] == "failed"
    assert "cannot make progress" in r.run["scheduler_state"]["stopped"]
    assert r.events and all(s["score"] is None for s in r.scores)


def test_numpy_integers_are_ints_and_a_home_run_dir_is_expanded(tmp_path, monkeypatch):
    dom = pbt.Int(np.int64(1), np.int64(8))
    assert (dom.low, dom.high) == (1, 8) and type(dom.low) is int
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    r = pbt.run(Quadratic, QSPACE, **{**BASE, "run_dir": "~/home-run"})
    assert r.run_dir == tmp_path / "home-run" and not (tmp_path / "~").exists()
    assert pbt.load("~/home-run").best_score == r.best_score


def _unknown_donor(member, population, rng):
    return 999


def _nan_explore(hparams, space, rng):
    return {**hparams, "lr": math.nan}


def _raising_exploit(member, population, rng):
    raise RuntimeError("bug in my exploit")


@pytest.mark.parametrize("kw, exc, match", [
    ({"exploit": _unknown_donor}, ValueError,
     r"exploit <function _unknown_donor.*returned 999 for member \d; return None \(keep "
     r"training\) or the id of another member, one of \[0, 1\]"),
    ({"explore": _nan_explore, "exploit": pbt.Truncation(0.5)}, pbt.SpaceError,
     r"explore <function _nan_explore.*returned lr=nan; return finite values inside the space"),
    ({"exploit": _raising_exploit}, RuntimeError, r"bug in my exploit"),
], ids=["unknown-donor", "nan-explore", "raising-exploit"])
def test_a_user_strategy_error_names_the_strategy_and_marks_the_run_failed(tmp_path, kw, exc,
                                                                          match):
    with pytest.raises(exc, match=match):
        run(tmp_path, **kw)
    r = pbt.load(tmp_path / "run")
    assert r.run["status"] == "failed"  # not "running" for ever
    assert re.search(match, r.run["scheduler_state"]["stopped"])


def test_the_cli_prints_bad_input_as_one_line_and_exits_2(tmp_path):
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-m", "torchpbt", "run", str(root / "examples" / "mnist.py"),
                        "--", "--population", "1", "--quiet"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root / "src")})
    assert p.returncode == 2
    assert p.stderr.strip() == ("torchpbt run: population=1: PBT needs at least 2 members to "
                                "exploit; pass population=2 or more.")
    assert list(tmp_path.iterdir()) == []


class TrainReturnsText(Quadratic):
    def train(self, steps):
        super().train(steps)
        return "loss is low"


class TrainRaises(Quadratic):
    def train(self, steps):
        raise RuntimeError("boom in train")


@pytest.mark.parametrize("member, why", [
    (TrainReturnsText, r"TypeError: TrainReturnsText\.train\(\) returned str 'loss is low'; train\(\) "
                       r"must return the last loss as a float"),
    (TrainRaises, r"RuntimeError: boom in train"),
])
def test_every_interval_failing_stops_with_the_first_error(tmp_path, member, why):
    with pytest.raises(pbt.NoProgress, match=r"cannot make progress\. The first failure "
                                              r"\(member 0, step 5\): " + why) as info:
        run(tmp_path, member=member)
    assert "Traceback" in info.value.traceback  # the worker's full traceback, for the CLI
    r = pbt.load(tmp_path / "run")
    assert r.run["status"] == "failed" and re.search(why, r.run["scheduler_state"]["stopped"])


def test_the_cli_exits_1_with_the_reason_when_a_run_cannot_make_progress(tmp_path):
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "failing.py").write_text(
        "import torchpbt as pbt\n"
        "class M(pbt.Member):\n"
        "    def setup(self, hparams): self.w = 0.0\n"
        "    def train(self, steps): raise RuntimeError('boom in train')\n"
        "    def evaluate(self): return self.w\n"
        "    def state_dict(self): return {'w': self.w}\n"
        "    def load_state_dict(self, state): self.w = state['w']\n"
        "def main(argv):\n"
        "    pbt.run(M, {'lr': pbt.Float(0.1, 1.0)}, population=2, steps=10, ready_every=5,\n"
        "            backend='serial', progress=False, run_dir='run')\n")
    p = subprocess.run([sys.executable, "-m", "torchpbt", "run", "failing.py"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(root / "src")})
    assert p.returncode == 1
    assert "Traceback" in p.stderr and "RuntimeError: boom in train" in p.stderr
    assert p.stderr.rstrip().splitlines()[-1].startswith(
        "torchpbt run: the last 6 intervals (of every member) failed")
    assert pbt.load(tmp_path / "run").run["status"] == "failed"
