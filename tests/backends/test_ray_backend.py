"""backend="ray" against a real local Ray runtime: full runs, dead actors, Ctrl-C, resume.

One runtime is shared by the module (starting one costs several seconds); the Ctrl-C
test starts its own in a child process, as a user's script would. Ray workers take
their environment from the runtime, not from later ``monkeypatch.setenv`` calls, so
members that need a knob get it written into a module file instead.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import (
    QSPACE,
    SLOW_SCRIPT,
    SPACE,
    PacedQuadratic,
    Quadratic,
    TinyNet,
    chains_are_complete,
)

import torchpbt as pbt
from torchpbt.backends import RayBackend, Task, load_module_from_path
from torchpbt.ui.cli import main as cli_main

pytestmark = pytest.mark.slow  # end to end: processes, files, browsers

if os.environ.get("CI"):
    import ray  # CI installs the dev extra: a missing ray is a failure, not a skip
else:
    ray = pytest.importorskip("ray", reason="pip install 'torchpbt[ray]' to run the Ray tests")

TESTS = Path(__file__).parent
INIT = [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.45}, {"lr": 0.2}]


@pytest.fixture(scope="module")
def runtime():
    """One local Ray runtime for the module; backends must use it and leave it running."""
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    print(f"ray.init took {time.perf_counter() - t0:.1f} s")
    yield ray
    ray.shutdown()


def _exploits_point_at_recorded_intervals(r: pbt.Result) -> None:
    """Each exploit copies the checkpoint the donor's interval ending at donor_step wrote."""
    ends = {(i["member_id"], i["end_step"]): i["end_checkpoint"] for i in r.intervals}
    nxt = {(i["member_id"], i["start_step"]): i for i in r.intervals}
    assert r.exploits, "the test needs exploits to be meaningful"
    for e in r.exploits:
        assert ends[(e["donor_id"], e["donor_step"])] == e["detail"]["checkpoint"]
        follow = nxt.get((e["member_id"], e["step"]))
        if follow is not None:  # an exploit at the last ready point has no next interval
            assert follow["start_checkpoint"] == e["detail"]["checkpoint"]


def _comparable(r: pbt.Result) -> tuple[list, list]:
    """What a deterministic run fixes, in an order independent of arrival times."""
    iv = sorted((i["member_id"], i["start_step"], i["end_step"], sorted(i["hparams"].items()),
                 i["start_checkpoint"], i["end_checkpoint"], i["score"]) for i in r.intervals)
    ev = sorted((e["kind"], e["member_id"], e["step"], e["donor_id"], e["donor_step"],
                 str(e["new_hparams"])) for e in r.events)
    return iv, ev


def test_ray_run_completes_with_a_consistent_lineage(runtime, tmp_path):
    # lr 0.05 is always the worst member: it exploits however the actors' timing goes
    r = pbt.run(PacedQuadratic, QSPACE, population=4, ready_every=5, steps=30, backend="ray",
                workers=2, exploit=pbt.Truncation(0.25), initial_hparams=INIT, seed=3,
                progress=False, run_dir=tmp_path / "r")
    assert r.run["config"]["backend"] == "ray"
    # a copy of a donor ahead carries the donor's age, skipping the steps between: on a
    # loaded machine the actors drift apart, so fewer than 24 intervals may be needed
    assert len(r.intervals) * 5 == r.member_steps <= 4 * 30
    assert all(s["valid"] for s in r.scores)
    chains_are_complete(r, 30)
    _exploits_point_at_recorded_intervals(r)
    workers = {i["worker"] for i in r.intervals}
    assert len(workers) == 2, "two actors trained the members"
    assert f":{os.getpid()}" not in "".join(workers), "nothing trained in the controller"
    assert runtime.is_initialized(), "a runtime the backend did not start stays up"


def test_sync_ray_run_equals_the_serial_run(runtime, tmp_path):
    # in generational mode no decision depends on which member reports first, and every
    # interval is seeded by (member, step): the backend must not change a thing
    opts = dict(population=4, ready_every=10, steps=40, sync=True, seed=5, progress=False)
    serial = pbt.run(TinyNet, SPACE, backend="serial", run_dir=tmp_path / "s", **opts)
    on_ray = pbt.run(TinyNet, SPACE, backend="ray", workers=2, run_dir=tmp_path / "r", **opts)
    assert serial.exploits
    assert _comparable(on_ray) == _comparable(serial)
    assert on_ray.best_score == serial.best_score


def test_actors_keep_their_members_in_memory(runtime, tmp_path):
    """A member that goes on from its own checkpoint returns to the actor that holds it."""
    be = RayBackend(Quadratic, str(tmp_path / "ckpt"), workers=2)
    try:
        first = []
        for m in (0, 1):
            be.submit(Task(m, 0, 5, {"lr": 0.1}, None, seed=m))
        while be.pending:
            first += be.wait()
        # in reverse order of arrival: a backend that hands tasks to whichever actor fell
        # idle first would give each member to the other actor
        for out in reversed(first):
            be.submit(Task(out.member_id, 5, 5, {"lr": 0.1}, out.checkpoint, seed=7))
        second = []
        while be.pending:
            second += be.wait()
        where = {o.member_id: o.worker for o in first}
        assert {o.member_id: o.worker for o in second} == where
        assert len(set(where.values())) == 2 and all(o.error is None for o in second)
    finally:
        be.close()
    assert runtime.is_initialized()


DIES_ONCE = """
import os, sys
sys.path[:0] = [{tests!r}, {tests!r} + "/.."]
from helpers import Quadratic

class DiesOnce(Quadratic):
    def train(self, steps):
        if self.hparams["lr"] > 0.3 and not os.path.exists({marker!r}):
            open({marker!r}, "w").close()
            os._exit(3)  # the actor's process dies mid-interval
        return super().train(steps)
"""


def test_a_dead_actor_is_retried_and_replaced(runtime, tmp_path):
    marker = tmp_path / "died"
    (tmp_path / "dies_once.py").write_text(DIES_ONCE.format(tests=str(TESTS), marker=str(marker)))
    member = load_module_from_path(str(tmp_path / "dies_once.py")).DiesOnce
    # one slot: members 0 and 1 train on the first actor, member 2 kills it, and everything
    # after must run on its replacement (with two slots the surviving actor may do it all)
    r = pbt.run(member, QSPACE, population=4, ready_every=5, steps=20, backend="ray",
                workers=1, explore=None, initial_hparams=INIT, progress=False,
                run_dir=tmp_path / "r")
    assert marker.exists()
    retries = [e for e in r.events if e["kind"] == "retry"]
    assert [(e["member_id"], e["detail"]["attempt"]) for e in retries] == [(2, 1)]
    assert "worker process died" in retries[0]["detail"]["error"]
    assert not [e for e in r.events if e["kind"] == "fail"], "a retried interval is no failure"
    chains_are_complete(r, 20)
    assert len({i["worker"] for i in r.intervals}) == 2, "a fresh actor took the dead one's slot"


def test_abort_kills_the_actors_but_not_a_shared_runtime(runtime, tmp_path):
    be = RayBackend(Quadratic, str(tmp_path / "ckpt"), workers=2)
    pids = be.actor_pids()
    be.submit(Task(0, 0, 5, {"lr": 0.1}, None, seed=0))
    be.abort()
    assert _all_gone(pids), "actor processes outlived abort()"
    assert runtime.is_initialized()


def test_ctrl_c_leaves_no_ray_process_behind_and_the_run_resumes(runtime, tmp_path):
    run_dir, flag, script = tmp_path / "run", tmp_path / "slow", tmp_path / "slow.py"
    flag.touch()
    script.write_text(SLOW_SCRIPT.format(tests=str(TESTS), flag=str(flag), backend="ray",
                                         steps=100, run_dir=str(run_dir)))
    mark = f"TORCHPBT_TEST_MARK={uuid.uuid4().hex}"  # inherited by every process Ray starts
    env = {**os.environ, "TORCHPBT_TEST_MARK": mark.split("=")[1]}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for_intervals(run_dir, 4, proc)
        assert _marked(mark), "the check below must be able to see Ray's processes"
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    flag.unlink()  # the resumed run may go fast
    assert proc.returncode != 0 and f"torchpbt resume {run_dir}" in err, err[-2000:]
    deadline = time.time() + 30
    while _marked(mark) and time.time() < deadline:
        time.sleep(0.2)
    assert not _marked(mark), "Ray processes outlived the interrupted run"
    assert pbt.load(run_dir).run["status"] == "interrupted"
    assert cli_main(["resume", str(run_dir), "--backend", "ray", "--quiet"]) in (0, None)
    resumed = pbt.load(run_dir)
    assert resumed.run["status"] == "done"
    assert any(e["kind"] == "resume" and e["detail"]["backend"] == "ray" for e in resumed.events)
    chains_are_complete(resumed, 100)


def _wait_for_intervals(run_dir: Path, n: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            if len(pbt.load(run_dir).intervals) >= n:
                return
        except Exception:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the run never started: " + proc.communicate()[1][-2000:])


def _marked(mark: str) -> list[int]:
    """Processes whose environment holds ``mark``: the child and all that Ray started for it."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if mark.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(int(pid))
        except OSError:
            pass
    return found


def _all_gone(pids: list[int], timeout: float = 15.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(Path(f"/proc/{p}").exists() for p in pids):
            return True
        time.sleep(0.1)
    return False
