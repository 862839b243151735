"""End to end on a real PostgreSQL server: run, load, status, export, report,
SIGKILL + resume, all with ``storage="postgresql+psycopg://..."``; and the same
seed gives the same run on PostgreSQL as on SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SPACE, TinyNet
from test_resume import OPTS, SCRIPT, TESTS, _log

import torchpbt as pbt
from torchpbt.ui.cli import main as cli

pytestmark = pytest.mark.slow  # end to end: processes, files, browsers


@pytest.fixture(scope="module")
def reference(pg_server, tmp_path_factory):
    """An uninterrupted run, stored on PostgreSQL."""
    url = pg_server.new_database()
    result = pbt.run(TinyNet, SPACE, run_dir=tmp_path_factory.mktemp("ref") / "run",
                     storage=url, **OPTS)
    yield result
    pg_server.drop_database(url)


def test_run_load_status_export_on_postgresql(tmp_path, pg_url, reference, capsys):
    run_dir = tmp_path / "run"
    result = pbt.run(TinyNet, SPACE, run_dir=run_dir, storage=pg_url, **OPTS)
    assert result.storage == pg_url and result.run["status"] == "done"
    assert not (run_dir / "torchpbt.db").exists()  # everything went to the server
    assert result.run["run_dir"] == str(run_dir.resolve())
    loaded = pbt.load(run_dir, pg_url)
    assert _log(loaded) == _log(result) == _log(reference)
    assert len(loaded.exploits) > 0 and all(m["step"] == 30 for m in loaded.members)
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
    # the same seed on SQLite gives the same run: the two backends keep one contract
    on_sqlite = pbt.run(TinyNet, SPACE, run_dir=tmp_path / "sqlite", **OPTS)
    assert _log(on_sqlite) == _log(loaded)

    capsys.readouterr()
    assert cli(["status", str(run_dir), "--storage", pg_url]) in (0, None)
    out = capsys.readouterr().out
    assert "done" in out and "member" in out.lower()
    assert cli(["export", str(run_dir), "--storage", pg_url, "--format", "json",
                "--out", str(tmp_path / "json")]) in (0, None)
    exported = json.loads((tmp_path / "json" / "run.json").read_text())
    assert len(exported["intervals"]) == len(loaded.intervals)
    # without --storage the directory holds no store: the message says what to pass
    assert cli(["status", str(run_dir)]) == 2
    assert "storage URL" in capsys.readouterr().err


def _crash(run_dir: Path, url: str, point: str) -> None:
    opts = {k: v for k, v in OPTS.items() if k != "exploit"}
    code = SCRIPT.format(tests=str(TESTS), opts=json.dumps({**opts, "ks": None, "storage": url}),
                         run_dir=str(run_dir))
    proc = subprocess.run([sys.executable, "-c", code],
                          env={**os.environ, "TORCHPBT_CRASH_AT": point},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert pbt.load(run_dir, url).run["status"] == "running"


@pytest.mark.parametrize("point", [
    "store_commit:9",   # inside the PostgreSQL transaction, before COMMIT
    "before_submit:15",  # committed, next interval not yet handed out
])
def test_sigkill_then_resume_on_postgresql(tmp_path, pg_url, reference, point):
    run_dir = tmp_path / "run"
    _crash(run_dir, pg_url, point)
    before = pbt.load(run_dir, pg_url)
    resumed = pbt.resume(run_dir, storage=pg_url, progress=False)
    assert resumed.run["status"] == "done"
    assert _log(resumed) == _log(reference)
    assert len(resumed.intervals) > len(before.intervals)
    assert [e["kind"] for e in resumed.events].count("resume") == 1


def test_two_runs_share_one_postgresql_database(tmp_path, pg_url, reference):
    """Each run directory finds its own run in the shared store, whatever the order."""
    _crash(tmp_path / "a", pg_url, "after_commit:5")
    b = pbt.run(TinyNet, SPACE, run_dir=tmp_path / "b", storage=pg_url,
                **{**OPTS, "seed": 12})
    a = pbt.resume(tmp_path / "a", storage=pg_url, progress=False)
    assert (a.run["name"], b.run["name"]) == ("a", "b")
    assert _log(a) == _log(reference) and _log(b) != _log(reference)
    assert _log(pbt.load(tmp_path / "b", pg_url)) == _log(b)


def test_without_the_driver_the_postgresql_tests_skip_saying_why(monkeypatch):
    from pg import PgUnavailable, start_server

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    with pytest.raises(PgUnavailable, match=r"psycopg driver is not installed.*torchpbt\[postgres\]"):
        start_server()
