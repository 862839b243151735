"""Schedules as objects, replaying a lineage from scratch, status --watch, TensorBoard export."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import threading
from pathlib import Path

import pytest
import torch
from helpers import QSPACE, SPACE, Quadratic, TinyNet

import torchpbt as pbt
from torchpbt.analysis import schedule as schedule_module
from torchpbt.analysis.replay import replay_run, replay_schedule
from torchpbt.ui import cli
from torchpbt.ui.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quad(tmp_path_factory) -> pbt.Result:
    """A deterministic run whose best member's weights crossed members."""
    run_dir = tmp_path_factory.mktemp("replay") / "quad"
    r = pbt.run(Quadratic, QSPACE, population=4, ready_every=5, steps=40, backend="serial",
                seed=1, progress=False, run_dir=run_dir)
    assert len(set(r.lineage())) > 1, "the test needs a lineage across members"
    return r


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> pbt.Result:
    run_dir = tmp_path_factory.mktemp("replay") / "tiny"
    r = pbt.run(TinyNet, SPACE, population=4, ready_every=10, steps=60, backend="serial",
                seed=4, progress=False, run_dir=run_dir)
    assert len(set(r.lineage())) > 1, "the test needs a lineage across members"
    return r


# -- Schedule -----------------------------------------------------------------
def test_schedule_from_run_follows_the_lineage_and_answers_at(quad):
    s = pbt.Schedule.from_run(quad.run_dir)
    assert s.member_id == quad.best_member_id and s.seed == 1 and s.run == quad.run["name"]
    # the weights' age, not the member's step: an async donor may have been behind
    assert s.total == quad.schedule()[-1]["to_step"] and s.segments[0].from_step == 0
    assert s.score == quad.best_score
    assert [seg.member_id for seg in s][-1] == quad.best_member_id
    for merged in quad.schedule():  # the summary's merged view agrees at every step
        for step in range(merged["from_step"], merged["to_step"]):
            assert s.at(step) == merged["hparams"]
    assert s.at(s.total - 1) == s.segments[-1].hparams
    for bad in (s.total, -1, 1000):
        with pytest.raises(pbt.ScheduleError, match=rf"outside the schedule.*0 to {s.total - 1}"):
            s.at(bad)
    with pytest.raises(TypeError, match="int step"):
        s.at(1.5)
    s.at(0)["lr"] = -1.0  # a copy: the schedule cannot be changed through it
    assert s.at(0)["lr"] > 0
    assert s.changes()[0] == (0, s.at(0))
    other = pbt.Schedule.from_run(quad.run_dir, member=0)
    assert other.member_id == 0 and other.segments[-1].member_id == 0


def test_schedule_json_round_trip_keeps_types(tmp_path, tiny):
    s = pbt.Schedule.from_run(tiny.run_dir)
    back = pbt.Schedule.from_json(s.to_json(tmp_path / "s.json"))
    assert back == s
    assert all(type(seg.hparams["batch_size"]) is int for seg in back)
    assert all(type(seg.hparams["lr"]) is float for seg in back)
    hand = pbt.Schedule([{"from_step": 0, "to_step": 3, "hparams": {"lr": 1.0, "bs": 32,
                                                                     "opt": "sgd", "nest": True}},
                         {"from_step": 3, "to_step": 5, "hparams": {"lr": 0.5, "bs": 64,
                                                                     "opt": None, "nest": False}}])
    again = pbt.Schedule.from_json(hand.to_json(tmp_path / "h.json"))
    assert again == hand and again.seed is None
    assert [type(v) for v in again.at(0).values()] == [float, int, str, bool]
    assert again.at(4) == {"lr": 0.5, "bs": 64, "opt": None, "nest": False}


@pytest.mark.parametrize("segments, match", [
    ([], "at least one segment"),
    ([{"from_step": 1, "to_step": 3, "hparams": {}}], "contiguous from step 0"),
    ([{"from_step": 0, "to_step": 3, "hparams": {}}, {"from_step": 4, "to_step": 5,
                                                      "hparams": {}}], "should start at 3"),
    ([{"from_step": 0, "to_step": 0, "hparams": {}}], "non-empty"),
    ([{"from_step": 0, "hparams": {}}], "lacks to_step"),
    ([{"from_step": 0.0, "to_step": 2, "hparams": {}}], "must be an int"),
])
def test_bad_schedules_are_refused_clearly(segments, match):
    with pytest.raises(pbt.ScheduleError, match=match):
        pbt.Schedule(segments)


def _snippet(text: str) -> str:
    """The 6-line plain-PyTorch example (docstring and README carry the same one)."""
    block = re.search(r"^( *import torchpbt as pbt\n *schedule = .*?"
                      r"train_one_step\(model, optimizer\))", text, re.S | re.M).group(1)
    lines = [ln for ln in block.splitlines() if ln.strip()]
    assert len(lines) == 6
    indent = min(len(ln) - len(ln.lstrip()) for ln in lines)
    return "\n".join(ln[indent:] for ln in lines)


def test_schedule_snippet_drives_a_plain_pytorch_loop(tmp_path, monkeypatch):
    doc, readme = _snippet(schedule_module.__doc__), _snippet((ROOT / "README.md").read_text())
    assert doc == readme
    pbt.Schedule([{"from_step": 0, "to_step": 3, "hparams": {"lr": 0.1}},
                  {"from_step": 3, "to_step": 5, "hparams": {"lr": 0.02}}]).to_json(
        tmp_path / "schedule.json")
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    seen = []

    def train_one_step(model, optimizer):
        seen.append(optimizer.param_groups[0]["lr"])
        loss = model(torch.ones(1, 2)).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    monkeypatch.chdir(tmp_path)
    exec(doc, {"model": model, "optimizer": optimizer, "train_one_step": train_one_step})
    assert seen == [0.1, 0.1, 0.1, 0.02, 0.02]


# -- replay ---------------------------------------------------------------------
def test_replay_reproduces_the_best_quadratic_exactly(quad):
    assert pbt.replay(quad.run_dir) == quad.best_score
    done = replay_run(quad.run_dir)
    assert done.scores == [seg.score for seg in done.schedule]
    assert done.same_weights == [True] * len(done.schedule)  # every interval, bit for bit


def test_replay_reproduces_tinynet_exactly_and_needs_the_runs_seeds(tiny):
    done = replay_run(tiny.run_dir)
    assert done.score == tiny.best_score
    assert done.scores == [seg.score for seg in done.schedule]
    assert done.same_weights == [True] * len(done.schedule)
    # the per-interval seeds are what makes it exact: any other seed trains other weights
    wrong = replay_schedule(TinyNet, dataclasses.replace(done.schedule, seed=5))
    assert not any(wrong.same_weights)


def test_replay_cli_for_another_member_and_an_unknown_one(quad, capsys):
    other = next(m for m in quad.members if m["member_id"] != quad.best_member_id)
    mid = other["member_id"]
    assert pbt.replay(quad.run_dir, member=mid) == other["score"]
    assert cli_main(["replay", str(quad.run_dir), "--member", str(mid)]) == 0
    out = capsys.readouterr().out
    assert f"member {mid} of run" in out and "identical" in out
    assert cli_main(["replay", str(quad.run_dir), "--member", "99"]) == 2
    assert "has no member 99; its members are 0–3" in capsys.readouterr().err
    with pytest.raises(pbt.ScheduleError, match="has no member 7"):
        pbt.replay(quad.run_dir, member=7)


def test_replay_refuses_a_schedule_without_seeds():
    hand = pbt.Schedule([{"from_step": 0, "to_step": 3, "hparams": {"lr": 0.1}}])
    with pytest.raises(pbt.ScheduleError, match="no run seed"):
        replay_schedule(Quadratic, hand)


# -- status --watch and the live display -----------------------------------------
def _set_status(run_dir: Path, status: str) -> None:
    with sqlite3.connect(run_dir / "torchpbt.db", timeout=10) as c:
        c.execute("UPDATE runs SET status = ?", (status,))


def test_watch_on_a_finished_run_shows_one_frame(quad, capsys):
    assert cli_main(["status", str(quad.run_dir), "--watch", "--interval", "0.05"]) == 0
    out = capsys.readouterr().out
    assert out.count("refreshed") == 1 and "— done" in out
    assert "last exploit" in out and re.search(r"step \d+ ← \d", out)


def test_watch_refreshes_until_the_run_stops_running(quad, capsys, monkeypatch):
    run_dir = quad.run_dir
    _set_status(run_dir, "running")
    reads = threading.Semaphore(0)

    class CountingResult(pbt.Result):
        @classmethod
        def load(cls, *args, **kwargs):
            result = super().load(*args, **kwargs)
            reads.release()
            return result

    def finish_after_two_frames():  # as a controller would, from elsewhere
        for _ in range(2):
            reads.acquire(timeout=60)
        _set_status(run_dir, "done")

    monkeypatch.setattr(cli, "Result", CountingResult)
    flipper = threading.Thread(target=finish_after_two_frames)
    flipper.start()
    try:
        assert cli_main(["status", str(run_dir), "--watch", "--interval", "0.05"]) == 0
    finally:
        flipper.join()
        _set_status(run_dir, "done")
    out = capsys.readouterr().out
    frames = out.split("refreshed")
    assert len(frames) - 1 >= 3 and out.count("— running") >= 2
    assert "— done" in frames[-2]  # the last frame (its header precedes the marker)
    with pytest.raises(SystemExit, match="--interval"):
        cli_main(["status", str(run_dir), "--watch", "--interval", "0"])


def test_live_display_shows_the_last_exploit(tmp_path, capsys):
    pbt.run(Quadratic, QSPACE, population=4, ready_every=5, steps=20, backend="serial", seed=1,
            progress=True, summary=False, run_dir=tmp_path / "live")
    out = capsys.readouterr().out
    assert "last exploit" in out and re.search(r"step \d+ ← \d", out)


# -- TensorBoard ---------------------------------------------------------------------
def _scalars(logdir: Path, member: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir / member))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_export_writes_scores_and_hparams_per_member(tmp_path, quad):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed "
                        "(pip install 'torchpbt[tensorboard]')")
    logdir = pbt.export_tensorboard(quad.run_dir, tmp_path / "tb")
    for m in quad.members:
        mid = m["member_id"]
        got = _scalars(logdir, f"member_{mid}")
        want = [(step, score) for step, score in quad.member_scores(mid) if score is not None]
        assert got["score"] == [(s, pytest.approx(v, rel=1e-6, abs=1e-30)) for s, v in want]
        assert got["hparams/lr"] == [(s, pytest.approx(h["lr"], rel=1e-6))
                                     for s, h in quad.hparam_history(mid)]
    files = sorted(logdir.rglob("events.out.tfevents*"))
    # incremental: nothing new, nothing written; the CLI (also --watch) on a finished run
    assert cli_main(["export", str(quad.run_dir), "--format", "tensorboard", "--out",
                     str(logdir), "--watch"]) == 0
    assert sorted(logdir.rglob("events.out.tfevents*")) == files
    assert len(_scalars(logdir, "member_0")["score"]) == len(quad.member_scores(0))


def test_tensorboard_export_appends_only_new_intervals(tmp_path, quad):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed "
                        "(pip install 'torchpbt[tensorboard]')")
    ids = [iv["id"] for iv in quad.intervals]
    half = ids[len(ids) // 2]
    logdir = tmp_path / "tb"
    logdir.mkdir()  # as if an earlier export of the running run had got this far
    (logdir / ".torchpbt-tensorboard.json").write_text(
        f'{{"run": "{quad.run["name"]}", "last_interval": {half}}}')
    pbt.export_tensorboard(quad.run_dir, logdir)
    written = sum(len(_scalars(logdir, p.name).get("score", [])) for p in logdir.iterdir()
                  if p.is_dir())
    assert written == sum(1 for iv in quad.intervals if iv["id"] > half)
    (logdir / ".torchpbt-tensorboard.json").write_text('{"run": "other", "last_interval": 0}')
    with pytest.raises(pbt.StoreError, match="export of run other"):
        pbt.export_tensorboard(quad.run_dir, logdir)


def test_run_with_tensorboard_logs_while_it_goes(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed "
                        "(pip install 'torchpbt[tensorboard]')")
    r = pbt.run(TinyNet, SPACE, population=3, ready_every=5, steps=20, backend="serial",
                seed=2, progress=False, run_dir=tmp_path / "r", tensorboard=True)
    logdir = tmp_path / "r" / "tensorboard"
    for m in r.members:
        got = _scalars(logdir, f"member_{m['member_id']}")
        want = [(i["end_step"], i["score"]) for i in r.intervals
                if i["member_id"] == m["member_id"] and i["score"] is not None]
        assert got["score"] == [(s, pytest.approx(v, rel=1e-6)) for s, v in want]
        assert len(got["hparams/lr"]) == len(want)
