"""Schema migrations: the revisions agree with the models, revision 0001 is what
torchpbt 0.1 wrote, and an older store is upgraded on open without losing
anything, atomically, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, BigInteger, Boolean, bindparam, create_engine, inspect, text

import torchpbt as pbt
from torchpbt.store import SCHEMA_VERSION, IntervalRecord, MemberUpdate, SQLStore, StoreError
from torchpbt.store.migrate import HEAD, VERSION_TABLE, alembic_config, read_versions
from torchpbt.store.models import Base
from torchpbt.ui.cli import main as cli

DUMP = Path(__file__).parents[1] / "data" / "store-schema1.sql"  # a run written by torchpbt 0.1
# a sync run written by schema 2 and killed mid-generation (members 0, 1 waiting, 2 running),
# with the checkpoints it still referenced
SCHEMA2 = Path(__file__).parents[1] / "data" / "store-schema2-sync"
RUN_DIR = "/runs/old"


def _engine(url: str):
    return create_engine(url)


def _versions(url: str) -> tuple[int | None, str | None]:
    engine = _engine(url)
    try:
        with engine.connect() as c:
            return read_versions(c)
    finally:
        engine.dispose()


def _migrate(url: str, revision: str, down: bool = False) -> None:
    engine = _engine(url)
    try:
        with engine.begin() as c:
            (command.downgrade if down else command.upgrade)(alembic_config(c), revision)
    finally:
        engine.dispose()


def _write_schema1_run(url: str, without_alembic: bool = False) -> None:
    """A database as schema 1 had it, with one run in it, written in plain SQL."""
    _migrate(url, "0001")
    engine = _engine(url)
    when = "2024-01-02 03:04:05" + ("+00" if url.startswith("postgresql") else ".000000")
    typed = dict(config=JSON, space=JSON, state=JSON, hp=JSON, detail=JSON, valid=Boolean,
                 deleted=Boolean)

    def sql(c, statement: str, **params):
        binds = [bindparam(k, type_=typed[k]) for k in params if k in typed]
        return c.execute(text(statement).bindparams(*binds), params)

    try:
        with engine.begin() as c:
            sql(c, "INSERT INTO runs (name, status, created_at, updated_at, config, space, "
                   "scheduler_state) VALUES ('old', 'done', :t, :t, :config, :space, :state)",
                t=when, config={"mode": "max", "run_dir": RUN_DIR, "seed": 3},
                space={"lr": {"type": "float"}}, state={"history": [0.5, None]})
            rid = c.execute(text("SELECT id FROM runs WHERE name = 'old'")).scalar()
            for m in (0, 1):
                sql(c, "INSERT INTO members VALUES (:r, :m, :hp, 10, 'k1', 'done', NULL, 0, 0.5)",
                    r=rid, m=m, hp={"lr": 0.1, "bs": 8})
            sql(c, "INSERT INTO intervals (run_id, member_id, start_step, end_step, hparams, "
                   "end_checkpoint, score, duration_s, worker, created_at) "
                   "VALUES (:r, 0, 0, 10, :hp, 'k1', 0.5, 0.1, 'serial', :t)",
                r=rid, hp={"lr": 0.1, "bs": 8}, t=when)
            sql(c, "INSERT INTO scores (run_id, member_id, step, score, valid, created_at) "
                   "VALUES (:r, 0, 10, 0.5, :valid, :t)", r=rid, valid=True, t=when)
            sql(c, "INSERT INTO events (run_id, kind, member_id, step, detail, created_at) "
                   "VALUES (:r, 'stop', 0, 10, :detail, :t)", r=rid, detail={"why": "x"}, t=when)
            sql(c, "INSERT INTO checkpoints VALUES (:r, 'k1', 0, 10, 1577, :deleted, :t)",
                r=rid, deleted=False, t=when)
            if without_alembic:  # exactly what torchpbt 0.1 left: no alembic table
                c.execute(text(f"DROP TABLE {VERSION_TABLE}"))
    finally:
        engine.dispose()


def _assert_upgraded_and_intact(url: str) -> None:
    store = SQLStore(url, create=False)
    try:
        run = store.find_run(run_dir=RUN_DIR)  # the new column, filled from the config
        assert (run["name"], run["status"], run["run_dir"]) == ("old", "done", RUN_DIR)
        assert run["config"]["seed"] == 3 and run["scheduler_state"] == {"history": [0.5, None]}
        assert run["created_at"] == "2024-01-02T03:04:05+00:00"
        rid = run["id"]
        assert [m["hparams"] for m in store.members(rid)] == [{"lr": 0.1, "bs": 8}] * 2
        assert [(i["end_step"], i["score"]) for i in store.intervals(rid)] == [(10, 0.5)]
        assert [(s["score"], s["valid"]) for s in store.scores(rid)] == [(0.5, True)]
        assert [e["detail"] for e in store.events(rid)] == [{"why": "x"}]
        assert [c["key"] for c in store.checkpoints(rid)] == ["k1"]
        # the schema 2 store goes on working: new ids, 64-bit steps
        new = store.create_run("new", {"run_dir": "/runs/new"}, {},
                               [MemberUpdate(0, {"lr": 0.2}, 0, None, "training")])
        store.record(new, IntervalRecord(0, 0, 2**33, {"lr": 0.2}, None, "k2", 0.9,
                                         checkpoint_size=2**32), [],
                     [MemberUpdate(0, {"lr": 0.2}, 2**33, "k2", "training")])
        assert new > rid and store.checkpoints(new)[0]["size"] == 2**32
        assert store.find_run(run_dir="/runs/new")["id"] == new
    finally:
        store.close()
    assert _versions(url) == (SCHEMA_VERSION, HEAD)


def test_head_revision_is_the_schema_version():
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [HEAD]
    chain = [s.revision for s in script.walk_revisions("base", "heads")]
    assert chain == [f"{v:04d}" for v in range(SCHEMA_VERSION, 0, -1)]


def test_migrations_create_exactly_the_models(store_url):
    SQLStore(store_url).close()
    engine = _engine(store_url)
    try:
        with engine.connect() as c:
            ctx = MigrationContext.configure(c, opts={"compare_type": True,
                                                      "version_table": VERSION_TABLE})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
    assert _versions(store_url) == (SCHEMA_VERSION, HEAD)


def _shape(path: Path) -> dict:
    """Tables, columns (type, nullable), keys and indexes of a SQLite file."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        insp = inspect(engine)
        return {t: (sorted((c["name"], str(c["type"]), c["nullable"])
                           for c in insp.get_columns(t)),
                    insp.get_pk_constraint(t)["constrained_columns"],
                    sorted((fk["constrained_columns"], fk["referred_table"])
                           for fk in insp.get_foreign_keys(t)),
                    sorted((i["name"], i["column_names"]) for i in insp.get_indexes(t)),
                    sorted(u["column_names"] for u in insp.get_unique_constraints(t)))
                for t in insp.get_table_names() if t != VERSION_TABLE}
    finally:
        engine.dispose()


def _load_dump(path: Path, dump: Path = DUMP) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript(dump.read_text())
    con.close()


def test_revision_0001_is_the_schema_torchpbt_0_1_wrote(tmp_path):
    _load_dump(tmp_path / "old.db")
    _migrate(f"sqlite:///{tmp_path / 'new.db'}", "0001")
    assert _shape(tmp_path / "new.db") == _shape(tmp_path / "old.db")


@pytest.mark.parametrize("without_alembic", [False, True], ids=["at-0001", "torchpbt-0.1"])
def test_schema_1_store_is_upgraded_on_open_and_keeps_its_data(store_url, without_alembic):
    _write_schema1_run(store_url, without_alembic)
    assert _versions(store_url) == (1, None if without_alembic else "0001")
    _assert_upgraded_and_intact(store_url)


def test_a_run_directory_of_torchpbt_0_1_opens(tmp_path, capsys):
    """The kept store of a real torchpbt 0.1 run (3 members, 9 intervals, 1 exploit)."""
    run_dir = tmp_path / "run"
    _load_dump(run_dir / "torchpbt.db")
    result = pbt.load(run_dir)
    assert (len(result.members), len(result.intervals), len(result.exploits)) == (3, 9, 1)
    assert result.run["status"] == "done" and result.run["run_dir"] == "/tmp/wt8_old/run"
    assert _versions(f"sqlite:///{run_dir / 'torchpbt.db'}") == (SCHEMA_VERSION, HEAD)
    assert cli(["status", str(run_dir)]) in (0, None)
    assert "done" in capsys.readouterr().out


def _raw_state(db: Path) -> dict:
    con = sqlite3.connect(db)
    try:
        return json.loads(con.execute("SELECT scheduler_state FROM runs").fetchone()[0])
    finally:
        con.close()


def test_a_schema_2_run_is_split_per_member_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    db = run_dir / "torchpbt.db"
    _load_dump(db, SCHEMA2 / "torchpbt.sql")
    shutil.copytree(SCHEMA2 / "checkpoints", run_dir / "checkpoints")
    old = _raw_state(db)
    url = f"sqlite:///{db}"
    assert _versions(url) == (2, "0002")
    store = SQLStore(url, create=False)  # upgraded here
    try:
        run = store.find_run()
        states = store.member_states(run["id"])
    finally:
        store.close()
    sched = old["scheduler"]
    assert run["scheduler_state"] == {"scheduler": {"rng": sched["rng"], "bad_checkpoints": []},
                                      "sharing": None}
    assert {i: s["scheduler"] for i, s in states.items()} == {
        m["member_id"]: {**m, "waiting": m["member_id"] in sched["waiting"]}
        for m in sched["members"]}
    assert [s["task"] for s in states.values() if s["task"]] == old["in_flight"]
    assert {s["retries"] for s in states.values()} == {0}

    _migrate(url, "0002", down=True)  # and back: the schema 2 layout, exactly
    assert _raw_state(db) == old and _versions(url) == (2, "0002")

    result = pbt.resume(run_dir, progress=False)  # upgrades again, then runs to the end
    assert result.run["status"] == "done"
    assert [m["step"] for m in result.members] == [8, 8, 8]
    done = [(i["member_id"], i["start_step"]) for i in result.intervals]
    assert sorted(done) == [(m, s) for m in range(3) for s in (0, 2, 4, 6)]  # none twice
    # 0 and 1 had reported for step 2 (waiting): only 2's interval ran again
    assert done[:6] == [(0, 0), (1, 0), (2, 0), (0, 2), (1, 2), (2, 2)]


CRASH = """
import sys
from torchpbt.store import SQLStore
SQLStore(sys.argv[1], create=False)
"""


def test_crash_during_the_upgrade_changes_nothing(store_url):
    _write_schema1_run(store_url)
    env = {**os.environ, "TORCHPBT_CRASH_AT": "store_migrate"}
    proc = subprocess.run([sys.executable, "-c", CRASH, store_url], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _versions(store_url) == (1, "0001")  # every statement of the upgrade undone
    engine = _engine(store_url)
    try:
        insp = inspect(engine)
        assert "run_dir" not in {c["name"] for c in insp.get_columns("runs")}
        assert "ix_runs_run_dir" not in {i["name"] for i in insp.get_indexes("runs")}
    finally:
        engine.dispose()
    _assert_upgraded_and_intact(store_url)


def test_processes_opening_a_new_store_at_once_create_it_once(store_url):
    # the race is narrow: on SQLite open many new files, one after the other
    urls = ([store_url.replace("torchpbt.db", f"new-{i}.db") for i in range(25)]
            if store_url.startswith("sqlite") else [store_url])
    for url in urls:
        errors: list[BaseException] = []

        def open_store(url: str = url, errors: list = errors) -> None:
            try:
                SQLStore(url).close()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == [] and _versions(url) == (SCHEMA_VERSION, HEAD)


def test_downgrade_and_upgrade_again(store_url):
    store = SQLStore(store_url)
    store.create_run("r", {"run_dir": "/runs/r"}, {}, [MemberUpdate(0, {}, 0, None, "training")])
    store.close()
    _migrate(store_url, "0001", down=True)
    assert _versions(store_url) == (1, "0001")
    store = SQLStore(store_url, create=False)
    assert store.find_run(run_dir="/runs/r")["name"] == "r"
    store.close()


def test_unknown_database_is_not_touched(store_url):
    engine = _engine(store_url)
    with engine.begin() as c:  # somebody else's database with a table of its own
        c.execute(text("CREATE TABLE torchpbt_meta (key VARCHAR(64) PRIMARY KEY, "
                       "value VARCHAR(256))"))
    engine.dispose()
    with pytest.raises(StoreError, match="has no schema version; it was not written by"):
        SQLStore(store_url)
    assert _versions(store_url) == (0, None)


def test_big_integer_columns_on_postgresql(pg_url):
    SQLStore(pg_url).close()
    engine = _engine(pg_url)
    try:
        steps = {c["name"]: c["type"] for c in inspect(engine).get_columns("intervals")}
    finally:
        engine.dispose()
    assert isinstance(steps["end_step"], BigInteger)
