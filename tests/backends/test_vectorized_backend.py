"""backend="vectorized": the same run as the serial backend, trained as one batched model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import chains_are_complete
from torch import nn

import torchpbt as pbt
from torchpbt.backends.vectorized.backend import VectorizedBackend

SPACE = {"lr": pbt.Float(0.01, 0.3, log=True), "momentum": pbt.Float(0.0, 0.95),
         "label_smoothing": pbt.Float(0.0, 0.2)}


def blobs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    centers = torch.randn(4, 8, generator=g) * 2
    y = torch.randint(4, (512,), generator=g)
    return centers[y] + torch.randn(512, 8, generator=g), y


EVAL = blobs()  # made once: random draws inside a vmapped score would differ per member


class Blobs(pbt.VectorMember):
    """Per-row losses (batch sizes may differ) and an hparam the loss reads."""

    optimizer = "sgd"

    def build(self, hparams):
        return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))

    def train_data(self):
        return blobs()

    def loss(self, model, batch, hparams):
        x, y = batch
        return F.cross_entropy(model(x), y, reduction="none") * (1 - hparams["label_smoothing"])

    def score(self, model, hparams):
        x, y = EVAL
        return -F.cross_entropy(model(x[:128]), y[:128])


class BlobsAdam(Blobs):
    optimizer = "adamw"
    optimizer_defaults = {"weight_decay": 0.01}
    batch_size = 24


def _run(tmp_path, name, backend, member=Blobs, space=SPACE, **kw):
    return pbt.run(member, space, population=4, steps=30, ready_every=10, seed=3,
                   exploit=pbt.Truncation(0.25), backend=backend, workers=1,
                   run_dir=tmp_path / name, progress=False, **kw)


@pytest.mark.parametrize("member", [Blobs, BlobsAdam])
def test_a_vectorized_run_matches_the_serial_run(tmp_path, member):
    space = {**SPACE, "batch_size": pbt.Int(8, 32)} if member is Blobs else SPACE
    serial = _run(tmp_path, "s", "serial", member, space)
    vec = _run(tmp_path, "v", "vectorized", member, space)
    a = serial.dataframe("intervals").sort_values(["member_id", "start_step"])
    b = vec.dataframe("intervals").sort_values(["member_id", "start_step"])
    assert len(a) == len(b) == 12
    torch.testing.assert_close(torch.tensor(b["score"].to_numpy()),
                               torch.tensor(a["score"].to_numpy()), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(b["loss"].to_numpy()),
                               torch.tensor(a["loss"].to_numpy()), rtol=1e-4, atol=1e-5)
    kinds = lambda r: [(e["kind"], e["member_id"], e.get("donor")) for e in r.events]  # noqa: E731
    assert kinds(vec) == kinds(serial)  # the same scheduler's decisions, in the same order
    assert vec.exploits, "the run should exploit"
    chains_are_complete(vec, 30)
    assert vec.member_steps == 4 * 30


def test_a_vectorized_checkpoint_loads_on_the_ordinary_path(tmp_path):
    vec = _run(tmp_path, "v", "vectorized")
    model = vec.member()  # built by the serial path from the vectorized checkpoint
    state = torch.load(vec.best_checkpoint, weights_only=True)
    fresh = Blobs()
    fresh.setup(vec.best_hparams)
    fresh.load_state_dict(state)
    fresh.apply_hparams(vec.best_hparams)
    assert fresh.evaluate() == pytest.approx(vec.best_score, rel=1e-4, abs=1e-5)
    assert model is not None


def test_exploit_copies_in_memory_without_reading_a_file(tmp_path, monkeypatch):
    read = []
    real = pbt.CheckpointDir.load
    monkeypatch.setattr(pbt.CheckpointDir, "load",
                        lambda self, key: read.append(key) or real(self, key))
    vec = _run(tmp_path, "v", "vectorized", space={**SPACE, "batch_size": pbt.Int(8, 32)})
    assert vec.exploits and read == []


def test_a_member_that_is_not_a_vector_member_is_refused_up_front(tmp_path):
    class Plain(pbt.Member):
        def setup(self, hparams): ...
        def train(self, steps): ...
        def evaluate(self): return 0.0
        def state_dict(self): return {}
        def load_state_dict(self, state): ...

    with pytest.raises(TypeError, match="needs a torchpbt.VectorMember"):
        _run(tmp_path, "p", "vectorized", Plain)
    assert not (tmp_path / "p").exists()


def test_non_numeric_choices_and_missing_methods_are_refused(tmp_path):
    with pytest.raises(ValueError, match="non-numeric choices"):
        _run(tmp_path, "c", "vectorized", space={**SPACE, "act": pbt.Choice(["relu", "tanh"])})

    class Half(pbt.VectorMember):
        def build(self, hparams):
            return nn.Linear(2, 2)

    with pytest.raises(TypeError, match="does not implement train_data, loss, score"):
        _run(tmp_path, "h", "vectorized", Half)


def test_a_scalar_loss_with_different_batch_sizes_fails_loudly(tmp_path):
    class Scalar(Blobs):
        def loss(self, model, batch, hparams):
            return F.cross_entropy(model(batch[0]), batch[1])

    backend = VectorizedBackend(Scalar, str(tmp_path / "ck"), 2)
    for i, b in enumerate((8, 16)):
        backend.submit(pbt.backends.Task(i, 0, 2, {"lr": 0.1, "momentum": 0.0,
                                                     "label_smoothing": 0.0, "batch_size": b},
                                         None, i))
    with pytest.raises(ValueError, match="one loss per batch row"):
        backend.wait()


CRASH_SCRIPT = """
import sys
sys.path[:0] = [{tests!r}, {tests!r} + "/.."]
import torchpbt as pbt
from test_vectorized_backend import SPACE, Blobs
pbt.run(Blobs, SPACE, population=4, steps=30, ready_every=10, seed=3,
        exploit=pbt.Truncation(0.25), backend={backend!r}, run_dir={run_dir!r}, progress=False)
"""


def _crash(run_dir, point: str, backend: str = "vectorized") -> int:
    """Run the reference configuration in a child that SIGKILLs itself at ``point``;
    return the number of intervals it recorded."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    code = CRASH_SCRIPT.format(tests=str(Path(__file__).parent), run_dir=str(run_dir),
                               backend=backend)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TORCHPBT_CRASH_AT": point}, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return len(pbt.load(run_dir).intervals)


@pytest.mark.parametrize("point", ["checkpoint_write:6", "store_commit:3", "after_commit:2"])
def test_sigkill_then_resume_equals_the_uninterrupted_vectorized_run(tmp_path, point):
    from test_resume import _log

    reference = _run(tmp_path, "ref", "vectorized")
    run_dir = tmp_path / "crashed"
    before = _crash(run_dir, point)
    resumed = pbt.resume(run_dir, member=Blobs, progress=False)
    assert resumed.run["status"] == "done" and len(resumed.intervals) > before
    # slots are rebuilt from checkpoint files: the same weights, the same decisions
    assert _log(resumed) == _log(reference)
    chains_are_complete(resumed, 30)


@pytest.mark.parametrize("first, then", [("vectorized", "serial"), ("serial", "vectorized")])
def test_a_crashed_run_resumes_on_the_other_backend(tmp_path, first, then):
    run_dir = tmp_path / "crashed"
    before = _crash(run_dir, "after_commit:2" if first == "vectorized" else "after_commit:5",
                    first)
    resumed = pbt.resume(run_dir, member=Blobs, backend=then, progress=False)
    assert resumed.run["status"] == "done" and len(resumed.intervals) > before
    workers = {iv["worker"].split(":")[0] for iv in resumed.intervals}
    assert "vectorized" in workers and len(workers) == 2  # both backends trained part of it
    chains_are_complete(resumed, 30)
