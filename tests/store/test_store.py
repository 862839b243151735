"""The store contract, one suite run on SQLite and on a real PostgreSQL server
(``store_url`` in tests/pg.py: every test that takes it runs on both)."""

from __future__ import annotations

import json
import math
import socket
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

import torchpbt as pbt
from torchpbt.store import (
    SCHEMA_VERSION,
    EventRecord,
    IntervalRecord,
    MemberUpdate,
    SQLStore,
    StepRecord,
    StoreError,
)

SPACE = pbt.Space({"lr": pbt.Float(1e-4, 1.0, log=True), "bs": pbt.Int(1, 512),
                   "act": pbt.Choice(["relu", "tanh"])})


@pytest.fixture
def store(store_url):
    s = SQLStore(store_url)
    yield s
    s.close()


def _sql(url: str, statement: str, **params) -> None:
    """Change a database behind the store's back, in plain SQL."""
    engine = create_engine(url)
    try:
        with engine.begin() as c:
            c.execute(text(statement), params)
    finally:
        engine.dispose()


def _new_run(store, name="r"):
    members = [MemberUpdate(i, {"lr": 0.1, "bs": 32, "act": "relu"}, 0, None, "training")
               for i in range(3)]
    return store.create_run(name, {"mode": "max", "steps": 10}, SPACE.to_dict(), members)


def test_sqlite_uses_wal(tmp_path):
    store = SQLStore(f"sqlite:///{tmp_path / 'torchpbt.db'}")
    with store.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    store.close()


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
    # the failed transaction is gone, not left open under the next step
    store.record(rid, IntervalRecord(0, 0, 5, {"lr": 0.1}, None, "k2", 0.8), [],
                 [MemberUpdate(0, {"lr": 0.1}, 5, "k2", "training")])
    assert [i["end_checkpoint"] for i in store.intervals(rid)] == ["k2"]
    assert [c["key"] for c in store.checkpoints(rid)] == ["k2"]


def test_a_batch_of_steps_writes_as_the_steps_would_one_by_one(store):
    # one statement per table for the whole batch: member 0 is updated twice (by two
    # different statements) and the later write must win; two intervals wrote the same
    # content (one key), which PostgreSQL refuses to upsert twice in one statement
    rid = _new_run(store)
    store.record_steps(rid, [
        StepRecord(IntervalRecord(0, 0, 5, {"lr": 0.1}, None, "k1", 0.5),
                   [EventRecord("continue", 0, 5)],
                   [MemberUpdate(0, {"lr": 0.1}, 5, "k1", "training")]),
        StepRecord(IntervalRecord(1, 0, 5, {"lr": 0.2}, None, "k1", 0.7),
                   [EventRecord("exploit", 0, 5, donor_id=1, donor_step=5)],
                   [MemberUpdate(0, {"lr": 0.25}, 5, "k1", "training", parent_id=1,
                                 exploited=True)]),
        StepRecord(IntervalRecord(2, 0, 5, {"lr": 0.3}, None, "k2", 0.9), [], []),
    ])
    m = {r["member_id"]: r for r in store.members(rid)}
    assert m[0]["hparams"] == {"lr": 0.25} and m[0]["parent_id"] == 1 and m[0]["exploits"] == 1
    assert m[1]["score"] == 0.7 and m[2]["score"] == 0.9  # no decision for 1, 2: score only
    assert [(e["kind"], e["member_id"]) for e in store.events(rid)] == [("continue", 0),
                                                                         ("exploit", 0)]
    assert [i["member_id"] for i in store.intervals(rid)] == [0, 1, 2]
    ck = {c["key"]: c for c in store.checkpoints(rid)}
    assert set(ck) == {"k1", "k2"} and (ck["k1"]["member_id"], ck["k1"]["step"]) == (0, 5)


def test_non_finite_scores_are_kept_as_invalid(store):
    rid = _new_run(store)
    store.record(rid, IntervalRecord(0, 0, 5, {"lr": 0.1}, None, None, math.nan), [], [])
    s = store.scores(rid)[0]
    assert s["score"] is None and s["valid"] is False


def test_duplicate_run_name_is_refused(store):
    _new_run(store)
    with pytest.raises(StoreError, match="already exists"):
        _new_run(store)


def test_newer_schema_is_refused(store_url):
    SQLStore(store_url).close()
    _sql(store_url, "UPDATE torchpbt_meta SET value = :v WHERE key = 'schema_version'",
         v=str(SCHEMA_VERSION + 1))
    with pytest.raises(StoreError, match="upgrade torchpbt"):
        SQLStore(store_url)


def test_newer_alembic_revision_is_refused(store_url):
    SQLStore(store_url).close()  # as if a newer torchpbt had run its revision 0099
    _sql(store_url, "UPDATE torchpbt_alembic_version SET version_num = '0099'")
    with pytest.raises(StoreError, match="schema version 0099, newer.*upgrade torchpbt"):
        SQLStore(store_url, create=False)


def test_unreachable_or_empty_store_gives_clear_error(tmp_path):
    with pytest.raises(StoreError, match="cannot connect"):
        SQLStore(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    with pytest.raises(StoreError, match="holds no torchpbt run"):
        SQLStore(f"sqlite:///{tmp_path / 'empty.db'}", create=False)
    with pytest.raises(StoreError, match="cannot use store URL"):
        SQLStore("nosuchdb://x")
    with pytest.raises(StoreError, match="mysql is not supported.*SQLite and PostgreSQL"):
        SQLStore("mysql://u@127.0.0.1/db")
    with pytest.raises(StoreError, match=r"psycopg2.*install the driver.*torchpbt\[postgres\]"):
        SQLStore("postgresql+psycopg2://u@127.0.0.1/db")  # a driver that is not installed


def test_unreachable_postgresql_gives_clear_error(pg_url):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreError, match="cannot connect.*database server runs"):
        SQLStore(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x")
    missing = pg_url.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(StoreError, match="cannot connect.*no_such_database"):
        SQLStore(missing)
    with pytest.raises(StoreError, match="holds no torchpbt run"):
        SQLStore(pg_url, create=False)


def test_empty_store_holds_no_run(store_url):
    with pytest.raises(StoreError, match="holds no torchpbt run"):
        SQLStore(store_url, create=False)
    SQLStore(store_url).close()  # refusing wrote nothing: it can still be created
    store = SQLStore(store_url, create=False)
    with pytest.raises(StoreError, match="no run in"):
        store.find_run()
    store.close()


def test_non_finite_floats_in_json_fields_are_stored_as_null(store):
    rid = _new_run(store)
    state = {"history": [1.0, math.inf, -math.inf], "nested": {"x": math.nan}, "ok": 2}
    store.record(rid, IntervalRecord(0, 0, 5, {"lr": 0.1}, None, "k", 0.5, loss=math.inf,
                                     extra={"v": math.nan}),
                 [EventRecord("fail", 0, 5, detail={"score": math.nan})], [],
                 scheduler_state=state)
    assert store.find_run()["scheduler_state"] == {"history": [1.0, None, None],
                                                   "nested": {"x": None}, "ok": 2}
    iv = store.intervals(rid)[0]
    assert iv["loss"] is None and iv["extra"] == {"v": None}
    assert store.events(rid)[0]["detail"] == {"score": None}


def test_large_integers_and_exact_floats_survive(store):
    rid = _new_run(store)
    big = 2**40 + 3  # steps past 2**31 (frames), a checkpoint over 2 GiB
    hp = {"lr": 0.1 + 0.2, "bs": 2**53 + 1, "act": "relu"}
    store.record(rid, IntervalRecord(0, big, big + 5, hp, None, "k", 1 / 3,
                                     checkpoint_size=5 * 2**30),
                 [EventRecord("exploit", 1, big + 5, donor_id=0, donor_step=big + 5)],
                 [MemberUpdate(0, hp, big + 5, "k", "training")])
    iv = store.intervals(rid)[0]
    assert (iv["start_step"], iv["end_step"], iv["score"]) == (big, big + 5, 1 / 3)
    assert iv["hparams"] == hp and type(iv["hparams"]["bs"]) is int
    assert store.checkpoints(rid)[0]["size"] == 5 * 2**30
    assert store.scores(rid)[0]["step"] == big + 5 and store.members(rid)[0]["step"] == big + 5
    assert store.events(rid)[0]["donor_step"] == big + 5


def test_timestamps_are_utc_iso_strings(store):
    rid = _new_run(store)
    store.record(rid, IntervalRecord(0, 0, 5, {"lr": 0.1}, None, "k", 0.5), [], [])
    run = store.find_run()
    for stamp in (run["created_at"], run["updated_at"], store.intervals(rid)[0]["created_at"],
                  store.checkpoints(rid)[0]["created_at"]):
        when = datetime.fromisoformat(stamp)
        assert when.utcoffset() == timedelta(0)
        assert abs((datetime.now(timezone.utc) - when).total_seconds()) < 600


def test_runs_sharing_a_store_are_found_by_directory(store):
    members = [MemberUpdate(0, {"lr": 0.1}, 0, None, "training")]
    a = store.create_run("a", {"run_dir": "/runs/a"}, SPACE.to_dict(), members)
    b = store.create_run("b", {"run_dir": "/runs/b"}, SPACE.to_dict(), members)
    assert store.find_run(run_dir="/runs/a")["id"] == a
    assert store.find_run()["id"] == b  # the latest
    assert store.find_run("a", run_dir="/runs/a")["run_dir"] == "/runs/a"
    with pytest.raises(StoreError, match="no run named 'a' of run directory /runs/b"):
        store.find_run("a", run_dir="/runs/b")
    # members of different runs never mix, ids keep growing
    store.record(b, IntervalRecord(0, 0, 5, {"lr": 0.2}, None, "kb", 0.7), [],
                 [MemberUpdate(0, {"lr": 0.2}, 5, "kb", "training")])
    assert store.members(a)[0]["step"] == 0 and store.members(b)[0]["step"] == 5
    assert store.intervals(a) == [] and b > a


def test_run_names_too_long_for_the_schema_are_refused(store):
    with pytest.raises(StoreError, match="at most 256"):
        _new_run(store, name="x" * 257)
    assert _new_run(store, name="x" * 256) > 0


def test_nul_characters_in_an_error_are_kept_visible(store):
    rid = _new_run(store)
    store.record(rid, IntervalRecord(0, 0, 5, {"lr": 0.1}, None, None, None,
                                     error="bad\x00byte"), [], [])
    assert store.intervals(rid)[0]["error"] == "bad\\x00byte"


def test_one_update_over_many_members_checks_every_row(store):
    # the members' updates of a batch run as one executemany on the driver: each row
    # must have matched (the drivers sum the rows an executemany changed)
    rid = _new_run(store)
    steps = [StepRecord(IntervalRecord(i, 0, 5, {"lr": 0.1}, None, f"k{i}", 0.5 + i),
                        [], [MemberUpdate(i, {"lr": 0.2}, 5, f"k{i}", "training")])
             for i in range(3)]
    store.record_steps(rid, steps)
    assert [(m["step"], m["score"]) for m in store.members(rid)] == [(5, 0.5), (5, 1.5), (5, 2.5)]
    bad = [StepRecord(None, [], [MemberUpdate(i, {"lr": 0.3}, 10, None, "training")])
           for i in (0, 99, 1)]
    with pytest.raises(StoreError, match=r"lacks a member among \[0, 1, 99\]"):
        store.record_steps(rid, bad)
    assert [m["step"] for m in store.members(rid)] == [5, 5, 5]  # all or nothing


def test_flagged_checkpoints_are_deleted_and_others_kept(store):
    rid = _new_run(store)
    store.record_steps(rid, [StepRecord(IntervalRecord(i, 0, 5, {"lr": 0.1}, None, f"k{i}", 0.5))
                             for i in range(3)])
    store.record(rid, None, [], [], deleted_checkpoints=["k0", "k2"])
    assert [c["key"] for c in store.checkpoints(rid)] == ["k1"]
    flags = {c["key"]: c["deleted"] for c in store.checkpoints(rid, include_deleted=True)}
    assert flags == {"k0": True, "k1": False, "k2": True}


def test_a_statement_that_needs_sqlalchemy_at_run_time_is_not_prepared(store):
    from sqlalchemy import insert

    from torchpbt.store.models import ScoreRow
    from torchpbt.store.step_sql import Prepared

    # created_at has a Python default: run on the driver, it would be left empty
    with pytest.raises(ValueError, match="give every value"):
        Prepared(insert(ScoreRow), store.engine.dialect, ["run_id", "member_id", "step"])


def test_last_update_is_written_once_a_second_unless_state_or_status_change(store):
    rid = _new_run(store)
    now = [100.0]
    store._clock = lambda: now[0]

    def stamp() -> str:
        return store.find_run()["updated_at"]

    def step(i: int, **kw) -> None:
        store.record(rid, IntervalRecord(0, i, i + 1, {"lr": 0.1}, None, None, 0.5), [], [], **kw)

    step(0)
    first = stamp()
    now[0] += 0.5
    step(1)  # half a second later, nothing but steps: the run row is left alone
    assert stamp() == first and len(store.intervals(rid)) == 2
    step(2, scheduler_state={"rng": 2})  # a new state is always written, with its time
    second = stamp()
    assert second > first and store.find_run()["scheduler_state"] == {"rng": 2}
    now[0] += 0.2
    step(3, status="done")
    third = stamp()
    assert store.find_run()["status"] == "done" and third > second
    now[0] += 0.9
    step(4)
    assert stamp() == third
    now[0] += 0.1
    step(5)
    assert stamp() > third  # a second after the last write: written again
