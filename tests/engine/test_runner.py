"""End-to-end runs through the serial and local backends, the store and checkpoints."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    QSPACE,
    SPACE,
    Boom,
    DiesInWorker,
    NaNScore,
    Quadratic,
    ReturnsText,
    TinyNet,
    chains_are_complete,
)

import torchpbt as pbt


def _log(result: pbt.Result) -> list[tuple]:
    """The decision log without timestamps/durations: what must be reproducible."""
    ev = [(e["kind"], e["member_id"], e["step"], e["donor_id"], e["donor_step"],
           e["old_hparams"], e["new_hparams"], e["operations"]) for e in result.events]
    iv = [(i["member_id"], i["start_step"], i["end_step"], i["hparams"], i["start_checkpoint"],
           i["end_checkpoint"], i["score"]) for i in result.intervals]
    return ev + iv


def run_tiny(tmp_path, name="run", **kw):
    opts = dict(population=4, ready_every=10, steps=60, backend="serial", seed=3,
                progress=False, run_dir=tmp_path / name)
    opts.update(kw)
    return pbt.run(TinyNet, SPACE, **opts)


def test_serial_same_seed_gives_identical_event_log_and_scores(tmp_path):
    a = run_tiny(tmp_path, "a")
    b = run_tiny(tmp_path, "b")
    assert len(a.exploits) > 0, "the test needs exploits to be meaningful"
    assert _log(a) == _log(b)
    c = run_tiny(tmp_path, "c", seed=4)
    assert _log(a) != _log(c)


def test_result_has_best_member_schedule_and_lineage(tmp_path):
    r = run_tiny(tmp_path)
    finals = {m["member_id"]: m["score"] for m in r.members}
    assert r.best_score == max(finals.values())
    assert all(m["status"] == "done" and m["step"] == 60 for m in r.members)
    sched = r.schedule()
    assert sched[0]["from_step"] == 0
    assert sum(s["to_step"] - s["from_step"] for s in sched) == sched[-1]["to_step"]
    assert r.lineage()[-1] == r.best_member_id
    # 4 members x 6 intervals, each scored once
    assert len(r.intervals) == 24 and len(r.scores) == 24


def test_exploit_points_at_donor_checkpoint_without_copying(tmp_path):
    r = run_tiny(tmp_path)
    written = {i["end_checkpoint"] for i in r.intervals}
    nxt = {(i["member_id"], i["start_step"]): i for i in r.intervals}
    assert r.exploits
    for e in r.exploits:
        donor_key = e["detail"]["checkpoint"]
        assert donor_key in written  # an existing checkpoint, never a fresh copy
        follow = nxt.get((e["member_id"], e["step"]))
        if follow is None:  # exploit at the last ready point has no next interval
            continue
        assert follow["start_checkpoint"] == donor_key
        assert follow["hparams"] == e["new_hparams"]
    files = {p.stem for p in (r.run_dir / "checkpoints").glob("*.pt")}
    # garbage collected: only what members point at is left, one file per distinct state
    assert files == {m["checkpoint"] for m in r.members}


class ReportsLr(TinyNet):
    """Returns the lr the optimizer really had while training, as its 'loss'."""

    def train(self, steps):
        super().train(steps)
        return self.seen_lr


def test_lr_after_exploit_is_the_explored_value_not_the_donors(tmp_path):
    r = pbt.run(ReportsLr, SPACE, population=4, ready_every=10, steps=60, backend="serial",
                seed=3, progress=False, run_dir=tmp_path / "r")
    after_exploit = 0
    for iv in r.intervals:
        assert iv["loss"] == pytest.approx(iv["hparams"]["lr"], rel=1e-12)
        e = [e for e in r.exploits if e["member_id"] == iv["member_id"]
             and e["step"] == iv["start_step"]]
        if e:
            donor_iv = next(d for d in r.intervals if d["member_id"] == e[0]["donor_id"]
                            and d["end_step"] == e[0]["donor_step"])
            # the donor's optimizer state (restored) had another lr; ours won
            assert donor_iv["hparams"]["lr"] != iv["hparams"]["lr"]
            after_exploit += 1
    assert after_exploit > 0


def test_nan_member_is_replaced_and_run_completes(tmp_path):
    init = [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.45}, {"lr": 0.2}]
    r = pbt.run(NaNScore, QSPACE, population=4, ready_every=5, steps=30, backend="serial",
                initial_hparams=init, progress=False, run_dir=tmp_path / "r")
    fails = [e for e in r.events if e["kind"] == "fail"]
    assert fails and fails[0]["member_id"] == 2 and fails[0]["step"] == 5
    replaced = [e for e in r.exploits if e["member_id"] == 2 and e["step"] == 5]
    assert replaced and replaced[0]["detail"]["reason"] == "failed"
    assert replaced[0]["donor_id"] != 2
    assert all(m["status"] == "done" for m in r.members)
    nan_scores = [s for s in r.scores if not s["valid"]]
    assert nan_scores and all(s["score"] is None for s in nan_scores)


def test_exception_in_training_is_recorded_and_member_replaced(tmp_path):
    init = [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.3}, {"lr": 0.15}]
    r = pbt.run(Boom, QSPACE, population=4, ready_every=5, steps=20, backend="serial",
                initial_hparams=init, explore=None, progress=False, run_dir=tmp_path / "r")
    fail = next(e for e in r.events if e["kind"] == "fail")
    assert fail["member_id"] == 2 and "boom: lr too high" in fail["detail"]["error"]
    assert any(e["member_id"] == 2 and e["detail"].get("reason") == "failed" for e in r.exploits)
    assert all(m["status"] == "done" for m in r.members)


def test_evaluate_returning_text_is_refused_before_the_run_starts(tmp_path):
    # the preflight scores one fresh member before anything is written
    with pytest.raises(TypeError, match=r"ReturnsText\.evaluate\(\).*must return a float"):
        pbt.run(ReturnsText, QSPACE, population=2, ready_every=5, steps=10, backend="serial",
                progress=False, run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_mode_min_prefers_lower_scores(tmp_path):
    # with mode="min" the *worst* quadratic members (most negative score... i.e. lowest) win
    r = pbt.run(Quadratic, QSPACE, population=4, ready_every=5, steps=20, backend="serial",
                mode="min", progress=False, run_dir=tmp_path / "r")
    finals = [m["score"] for m in r.members]
    assert r.best_score == min(finals)
    assert r.exploits
    for e in r.exploits:
        own = next(s["score"] for s in r.scores
                   if s["member_id"] == e["member_id"] and s["step"] == e["step"])
        assert e["detail"]["score"] == own
        assert e["detail"]["donor_score"] < own


def test_sync_mode_runs_generations(tmp_path):
    r = run_tiny(tmp_path, sync=True)
    steps_in_order = [i["end_step"] for i in r.intervals]
    assert steps_in_order == sorted(steps_in_order), "a generation finishes before the next"
    assert all(m["status"] == "done" for m in r.members)


def test_sync_mode_members_keep_their_latest_score(tmp_path):
    # a generation's decisions come with its last report: the others' scores must not
    # stay at the previous generation's (best_member would be whoever reported last)
    r = run_tiny(tmp_path, sync=True)
    for m in r.members:
        last = max((i for i in r.intervals if i["member_id"] == m["member_id"]),
                   key=lambda i: i["end_step"])
        assert m["score"] == last["score"]
    assert r.best_score == max(m["score"] for m in r.members)


def test_local_backend_two_workers_completes_with_full_log(tmp_path):
    r = run_tiny(tmp_path, backend="local", workers=2)
    # a copy of a donor ahead skips the intervals between (timing decides how often)
    assert len(r.intervals) <= 24 and r.member_steps <= 24 * r.run["config"]["ready_every"]
    chains_are_complete(r, r.run["config"]["steps"])
    assert {i["worker"] for i in r.intervals}.__len__() >= 1
    assert all(m["status"] == "done" for m in r.members)
    assert all(s["valid"] for s in r.scores)


LONG_LOCAL_RUN = """
import sys
sys.path[:0] = [{tests!r}, {tests!r} + "/.."]
from helpers import QSPACE, Quadratic
import torchpbt as pbt
if __name__ == "__main__":
    r = pbt.run(Quadratic, QSPACE, population=2, steps=1500, ready_every=1, backend="local",
                workers=2, exploit=None, explore=None, progress=False, run_dir={run!r})
    print(len(r.intervals))
"""


def test_local_backend_runs_more_intervals_than_a_pipe_holds(tmp_path):
    # each worker records the task it starts in a pipe; read only after a crash, ~2,000
    # records filled it and the next put() blocked forever: 3,000 intervals hung
    script = tmp_path / "long.py"
    script.write_text(LONG_LOCAL_RUN.format(tests=str(Path(__file__).parent),
                                            run=str(tmp_path / "r")))
    try:
        p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("a local run of 3,000 intervals hung")
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[-1] == "3000"


def test_local_backend_knows_what_each_worker_runs(tmp_path):
    # a dying worker charges its own task only: the backend must know which one it ran
    from torchpbt.backends import LocalBackend, Task

    be = LocalBackend(Quadratic, str(tmp_path / "ckpt"), workers=2)
    try:
        pids = {p.pid for p in be._procs}
        for step in range(0, 60, 5):
            for m in range(2):
                be.submit(Task(m, step, 5, {"lr": 0.1}, None, step))
            running = be.running()
            done = 0
            while done < 2:
                done += len(be.wait())
        after = be.running()
    finally:
        be.close()
    assert set(running) == {(0, 55), (1, 55)}
    assert set(running.values()) == pids  # one task per worker, none on the same process
    assert after == {}


def test_local_backend_sends_a_member_back_to_the_worker_that_holds_it(tmp_path):
    # a member moves only when its own worker is busy and another would idle: rarely
    from torchpbt.backends import LocalBackend, Task

    be = LocalBackend(Quadratic, str(tmp_path / "ckpt"), workers=2)
    last: dict[int, str] = {}
    checkpoints: dict[int, str | None] = dict.fromkeys(range(4))
    moves = 0
    try:
        for step in range(0, 100, 5):
            for m in checkpoints:
                be.submit(Task(m, step, 5, {"lr": 0.1}, checkpoints[m], step))
            done = 0
            while done < len(checkpoints):
                for out in be.wait():
                    moves += last.get(out.member_id, out.worker) != out.worker
                    last[out.member_id] = out.worker
                    checkpoints[out.member_id] = out.checkpoint
                    done += 1
    finally:
        be.close()
    assert moves <= 19 * 4 // 4, moves  # handed out at random, about half would move
    assert len(set(last.values())) == 2


def test_local_queue_prefers_a_workers_own_members_within_one_interval():
    from torchpbt.backends import Task
    from torchpbt.backends.local import _Queue

    q = _Queue()
    q.push(Task(0, 10, 5, {}, None, 0), home=0)
    q.push(Task(1, 20, 5, {}, None, 0), home=1)
    q.push(Task(2, 10, 5, {}, None, 0), home=1)
    q.push(Task(3, 30, 5, {}, None, 0), home=None)
    q.push(Task(4, 10, 5, {}, None, 0), home=None)
    assert q.take_own(1).member_id == 2  # as little advanced as any: its own worker runs it
    assert q.take_own(1) is None  # 20 > 10: members 0 and 4 go first, wherever
    assert q.take_own(0).member_id == 0
    assert q.take_own(0) is None and q.take_first().member_id == 4
    assert q.take_own(1).member_id == 1
    assert q.size == 1 and q.take_first().member_id == 3 and q.take_first() is None


def test_local_backend_survives_a_dying_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHPBT_TEST_DIE", "1")
    init = [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.45}, {"lr": 0.2}]
    r = pbt.run(DiesInWorker, QSPACE, population=4, ready_every=5, steps=20, backend="local",
                workers=2, explore=None, initial_hparams=init, progress=False,
                run_dir=tmp_path / "r")
    assert any(e["kind"] == "fail" and "died" in e["detail"]["error"] for e in r.events)
    assert all(m["status"] == "done" for m in r.members)
    assert math.isfinite(r.best_score)


def test_existing_run_dir_is_never_overwritten(tmp_path):
    run_tiny(tmp_path, steps=10)
    before = (tmp_path / "run" / "torchpbt.db").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run"):
        run_tiny(tmp_path, steps=10)
    assert (tmp_path / "run" / "torchpbt.db").read_bytes() == before


@pytest.mark.parametrize("kwargs, match", [
    ({"population": 1}, "at least 2 members"),
    ({"ready_every": 0}, "ready_every"),
    ({"steps": -5}, "steps"),
    ({"mode": "maximise"}, "mode"),
    ({"exploit": "truncation"}, "not a strategy"),
    ({"explore": 0.8}, "not a strategy"),
    ({"workers": 0}, "workers"),
    ({"backend": "cluster"}, "backend"),
    ({"initial_hparams": [{"lr": 0.1}]}, "one per member"),
    ({"devices": ["gpu9"]}, "not a torch device"),
])
def test_bad_arguments_fail_before_anything_is_written(tmp_path, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        run_tiny(tmp_path, **kwargs)
    assert not (tmp_path / "run").exists()


def test_member_missing_methods_is_refused(tmp_path):
    class Half(pbt.Member):
        def setup(self, hparams): ...
        def train(self, steps): ...

    with pytest.raises(TypeError, match="does not implement evaluate, state_dict, load_state_dict"):
        pbt.run(Half, QSPACE, population=2, progress=False, run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_progress_display_and_summary_are_printed(tmp_path, capsys):
    r = run_tiny(tmp_path, steps=20, progress=True)
    out = capsys.readouterr().out
    assert "torchpbt run summary" in out and "hparam schedule" in out
    assert str(r.run_dir.resolve()) in out.replace("\n", "") or "run directory" in out


def test_seed_everything_seeds_torch_as_manual_seed_does():
    from torchpbt.backends.worker import seed_everything

    seed_everything(123)
    a = (torch.rand(4), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    assert torch.equal(a[0], torch.rand(4)) and a[1:] == (random.random(), np.random.rand())
