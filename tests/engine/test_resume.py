"""Resume: kill the controller (SIGKILL) at exact points, resume, and get the same run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import SLOW_SCRIPT, SPACE, TinyKS, TinyNet, chains_are_complete

import torchpbt as pbt
from torchpbt.engine.runner import run_lock
from torchpbt.store import StoreError

TESTS = Path(__file__).parent
OPTS = dict(population=4, ready_every=5, steps=30, backend="serial", seed=11,
            exploit=pbt.Truncation(0.25), progress=False)
KS = {"alpha": 0.5, "top_k": 2, "refresh_every": 2}

SCRIPT = """
import json, sys
sys.path[:0] = [{tests!r}, {tests!r} + "/.."]
import torchpbt as pbt
from helpers import SPACE, TinyNet, TinyKS
opts = json.loads({opts!r})
ks = opts.pop("ks")
member = TinyKS if ks else TinyNet
pbt.run(member, SPACE, exploit=pbt.Truncation(0.25), run_dir={run_dir!r},
        knowledge_sharing=pbt.KnowledgeSharing(**ks) if ks else None, **opts)
"""


def _crash_run(run_dir: Path, point: str, ks: bool = False, sync: bool = False) -> None:
    opts = {k: v for k, v in OPTS.items() if k != "exploit"}
    opts.update(ks=KS if ks else None, sync=sync)
    code = SCRIPT.format(tests=str(TESTS), opts=json.dumps(opts), run_dir=str(run_dir))
    env = {**os.environ, "TORCHPBT_CRASH_AT": point}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert pbt.load(run_dir).run["status"] == "running"


def _log(result: pbt.Result) -> dict[str, list]:
    """Everything that must match between a resumed and an uninterrupted run."""
    ev = ("kind", "member_id", "step", "donor_id", "donor_step", "old_hparams", "new_hparams",
          "operations", "detail")
    iv = ("member_id", "start_step", "end_step", "hparams", "start_checkpoint",
          "end_checkpoint", "score", "loss", "extra")
    return {
        "events": [tuple(e[k] for k in ev) for e in result.events if e["kind"] != "resume"],
        "intervals": [tuple(i[k] for k in iv) for i in result.intervals],
        "scores": [(s["member_id"], s["step"], s["score"]) for s in result.scores],
        "members": [(m["member_id"], m["hparams"], m["score"], m["checkpoint"])
                    for m in result.members],
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    return {
        (ks, sync): pbt.run(TinyKS if ks else TinyNet, SPACE, run_dir=root / f"{ks}-{sync}",
                            sync=sync, knowledge_sharing=pbt.KnowledgeSharing(**KS) if ks else None,
                            **OPTS)
        for ks, sync in ((False, False), (True, False), (False, True))
    }


@pytest.mark.parametrize("point", [
    "outcome:3",            # an outcome arrived, nothing recorded
    "checkpoint_write:6",   # mid checkpoint write (temp file, no rename)
    "store_commit:9",       # inside the store transaction, before COMMIT
    "after_commit:12",      # committed, garbage checkpoints not yet deleted
    "before_submit:15",     # garbage deleted, next interval not yet submitted
    "store_commit:2",       # the first interval's record
])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, reference, point):
    run_dir = tmp_path / "run"
    _crash_run(run_dir, point)
    before = pbt.load(run_dir)
    resumed = pbt.resume(run_dir, progress=False)
    assert resumed.run["status"] == "done"
    assert _log(resumed) == _log(reference[(False, False)])
    assert len(resumed.intervals) > len(before.intervals)
    assert [e["detail"]["from_status"] for e in resumed.events if e["kind"] == "resume"] \
        == ["running"]
    # stray files of the crashed step are gone: only committed, live checkpoints remain
    live = {c for c in (m["checkpoint"] for m in resumed.members) if c}
    on_disk = {p.stem for p in (run_dir / "checkpoints").glob("*.pt")}
    assert live <= on_disk and not list((run_dir / "checkpoints").glob(".tmp-*"))


def test_crash_while_creating_the_run_leaves_nothing_to_resume(tmp_path, reference):
    run_dir = tmp_path / "run"
    env = {**os.environ, "TORCHPBT_CRASH_AT": "store_commit:1"}
    opts = {k: v for k, v in OPTS.items() if k != "exploit"}
    code = SCRIPT.format(tests=str(TESTS), opts=json.dumps({**opts, "ks": None}),
                         run_dir=str(run_dir))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    with pytest.raises(StoreError, match="nothing to resume.*start it again"):
        pbt.resume(run_dir, progress=False)
    again = pbt.run(TinyNet, SPACE, run_dir=run_dir, **OPTS)  # the same directory is fine
    assert _log(again) == _log(reference[(False, False)])


def test_knowledge_sharing_table_survives_a_crash(tmp_path, reference):
    run_dir = tmp_path / "run"
    _crash_run(run_dir, "knowledge_publish:2", ks=True)
    resumed = pbt.resume(run_dir, progress=False)
    ref = reference[(True, False)]
    assert _log(resumed) == _log(ref)
    versions = [e["detail"]["version"] for e in resumed.events if e["kind"] == "knowledge"]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 3


def test_sync_scheduler_resumes_mid_generation(tmp_path, reference):
    run_dir = tmp_path / "run"
    _crash_run(run_dir, "after_commit:6", sync=True)  # 2 of a generation of 4 reported
    assert _log(pbt.resume(run_dir, progress=False)) == _log(reference[(False, True)])


def test_two_crashes_in_a_row_then_resume_via_cli(tmp_path, reference):
    run_dir = tmp_path / "run"
    _crash_run(run_dir, "store_commit:4")
    env = {**os.environ, "TORCHPBT_CRASH_AT": "checkpoint_write:3",
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torchpbt", "resume", str(run_dir), "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    env.pop("TORCHPBT_CRASH_AT")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "done" in proc.stdout
    resumed = pbt.load(run_dir)
    assert _log(resumed) == _log(reference[(False, False)])
    assert sum(e["kind"] == "resume" for e in resumed.events) == 2


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    r = pbt.run(TinyNet, SPACE, run_dir=tmp_path / "r", **{**OPTS, "steps": 10})
    again = pbt.resume(tmp_path / "r", progress=False)
    assert again.events == r.events and again.intervals == r.intervals


def test_second_controller_on_the_same_run_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    with run_lock(tmp_path / "r"):
        with pytest.raises(StoreError, match="another process.*wait for it"):
            with run_lock(tmp_path / "r"):
                pass
    with run_lock(tmp_path / "r"):  # released: a crashed or finished holder never blocks
        pass


def _start_slow(tmp_path: Path, backend: str) -> tuple[subprocess.Popen, Path]:
    run_dir = tmp_path / "run"
    script = tmp_path / "slow.py"
    flag = tmp_path / "slow"
    flag.touch()
    script.write_text(SLOW_SCRIPT.format(tests=str(TESTS), backend=backend, steps=200,
                                         run_dir=str(run_dir), flag=str(flag)))
    # a shell runs background jobs (e.g. CI started with `&`) with SIGINT ignored, and
    # children inherit that: give the run the default handler, as a terminal would
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until intervals are being recorded
        try:
            if len(pbt.load(run_dir).intervals) >= 4:
                return proc, run_dir
        except Exception:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the run never started: " + proc.communicate()[1][-2000:])


def _group_gone(pgid: int, timeout: float = 15.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("backend", ["serial", "local"])
def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path, backend):
    proc, run_dir = _start_slow(tmp_path, backend)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    _, err = proc.communicate(timeout=60)
    (tmp_path / "slow").unlink()  # the resumed run may go fast
    assert proc.returncode != 0
    assert f"torchpbt resume {run_dir}" in err
    assert _group_gone(proc.pid), "worker processes outlived the controller"
    stopped = pbt.load(run_dir)
    assert stopped.run["status"] == "interrupted"
    resumed = pbt.resume(run_dir, backend="local", workers=2, progress=False,
                         member=_slow_class(tmp_path))
    assert resumed.run["status"] == "done"
    # every member's intervals follow its decisions, nothing lost or run twice, and
    # every final model trained all 200 steps
    chains_are_complete(resumed, 200)


def _slow_class(tmp_path: Path) -> type:
    from torchpbt.backends import load_module_from_path

    return load_module_from_path(str(tmp_path / "slow.py")).Slow


def test_sigkilled_controller_leaves_no_worker_behind(tmp_path):
    proc, _ = _start_slow(tmp_path, "local")
    os.kill(proc.pid, signal.SIGKILL)  # the controller only, not its workers
    proc.communicate(timeout=30)
    assert _group_gone(proc.pid), "workers must notice their controller died and exit"


SHARED = """
import sys
sys.path[:0] = [{tests!r}, {tests!r} + "/.."]
import torchpbt as pbt
from helpers import SPACE, TinyNet
pbt.run(TinyNet, SPACE, population=4, ready_every=5, steps=30, backend="serial", seed={seed},
        progress=False, run_dir={run_dir!r}, storage={storage!r}, name={name!r})
"""


def test_resume_in_a_shared_store_takes_its_own_run(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "TORCHPBT_CRASH_AT": "after_commit:5"}
    for name, seed in (("a", 1), ("b", 2)):
        code = SHARED.format(tests=str(TESTS), seed=seed, run_dir=str(tmp_path / name),
                             storage=storage, name=name)
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              timeout=300)
        assert proc.returncode == -signal.SIGKILL
    b_files = sorted(p.name for p in (tmp_path / "b" / "checkpoints").glob("*.pt"))
    a = pbt.resume(tmp_path / "a", storage=storage, progress=False)
    assert a.run["name"] == "a" and a.run["status"] == "done"
    b = pbt.load(tmp_path / "b", storage)
    assert b.run["name"] == "b" and b.run["status"] == "running"
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").glob("*.pt")) == b_files
    assert pbt.resume(tmp_path / "b", storage=storage, progress=False).run["status"] == "done"
