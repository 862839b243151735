"""backend="workers": a controller plus `torchpbt worker` processes sharing one store.

Every process here is real: the controller and each worker are separate Python
processes talking only through the database (PostgreSQL from the session's
throwaway server, or the run directory's SQLite) and the checkpoint directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import select

import torchpbt as pbt
from torchpbt.analysis.lineage import check_log
from torchpbt.store import SQLStore, StoreError
from torchpbt.store.models import TaskRow
from torchpbt.store.queue import TaskQueue

pytestmark = pytest.mark.slow  # end to end: processes, files, browsers

TESTS = str(Path(__file__).resolve().parent)
STEPS = 40
_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_left_behind():
    """A failing test must not leave a controller or worker running."""
    yield
    while _STARTED:
        p = _STARTED.pop()
        if p.poll() is None:
            p.kill()
            p.communicate()


def _popen(args: list[str], pause: float | None = None) -> subprocess.Popen:
    env = {**os.environ, "TORCHPBT_TEST_PAUSE": str(pause)} if pause is not None else None
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env)
    _STARTED.append(p)
    return p


def start_controller(tmp_path: Path, url: str | None, name: str, *, population: int = 6,
                     timeout: float = 3.0, extra: str = "",
                     member: str = "SlowQuadratic", space: str = "QSPACE",
                     steps: int = STEPS) -> subprocess.Popen:
    script = tmp_path / "controller.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{TESTS!r}, {TESTS!r} + "/.."]
        import torchpbt as pbt
        from helpers import QSPACE, SPACE, SlowQuadratic, TinyKS
        if __name__ == "__main__":
            pbt.run({member}, {space}, population={population}, ready_every=5,
                    steps={steps}, backend="workers", storage={url!r},
                    run_dir={str(tmp_path / "run")!r}, name={name!r}, progress=False,
                    worker_timeout={timeout}, seed=3, exploit=pbt.Truncation(0.25){extra})
    """))
    return _popen([sys.executable, str(script)])


def start_worker(url: str, name: str, *args: str, pause: float | None = None) -> subprocess.Popen:
    """A worker process; ``pause`` makes each of its intervals take that long."""
    return _popen([sys.executable, "-m", "torchpbt", "worker", "--storage", url, "--run",
                   name, "--wait", "60", "--poll", "0.1", *args], pause)


def finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[str]:
    """Each process's output once all have ended; all of it if one hangs."""
    deadline = time.monotonic() + timeout
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            dump = "\n".join(f"--- {q.args}:\n{q.communicate()[0]}" for q in procs)
            raise AssertionError(f"process {p.args} did not finish:\n{dump}") from None
        outs.append(out)
    return outs


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'run' / 'torchpbt.db'}"


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_three_workers_on_postgres_finish_the_run_consistently(tmp_path, pg_url):
    ctl = start_controller(tmp_path, pg_url, "three")
    workers = [start_worker(pg_url, "three") for _ in range(3)]
    outs = finish([ctl, *workers])
    assert ctl.returncode == 0, outs[0]
    assert all(w.returncode == 0 for w in workers), outs[1:]
    result = pbt.load(tmp_path / "run", pg_url)
    assert result.run["status"] == "done"
    assert check_log(result.intervals, result.events, STEPS) == []
    # nothing ran twice (check_log), nothing is missing; a copy of a donor ahead skips steps
    assert result.member_steps <= 6 * STEPS
    # the work really was spread: each worker trained some intervals, and says so
    by_worker = {iv["worker"] for iv in result.intervals}
    assert len(by_worker) == 3, by_worker
    assert all("run is done" in out for out in outs[1:])
    assert len(result.exploits) > 0  # decisions happened while workers ran
    store = SQLStore(pg_url, create=False)
    try:
        counts = TaskQueue(store.engine, result.run["id"]).counts()
    finally:
        store.close()
    # every interval's row was collected once (a worker too starved by a loaded machine to
    # beat in time may lose a row to a retry: that is counted as lost, never twice)
    # (and equal weights — the toy converges — may share one checkpoint file that was
    # collected before a second writer reported it: that interval is rerun, uncharged)
    rerun = sum(e["kind"] == "retry" and e["detail"].get("charged") is False
                for e in result.events)
    assert counts["collected"] == len(result.intervals) + rerun, counts
    assert set(counts) <= {"collected", "lost"}, counts


def test_sigkilled_worker_loses_nothing(tmp_path, pg_url):
    ctl = start_controller(tmp_path, pg_url, "killed", timeout=2.0)
    # the doomed worker's intervals take a minute: it is surely mid-interval when killed
    workers = [start_worker(pg_url, "killed", pause=60)] + [
        start_worker(pg_url, "killed") for _ in range(2)]
    wait_for(lambda: _holding(pg_url, "killed", workers[0].pid), what="worker 0 to train")
    workers[0].kill()  # SIGKILL mid-interval: no chance to hand the interval back
    outs = finish([ctl, *workers[1:]])
    workers[0].communicate()
    assert ctl.returncode == 0, outs[0]
    result = pbt.load(tmp_path / "run", pg_url)
    assert result.run["status"] == "done"
    assert check_log(result.intervals, result.events, STEPS) == []
    killed = f":{workers[0].pid} stopped sending heartbeats"
    retries = [e for e in result.events if e["kind"] == "retry" and killed in e["detail"]["error"]]
    assert len(retries) == 1, [e for e in result.events if e["kind"] == "retry"]
    # a copy carries its donor's age, so one of a donor ahead skips steps, never repeats
    assert result.member_steps <= 6 * STEPS
    # the killed worker's interval was trained again by another worker
    assert not any(iv["worker"].endswith(f":{workers[0].pid}") for iv in result.intervals)


def _intervals(run_dir: Path) -> int:
    try:
        return len(pbt.load(run_dir).intervals)
    except StoreError:
        return 0  # not created yet


def _holding(url: str, name: str, pid: int) -> bool:
    """Whether worker ``pid`` holds an interval of run ``name`` right now."""
    try:
        store = SQLStore(url, create=False)
    except StoreError:
        return False  # not created yet
    try:
        run_id = store.find_run(name)["id"]
        with store.engine.connect() as c:
            rows = c.execute(select(TaskRow.worker).where(
                TaskRow.run_id == run_id, TaskRow.status == "running")).all()
    except StoreError:
        return False
    finally:
        store.close()
    return any(w and w.endswith(f":{pid}") for (w,) in rows)


def test_sigterm_hands_the_interval_back_uncharged(tmp_path):
    url = sqlite_url(tmp_path)
    ctl = start_controller(tmp_path, None, "term", population=3, timeout=30.0)
    first = start_worker(url, "term", pause=60)
    wait_for(lambda: _holding(url, "term", first.pid), what="the worker to train")
    first.send_signal(signal.SIGTERM)
    out_first = finish([first])[0]
    assert "went back to the queue" in out_first
    second = start_worker(url, "term")
    outs = finish([ctl, second])
    assert ctl.returncode == 0, outs[0]
    result = pbt.load(tmp_path / "run")
    assert check_log(result.intervals, result.events, STEPS) == []
    # a stopped worker is not a crash: no retry charged, no 30 s heartbeat timeout waited
    assert not [e for e in result.events if e["kind"] in ("retry", "fail")]


def test_controller_crash_resumes_with_workers_running(tmp_path):
    """SIGKILL the controller; its workers idle; `torchpbt resume` takes over with them."""
    url = sqlite_url(tmp_path)
    ctl = start_controller(tmp_path, None, "crash", population=4)
    workers = [start_worker(url, "crash") for _ in range(2)]
    wait_for(lambda: _intervals(tmp_path / "run") >= 8, what="8 intervals")
    ctl.kill()
    ctl.communicate()
    assert pbt.load(tmp_path / "run").run["status"] == "running"  # as a crash leaves it
    resumed = subprocess.run([sys.executable, "-m", "torchpbt", "resume",
                              str(tmp_path / "run"), "--quiet"],
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    outs = finish(workers)
    assert all(w.returncode == 0 for w in workers), outs
    result = pbt.load(tmp_path / "run")
    assert result.run["status"] == "done"
    assert check_log(result.intervals, result.events, STEPS) == []
    assert any(e["kind"] == "resume" for e in result.events)


def test_worker_for_a_missing_run_says_how_to_fix(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    SQLStore(url).close()
    out = subprocess.run([sys.executable, "-m", "torchpbt", "worker", "--storage", url,
                          "--run", "nope"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "no run named 'nope'" in out.stderr and "--wait" in out.stderr


def test_workers_started_before_the_run_create_nothing_and_then_train_it(tmp_path):
    url = sqlite_url(tmp_path)  # inside a run directory that does not exist yet
    workers = [start_worker(url, "early") for _ in range(2)]
    time.sleep(2.0)  # the workers are polling for the run
    assert not (tmp_path / "run").exists(), "waiting must create nothing"
    ctl = start_controller(tmp_path, url, "early", population=4)
    outs = finish([ctl, *workers])
    assert ctl.returncode == 0 and all(w.returncode == 0 for w in workers), outs
    result = pbt.load(tmp_path / "run")
    assert result.run["status"] == "done"
    assert check_log(result.intervals, result.events, STEPS) == []
    assert len({iv["worker"] for iv in result.intervals}) == 2  # both waiting workers trained


def test_a_worker_whose_wait_ran_out_says_so(tmp_path):
    url = sqlite_url(tmp_path)
    out = subprocess.run([sys.executable, "-m", "torchpbt", "worker", "--storage", url,
                          "--run", "late", "--wait", "1", "--poll", "0.1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "no run named 'late'" in out.stderr and "waited 1 s; give a longer --wait" in out.stderr
    assert "give --wait SECONDS" not in out.stderr
    assert not (tmp_path / "run").exists()


def test_second_controller_of_a_postgres_run_is_refused(pg_url):
    a, b = SQLStore(pg_url), SQLStore(pg_url)
    try:
        with a.exclusive(7):
            with pytest.raises(StoreError, match="controlled by another process"):
                with b.exclusive(7):
                    pass
            with b.exclusive(8):  # another run is free
                pass
        with b.exclusive(7):  # released
            pass
    finally:
        a.close()
        b.close()


def test_knowledge_sharing_runs_over_workers(tmp_path):
    url = sqlite_url(tmp_path)
    ctl = start_controller(tmp_path, None, "ks", population=4, member="TinyKS", space="SPACE",
                           steps=20, extra=(
        ", knowledge_sharing=pbt.KnowledgeSharing(alpha=0.5, top_k=2, refresh_every=2)"))
    workers = [start_worker(url, "ks") for _ in range(2)]
    outs = finish([ctl, *workers])
    assert ctl.returncode == 0, outs
    result = pbt.load(tmp_path / "run")
    assert check_log(result.intervals, result.events, 20) == []
    versions = [e["detail"]["version"] for e in result.events if e["kind"] == "knowledge"]
    assert versions and versions == list(range(1, len(versions) + 1))
    # every writer's predictions were merged and their hand-over files removed
    assert not list((tmp_path / "run" / "outcome-extras").glob("*.pt"))


@pytest.fixture
def stopped_run(tmp_path):
    """A run finished serially, then marked running again, as if waiting for workers."""
    from helpers import QSPACE, Quadratic
    pbt.run(Quadratic, QSPACE, population=2, ready_every=5, steps=10, backend="serial",
            run_dir=tmp_path / "run", name="idle", progress=False)
    url = sqlite_url(tmp_path)
    store = SQLStore(url, create=False)
    try:
        store.record(store.find_run("idle")["id"], None, [], [], None, status="running")
    finally:
        store.close()
    return url


def test_worker_refuses_what_it_cannot_use(tmp_path, stopped_run):
    from torchpbt.backends.worker_service import serve

    quiet = dict(log=None)
    with pytest.raises(StoreError, match=r"checkpoints in .*elsewhere/checkpoints, which this "
                                         r"host does not see; mount .* or pass --run-dir"):
        serve(stopped_run, "idle", run_dir=tmp_path / "elsewhere", **quiet)
    with pytest.raises(ValueError, match=r"--member 'Quadratic': give FILE\.py:Class"):
        serve(stopped_run, "idle", member="Quadratic", **quiet)
    with pytest.raises(ValueError, match=r"--member 'helpers:Nope': cannot import it"):
        serve(stopped_run, "idle", member="helpers:Nope", **quiet)
    with pytest.raises(StoreError, match=r"cannot connect to store"):
        serve("postgresql+psycopg://nobody@127.0.0.1:1/none", "idle", **quiet)


def test_worker_of_a_finished_run_exits_at_once(tmp_path, stopped_run):
    from torchpbt.backends.worker_service import serve

    store = SQLStore(stopped_run, create=False)
    try:
        store.record(store.find_run("idle")["id"], None, [], [], None, status="done")
    finally:
        store.close()
    said = []
    assert serve(stopped_run, "idle", log=said.append) == 0
    assert said == ["run 'idle' is already done; nothing to do."]


def test_cli_run_options_choose_where_a_file_runs(tmp_path):
    """`torchpbt run FILE --name --backend --storage -- FILE_ARGS`: the file need not know."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    out = subprocess.run(
        [sys.executable, "-m", "torchpbt", "run", "examples/toy_quadratic.py",
         "--name", "from-cli", "--backend", "serial", "--storage", url,
         "--", "--steps", "20", "--run-dir", str(tmp_path / "run"), "--quiet"],
        capture_output=True, text=True, timeout=120, cwd=Path(TESTS).parents[1])
    assert out.returncode == 0, out.stderr
    result = pbt.load(tmp_path / "run", url)
    assert result.run["name"] == "from-cli"
    assert result.run["config"]["backend"] == "serial" and result.run["config"]["steps"] == 20
