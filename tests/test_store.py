"""The store contract, checked on SQLite (PostgreSQL joins this suite with issue 8)."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
from sqlalchemy import text

import torchpbt as pbt
from torchpbt.store import (
    SCHEMA_VERSION,
    EventRecord,
    IntervalRecord,
    MemberUpdate,
    SQLStore,
    StoreError,
)

SPACE = pbt.Space({"lr": pbt.Float(1e-4, 1.0, log=True), "bs": pbt.Int(1, 512),
                   "act": pbt.Choice(["relu", "tanh"])})


@pytest.fixture
def store(tmp_path):
    s = SQLStore(f"sqlite:///{tmp_path / 'torchpbt.db'}")
    yield s
    s.close()


def _new_run(store, name="r"):
    members = [MemberUpdate(i, {"lr": 0.1, "bs": 32, "act": "relu"}, 0, None, "training")
               for i in range(3)]
    return store.create_run(name, {"mode": "max", "steps": 10}, SPACE.to_dict(), members)


def test_sqlite_uses_wal(store):
    with store.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_types_survive_the_round_trip(store):
    rid = _new_run(store)
    hp = {"lr": 1.0, "bs": 7, "act": "tanh"}  # 1.0 must stay a float, 7 an int
    store.record(rid, IntervalRecord(0, 0, 5, hp, None, "k1", 0.5), [],
                 [MemberUpdate(0, hp, 5, "k1", "training")])
    got = store.intervals(rid)[0]["hparams"]
    assert got == hp and type(got["lr"]) is float and type(got["bs"]) is int
    member = store.members(rid)[0]["hparams"]
    assert type(member["lr"]) is float and type(member["bs"]) is int
    coerced = SPACE.coerce(json.loads(json.dumps(got)))
    assert type(coerced["lr"]) is float and type(coerced["bs"]) is int


def test_record_writes_everything_of_a_step(store):
    rid = _new_run(store)
    ev = EventRecord("exploit", 1, 5, donor_id=0, donor_step=5, old_hparams={"lr": 0.1},
                     new_hparams={"lr": 0.12}, operations={"lr": "*1.2"})
    store.record(rid, IntervalRecord(0, 0, 5, {"lr": 0.1}, None, "k1", 0.9, checkpoint_size=10),
                 [ev], [MemberUpdate(1, {"lr": 0.12}, 5, "k1", "training", 0, True)],
                 scheduler_state={"rng": [1]})
    assert store.scores(rid)[0]["score"] == 0.9
    e = store.events(rid)[0]
    assert (e["kind"], e["donor_id"], e["donor_step"], e["operations"]) == ("exploit", 0, 5, {"lr": "*1.2"})
    m1 = store.members(rid)[1]
    assert (m1["parent_id"], m1["exploits"], m1["checkpoint"]) == (0, 1, "k1")
    assert store.checkpoints(rid)[0]["key"] == "k1"
    assert store.find_run()["scheduler_state"] == {"rng": [1]}


def test_failed_record_leaves_nothing_behind(store):
    rid = _new_run(store)
    with pytest.raises(StoreError, match="no member 99"):
        store.record(rid, IntervalRecord(0, 0, 5, {"lr": 0.1}, None, "k1", 0.9),
                     [EventRecord("explore", 0, 5)], [MemberUpdate(99, {}, 5, None, "training")])
    assert store.intervals(rid) == [] and store.scores(rid) == [] and store.events(rid) == []
    assert store.checkpoints(rid) == []


def test_non_finite_scores_are_kept_as_invalid(store):
    rid = _new_run(store)
    store.record(rid, IntervalRecord(0, 0, 5, {"lr": 0.1}, None, None, math.nan), [], [])
    s = store.scores(rid)[0]
    assert s["score"] is None and s["valid"] is False


def test_duplicate_run_name_is_refused(store):
    _new_run(store)
    with pytest.raises(StoreError, match="already exists"):
        _new_run(store)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "torchpbt.db"
    SQLStore(f"sqlite:///{path}").close()
    con = sqlite3.connect(path)
    con.execute("UPDATE torchpbt_meta SET value=? WHERE key='schema_version'",
                (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="upgrade torchpbt"):
        SQLStore(f"sqlite:///{path}")


def test_unreachable_or_empty_store_gives_clear_error(tmp_path):
    with pytest.raises(StoreError, match="cannot connect"):
        SQLStore(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    with pytest.raises(StoreError, match="holds no torchpbt run"):
        SQLStore(f"sqlite:///{tmp_path / 'empty.db'}", create=False)
    with pytest.raises(StoreError, match="cannot use store URL"):
        SQLStore("nosuchdb://x")
