"""The live dashboard: its figures from plain runs, then the real page in headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import QSPACE, Quadratic

import torchpbt as pbt
from torchpbt.store import StoreError
from torchpbt.ui import dashboard

pytestmark = pytest.mark.slow  # end to end: processes, files, browsers

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return pbt.run(Quadratic, QSPACE, population=6, steps=60, ready_every=10, seed=3,
                   backend="serial", run_dir=tmp_path_factory.mktemp("dash") / "run",
                   progress=False)


def test_the_figures_show_every_member_with_hover_and_the_schedules(finished):
    lineage = dashboard.lineage_figure(finished)
    lines = [t for t in lineage.data if t.mode == "lines+markers"]
    assert {int(t.name.split()[1]) for t in lines} == set(range(6))
    hover = " ".join(x for t in lines for x in t.text)
    assert "member 0<br>step 10<br>score" in hover and "lr=" in hover
    assert sum(t.line.color == dashboard.BEST for t in lines) >= 1  # the best lineage
    copies = [t for t in lineage.data if t.mode == "lines"]
    assert len(copies) == len(finished.exploits) > 0  # one branch per exploit
    hp = dashboard.hparams_figure(finished)
    assert hp.layout.yaxis.type == "log"  # lr is log-scaled in the space
    assert len(dashboard.member_rows(finished)) == 6
    events = dashboard.event_rows(finished)
    assert any(r["what"].startswith("copied member") for r in events)
    assert "6 members" in dashboard.summary(finished)


def test_the_page_only_reads_the_store(finished):
    import sqlite3

    def dump() -> list[str]:
        with sqlite3.connect(finished.run_dir / "torchpbt.db") as db:
            return list(db.iterdump())

    before = dump()
    app = dashboard.make_app(finished.run_dir)
    refresh = next(iter(app.callback_map.values()))["callback"].__wrapped__
    for tick in range(3):
        summary, members, *_ = refresh(tick)
        assert len(members.children[1].children) == 6 and "done" in summary  # table rows
    assert dump() == before


def test_a_path_that_is_no_run_fails_before_serving(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        dashboard.make_app(tmp_path / "nope")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _has_intervals(run_dir: Path) -> bool:
    try:
        return bool(pbt.load(run_dir).intervals)
    except StoreError:  # not created yet
        return False


RUNNING = """
import sys
sys.path[:0] = [{tests!r}, {tests!r} + "/.."]
import torchpbt as pbt
from helpers import QSPACE, SlowQuadratic

class Slower(SlowQuadratic):
    pause = 0.15

if __name__ == "__main__":
    pbt.run(Slower, QSPACE, population=4, steps=600, ready_every=10, seed=1, backend="serial",
            run_dir={run_dir!r}, progress=False)
"""


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason=(
    "needs Debian's chromium and chromium-driver (apt-get install -y chromium "
    "chromium-driver; .ci/run does)"))
def test_the_page_shows_a_running_run_and_updates_in_chromium(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    run_dir = tmp_path / "live"
    script = tmp_path / "job.py"
    script.write_text(RUNNING.format(tests=str(TESTS), run_dir=str(run_dir)))
    port = _free_port()
    job = subprocess.Popen([sys.executable, str(script)], env=ENV, cwd=tmp_path)
    server = None
    driver = None
    try:
        deadline = time.monotonic() + 120
        while not _has_intervals(run_dir):
            assert time.monotonic() < deadline and job.poll() is None, "the run did not start"
            time.sleep(0.3)
        server = subprocess.Popen([sys.executable, "-m", "torchpbt", "dashboard",
                                   str(run_dir), "--port", str(port), "--interval", "0.5"],
                                  env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
        assert "torchpbt dashboard: http://127.0.0.1" in server.stdout.readline()
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
        # the page re-renders its tables on each refresh, so read them in one script call
        # (an element found first and read later may be gone: StaleElementReferenceException)
        wait = WebDriverWait(driver, 90, poll_frequency=0.3)

        def text_of(css: str) -> list[str]:
            return driver.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0]))"
                ".map(e => e.textContent);", css)
        for _ in range(100):  # the server may still be binding its port
            try:
                driver.get(f"http://127.0.0.1:{port}/")
                break
            except Exception:
                time.sleep(0.3)

        def intervals() -> int:
            text = " ".join(text_of("#summary"))
            return int(text.split(" intervals")[0].rsplit("· ", 1)[1]) if "intervals" in text else -1

        wait.until(lambda d: intervals() > 0)
        first = intervals()
        assert "running" in " ".join(text_of("#summary"))
        rows = text_of("#members tbody tr td:first-child")
        assert sorted(int(r) for r in rows) == [0, 1, 2, 3]
        wait.until(lambda d: text_of("#lineage .js-plotly-plot"))  # plotly draws after the tables
        wait.until(lambda d: intervals() > first)  # new intervals reach the page by themselves
    finally:
        if driver is not None:
            driver.quit()
        for p in (server, job):
            if p is not None:
                p.kill()
                p.wait()


def test_the_page_reads_a_run_on_postgresql(tmp_path, pg_url):
    run_dir = tmp_path / "pg"
    pbt.run(Quadratic, QSPACE, population=3, steps=20, ready_every=10, seed=2, backend="serial",
            run_dir=run_dir, storage=pg_url, progress=False)
    app = dashboard.make_app(run_dir, pg_url)
    refresh = next(iter(app.callback_map.values()))["callback"].__wrapped__
    summary, members, *_ = refresh(0)
    assert "3 members" in summary and len(members.children[1].children) == 3
