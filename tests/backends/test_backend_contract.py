"""The backend contract (``torchpbt.backends.Backend``), one suite run over every
backend: serial, local, Ray and the queue of ``backend="workers"`` (here with two
worker loops in threads on an SQLite store; test_workers.py starts real
``torchpbt worker`` processes on SQLite and PostgreSQL).

Rules checked: every submitted task gets exactly one outcome, naming its member and
steps; ``pending`` counts what has no outcome yet; a member that fails gives a failed
outcome, not an exception, and the backend goes on; the checkpoint an outcome names
holds the trained state; an interval's result does not depend on the backend.
"""

from __future__ import annotations

import logging
import os
import threading

import pytest
from helpers import InfLoss, Quadratic

from torchpbt.backends import LocalBackend, SerialBackend, Task
from torchpbt.engine.checkpoints import CheckpointDir

KINDS = ["serial", "local", "ray", "workers"]


@pytest.fixture(scope="module")
def ray_runtime():
    if os.environ.get("CI"):
        import ray  # CI installs the dev extra: a missing ray is a failure, not a skip
    else:
        ray = pytest.importorskip("ray", reason="pip install 'torchpbt[ray]'")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture
def make(request, tmp_path):
    """make(member_cls) -> a backend of the parametrized kind, closed after the test."""
    made = []

    def build(member_cls):
        ckpt = str(tmp_path / "checkpoints")
        if request.param == "serial":
            be = SerialBackend(member_cls, ckpt)
        elif request.param == "local":
            be = LocalBackend(member_cls, ckpt, workers=2)
        elif request.param == "ray":
            request.getfixturevalue("ray_runtime")
            from torchpbt.backends import RayBackend

            be = RayBackend(member_cls, ckpt, workers=2)
        else:
            be = _queue_backend(member_cls, tmp_path, ckpt, stops)
        made.append(be)
        return be

    stops: list = []
    yield build
    for be in made:
        be.close()
    for stop in stops:
        stop()


def _queue_backend(member_cls, tmp_path, ckpt, stops):
    """A QueueBackend on a fresh run row, and two worker loops claiming its tasks."""
    from torchpbt.backends import IntervalRunner
    from torchpbt.backends.queue import EXTRAS_DIR, QueueBackend
    from torchpbt.backends.worker import task_to_json
    from torchpbt.backends.worker_service import _loop
    from torchpbt.store import SQLStore
    from torchpbt.store.queue import TaskQueue

    store = SQLStore(f"sqlite:///{tmp_path / 'queue.db'}")
    run_id = store.create_run(f"contract-{len(stops)}", {}, {}, [])
    be = QueueBackend(TaskQueue(store.engine, run_id), task_to_json, tmp_path, timeout=60)
    loops = [threading.Thread(target=_loop, daemon=True, args=(
        TaskQueue(store.engine, run_id), IntervalRunner(member_cls, ckpt),
        tmp_path / EXTRAS_DIR, 0.5, 0.05, lambda _msg: None)) for _ in range(2)]
    for t in loops:
        t.start()

    def stop():  # a finished run sends its workers home
        store.record(run_id, None, [], [], None, status="done")
        for t in loops:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in loops), "a worker loop did not stop"
        store.close()

    stops.append(stop)
    return be


def _drain(be) -> list:
    out = []
    while be.pending:
        out += be.wait()
    return out


@pytest.mark.parametrize("make", KINDS, indirect=True)
def test_every_task_gets_exactly_one_outcome_and_pending_counts_down(make, tmp_path):
    be = make(Quadratic)
    tasks = [Task(m, 0, 3 + m, {"lr": 0.1}, None, seed=m) for m in range(5)]
    for t in tasks:
        be.submit(t)
    assert be.pending == 5
    out = _drain(be)
    assert sorted((o.member_id, o.start_step, o.end_step) for o in out) == \
        [(t.member_id, 0, t.steps) for t in tasks]
    assert be.pending == 0 and all(not o.failed and o.error is None for o in out)
    with pytest.raises(RuntimeError, match="no task"):
        be.wait()


@pytest.mark.parametrize("make", KINDS, indirect=True)
def test_an_outcomes_checkpoint_holds_the_trained_state_and_training_goes_on_from_it(make,
                                                                                    tmp_path):
    be = make(Quadratic)
    be.submit(Task(0, 0, 2, {"lr": 0.1}, None, seed=1))
    first = _drain(be)[0]
    x = CheckpointDir(tmp_path / "checkpoints").load(first.checkpoint)["x"]
    assert float(x) == pytest.approx(1 + 4 * 0.8 ** 2)  # two steps from 5 towards 1
    assert first.score == pytest.approx(-((float(x) - 1) ** 2))
    be.submit(Task(0, 2, 2, {"lr": 0.1}, first.checkpoint, seed=2))
    second = _drain(be)[0]
    assert second.score == pytest.approx(-((4 * 0.8 ** 4) ** 2))


@pytest.mark.parametrize("make", KINDS, indirect=True)
def test_a_failing_member_gives_a_failed_outcome_and_the_backend_goes_on(make):
    be = make(InfLoss)  # diverges for lr > 0.3
    be.submit(Task(0, 0, 2, {"lr": 0.45}, None, seed=0))
    be.submit(Task(1, 0, 2, {"lr": 0.1}, None, seed=0))
    out = {o.member_id: o for o in _drain(be)}
    assert out[0].failed and "loss is inf" in out[0].error and not out[0].crashed
    assert not out[1].failed and out[1].checkpoint
    be.submit(Task(2, 0, 1, {"lr": 0.1}, None, seed=0))
    assert not _drain(be)[0].failed


@pytest.mark.parametrize("make", KINDS, indirect=True)
def test_an_intervals_result_does_not_depend_on_the_backend(make, tmp_path):
    tasks = [Task(m, 0, 4, {"lr": lr}, None, seed=7) for m, lr in enumerate((0.05, 0.2))]
    reference = SerialBackend(Quadratic, str(tmp_path / "reference"))
    for t in tasks:
        reference.submit(t)
    want = {o.member_id: (o.score, o.checkpoint) for o in _drain(reference)}
    be = make(Quadratic)
    for t in tasks:
        be.submit(t)
    got = {o.member_id: (o.score, o.checkpoint) for o in _drain(be)}
    assert got == want  # the same bytes: the content-addressed keys are equal too
