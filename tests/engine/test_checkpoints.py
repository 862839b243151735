"""Checkpoints: content-addressed, atomic, verified, weights only, garbage collected."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
import torch

from torchpbt import CheckpointDir, CheckpointError
from torchpbt.engine.checkpoints import DeferredDeleter


def test_name_is_content_hash_and_identical_states_share_a_file(tmp_path):
    cd = CheckpointDir(tmp_path)
    key, size = cd.save({"w": torch.arange(4.0)})
    data = cd.file(key).read_bytes()
    assert key == hashlib.sha256(data).hexdigest() and size == len(data)
    key2, _ = cd.save({"w": torch.arange(4.0)})
    assert key2 == key and len(list(tmp_path.glob("*.pt"))) == 1
    assert torch.equal(cd.load(key)["w"], torch.arange(4.0))


@pytest.mark.parametrize("durable, broken", [(True, "fsync"), (False, "replace"),
                                             (True, "replace")])
def test_no_partial_file_under_a_real_name_when_write_fails(tmp_path, monkeypatch, durable,
                                                            broken):
    cd = CheckpointDir(tmp_path, durable=durable)

    def no_space(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, broken, no_space)
    with pytest.raises(OSError, match="No space"):
        cd.save({"w": torch.ones(3)})
    assert list(tmp_path.iterdir()) == []


def test_damaged_or_missing_checkpoint_is_detected(tmp_path):
    cd = CheckpointDir(tmp_path)
    key, _ = cd.save({"w": torch.ones(100)})
    raw = bytearray(cd.file(key).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    cd.file(key).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="damaged"):
        cd.load(key)
    cd.file(key).write_bytes(bytes(raw[:50]))
    with pytest.raises(CheckpointError, match="damaged"):
        cd.load(key)
    cd.delete(key)
    with pytest.raises(CheckpointError, match="missing"):
        cd.load(key)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_payload_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buf = io.BytesIO()
    torch.save({"w": torch.ones(1), "evil": _Evil()}, buf)
    data = buf.getvalue()
    key = hashlib.sha256(data).hexdigest()  # a correct hash: only weights_only can stop it
    cd = CheckpointDir(tmp_path / "ck")
    cd.file(key).write_bytes(data)
    with pytest.raises(CheckpointError, match="refused"):
        cd.load(key)
    assert not (tmp_path / "pwned").exists()


def test_garbage_collection_keeps_only_referenced(tmp_path):
    cd = CheckpointDir(tmp_path)
    keys = [cd.save({"w": torch.full((2,), float(i))})[0] for i in range(4)]
    (tmp_path / ".tmp-stray.pt").write_bytes(b"half")
    gone = cd.collect_garbage(keys[:2])
    assert sorted(gone) == sorted(keys[2:])
    assert cd.keys() == set(keys[:2])
    assert not (tmp_path / ".tmp-stray.pt").exists()


def test_deferred_deleter_deletes_in_the_background_and_logs_the_clock_after_each_unlink(
        tmp_path):
    cd = CheckpointDir(tmp_path)
    keys = [cd.save({"x": torch.tensor(float(i))})[0] for i in range(3)]
    ticks = iter(range(100, 200))
    d = DeferredDeleter(cd, lambda: next(ticks))
    d.delete(keys[:2])
    d.close()
    assert cd.keys() == {keys[2]} and d.pending == 0
    assert d.drain() == [(100, keys[0]), (101, keys[1])] and d.drain() == []
    d.delete([keys[2]])  # usable again after close
    d.close()
    assert cd.keys() == set()


def test_a_reclaimed_key_is_never_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(DeferredDeleter, "threaded", False)  # nothing runs before close()
    cd = CheckpointDir(tmp_path)
    a, b = (cd.save({"x": torch.tensor(float(i))})[0] for i in range(2))
    d = DeferredDeleter(cd)
    d.delete([a, b, a])  # a key queued twice is deleted once
    assert d.pending == 2
    assert d.reclaim(a) is True and d.reclaim(a) is False
    d.close()
    assert cd.keys() == {a} and [k for _, k in d.drain()] == [b]
    assert d.reclaim(b) is False  # already deleted: the caller must check the file


class _FlakyDir:
    """Unlinks fail for one key, as on a stale NFS handle."""

    def __init__(self) -> None:
        self.gone: list[str] = []

    def delete(self, key: str) -> None:
        if key == "bad":
            raise OSError(116, "Stale file handle")
        self.gone.append(key)


def test_a_failed_unlink_is_logged_and_deletion_goes_on(caplog):
    d = DeferredDeleter(_FlakyDir())  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="torchpbt"):
        d.delete(["a", "bad", "b"])
        d.close()
        d.delete(["c"])  # the thread was not killed by the failure: later keys go too
        d.close()
    assert d.checkpoints.gone == ["a", "b", "c"] and d.pending == 0
    assert [k for _, k in d.drain()] == ["a", "b", "c"]  # "bad" is not logged as deleted
    assert "could not delete unused checkpoint bad" in caplog.text


@pytest.mark.parametrize("moment", ["before-the-outcome", "during-its-check"])
def test_an_outcome_is_never_accepted_once_its_file_is_deleted(tmp_path, monkeypatch, moment):
    # a worker found K on disk (equal weights) and wrote nothing; K had become garbage
    # and is deleted by the background thread either before the outcome is checked or
    # right in the middle of the check (forced here): either the deletion is cancelled
    # and the file stays, or the outcome is retried; never accepted with K gone
    from collections import deque

    from torchpbt.backends import Outcome, Task
    from torchpbt.engine.controller import Controller

    cd = CheckpointDir(tmp_path)
    key, _ = cd.save({"w": torch.zeros(3)})
    c = Controller.__new__(Controller)  # only what _vanished needs
    c.checkpoints, c._submits, c._sent = cd, 1, {1: 1}
    c._collected, c._collected_order = {}, deque()
    monkeypatch.setattr(DeferredDeleter, "threaded", False)  # deletions run at close()
    c.deleter = DeferredDeleter(cd, lambda: c._submits)
    c.deleter.delete([key])
    if moment == "before-the-outcome":
        c.deleter.close()
    else:
        for name in ("reclaim", "drain"):  # whichever runs first, the deletion follows it
            original = getattr(DeferredDeleter, name)

            def then_delete(self, *args, _original=original):
                result = _original(self, *args)
                self.close()
                return result
            monkeypatch.setattr(DeferredDeleter, name, then_delete)
    retry = c._vanished(Outcome(1, 0, 5, 1.0, None, key, 10, 0.0, "w", None),
                        Task(1, 0, 5, {}, None, 0))
    assert cd.file(key).exists() or (retry is not None and retry.kind == "retry")
    if moment == "before-the-outcome":
        assert retry is not None and not cd.file(key).exists()


def _cycle_member():
    """Weights take one of 4 values, so members keep writing files that an earlier
    interval wrote and that were collected meanwhile: dedup'd checkpoints."""
    import torchpbt as pbt

    class Cycle(pbt.Member):
        def setup(self, hparams):
            self.w = 0

        def train(self, steps):
            self.w = (self.w + (1 if self.hparams["lr"] > 0.5 else 2)) % 4
            return 0.0

        def evaluate(self):
            return self.hparams["lr"] + 0.1 * self.w

        def state_dict(self):
            return {"w": self.w}

        def load_state_dict(self, state):
            self.w = int(state["w"])

    return Cycle


def test_a_serial_run_with_dedupd_checkpoints_logs_the_same_events_every_time(tmp_path,
                                                                              monkeypatch):
    import time

    import torchpbt as pbt

    slow = CheckpointDir.delete

    def slow_delete(self, key):  # a slow disk: the background deleter lags behind
        time.sleep(0.002)
        slow(self, key)

    monkeypatch.setattr(CheckpointDir, "delete", slow_delete)
    member, logs = _cycle_member(), []
    for i in range(2):
        r = pbt.run(member, {"lr": pbt.Float(0.0, 1.0)}, population=16, steps=200,
                    ready_every=5, backend="serial", progress=False, run_dir=tmp_path / f"r{i}",
                    seed=0)
        drop = {"id", "created_at", "duration_s", "worker"}
        logs.append(([{k: v for k, v in e.items() if k not in drop} for e in r.events],
                     [{k: v for k, v in iv.items() if k not in drop} for iv in r.intervals]))
        assert not [e for e in r.events if e["kind"] == "retry"]
        assert any(e["kind"] == "exploit" for e in r.events)
    assert logs[0] == logs[1]
