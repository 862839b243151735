"""Group commit: the outcomes one ``wait()`` returns are committed in one transaction,
and the run is the same as handling them one by one, also when killed mid-batch."""

from __future__ import annotations

import heapq
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SPACE, TinyNet
from test_resume import OPTS, _log

import torchpbt as pbt
import torchpbt.engine.runner as runner
from torchpbt.backends.serial import SerialBackend
from torchpbt.store import SQLStore

TESTS = Path(__file__).parent


class Batched(SerialBackend):
    """Returns every queued interval of the earliest step at once, as a pool that
    finished several would (in the serial order, so the run must not change)."""

    def wait(self):
        step = self._queue[0][0]
        out = []
        while self._queue and self._queue[0][0] == step:
            out.append(self.runner.run(heapq.heappop(self._queue)[3]))
        return out


def _batched(kind, member_cls, checkpoint_dir, workers, devices, started=None):
    return Batched(member_cls, checkpoint_dir, devices[0])


def install() -> None:
    """For a child process: every serial run uses :class:`Batched`."""
    runner.make_backend = _batched


SCRIPT = """
import json, sys
sys.path[:0] = [{tests!r}, {tests!r} + "/.."]
import torchpbt as pbt
import test_group_commit
from helpers import SPACE, TinyNet
test_group_commit.install()
pbt.run(TinyNet, SPACE, exploit=pbt.Truncation(0.25), run_dir={run_dir!r},
        **json.loads({opts!r}))
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return pbt.run(TinyNet, SPACE, run_dir=tmp_path_factory.mktemp("ref") / "run", **OPTS)


def test_a_batch_is_one_transaction_and_the_run_is_unchanged(tmp_path, monkeypatch, reference):
    sizes: list[int] = []
    record_steps = SQLStore.record_steps

    def spy(self, run_id, steps, *args, **kwargs):
        sizes.append(len(steps))
        return record_steps(self, run_id, steps, *args, **kwargs)

    monkeypatch.setattr(SQLStore, "record_steps", spy)
    run_dir = tmp_path / "run"
    backend = Batched(TinyNet, str(run_dir / "checkpoints"), "cpu")  # run(backend=instance)
    batched = pbt.run(TinyNet, SPACE, run_dir=run_dir, **{**OPTS, "backend": backend})
    assert _log(batched) == _log(reference)
    population = OPTS["population"]
    assert sizes[:-1] == [population] * (len(sizes) - 1)  # one commit per generation
    assert sum(sizes[:-1]) == len(reference.intervals)


@pytest.mark.parametrize("point", ["outcome:3", "store_commit:3", "after_commit:2",
                                   "before_submit:4"])
def test_killed_mid_batch_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, reference,
                                                             point):
    run_dir = tmp_path / "run"
    opts = {k: v for k, v in OPTS.items() if k != "exploit"}
    code = SCRIPT.format(tests=str(TESTS), run_dir=str(run_dir), opts=json.dumps(opts))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TORCHPBT_CRASH_AT": point}, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    monkeypatch.setattr(runner, "make_backend", _batched)
    assert _log(pbt.resume(run_dir, progress=False)) == _log(reference)
