"""The HTML report: figures, their data checked against the events, partial runs, CLI,
and a real render in headless Chromium."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SPACE, TinyNet

import torchpbt as pbt
from torchpbt.algorithm.space import Gene
from torchpbt.analysis import lineage
from torchpbt.ui import report_figures as rf
from torchpbt.ui.cli import main as cli_main
from torchpbt.ui.display import fmt
from torchpbt.ui.report import find_chromium, render_html, screenshot, write_report

matplotlib = pytest.importorskip("matplotlib")

TESTS = Path(__file__).parent
FIGURES = ("lineage.png", "hparams.png", "scores.png")
OPTS = dict(population=6, ready_every=5, steps=40, backend="serial", seed=3, progress=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("report") / "run"
    result = pbt.run(TinyNet, SPACE, run_dir=run_dir, **OPTS)
    assert len(result.exploits) >= 3  # enough exploits to make the lineage interesting
    return result, write_report(run_dir)


def test_report_of_a_finished_run_has_every_figure_and_the_schedule(finished):
    result, page = finished
    assert page == (result.run_dir / "report" / "report.html").resolve()
    text = page.read_text()
    for name in FIGURES:
        png = page.parent / name
        assert png.stat().st_size > 10_000, name
        assert matplotlib.image.imread(png).shape[2] in (3, 4)
        assert f'src="{name}"' in text
    best = result.best_member_id
    assert f"member {best}" in text and fmt(result.best_score) in text
    assert " → ".join(f"m{m}" for m in result.lineage()) in text
    for seg in result.schedule():
        assert f"<td>{seg['from_step']}–{seg['to_step']}</td><td>m{seg['member_id']}</td>" in text
        for v in seg["hparams"].values():
            assert f">{fmt(v)}</td>" in text
    assert f"<th>exploits</th><td>{len(result.exploits)}</td>" in text
    for key in ("population", "ready every", "Truncation(quantile=0.2)", "Perturb(", "generated"):
        assert key in text
    assert "<script" not in text and "http://" not in text and "https://" not in text


def test_lineage_figure_data_matches_the_events(finished):
    result, _ = finished
    d = rf.lineage_segments(result)
    scores = {(s["member_id"], s["step"]): s["score"] for s in result.scores}
    # one branch per exploit, from the donor's point to the receiver's next score
    assert len(d["branches"]) == len(result.exploits) > 0
    for b, e in zip(d["branches"], result.exploits, strict=True):
        assert (b["member_id"], b["step"], b["donor_id"], b["donor_step"]) == \
            (e["member_id"], e["step"], e["donor_id"], e["donor_step"])
        assert b["from"] == (e["donor_step"], scores[(e["donor_id"], e["donor_step"])])
        later = sorted(st for m, st in scores if m == e["member_id"] and st > e["step"])
        assert b["to"] == (later[0], scores[(e["member_id"], later[0])])
    # segments partition every member's scores and break exactly at its exploits
    cuts = {(e["member_id"], e["step"]) for e in result.exploits}
    assert sorted((s["member_id"], p) for s in d["segments"] for p in s["points"]) == \
        sorted((m, (st, sc)) for (m, st), sc in scores.items())
    for s in d["segments"]:
        steps = [p[0] for p in s["points"]]
        assert steps == sorted(steps)
        assert not any((s["member_id"], c) in cuts for c in range(steps[0], steps[-1]))
    per_member = {m: sum(s["member_id"] == m for s in d["segments"]) for m in range(6)}
    for m, n in per_member.items():
        assert n == 1 + sum(e["member_id"] == m and b["to"] is not None
                            for e, b in zip(result.exploits, d["branches"], strict=True))
    # the highlighted lineage is the best member's: Result.lineage(), ending at its score
    members = [p[0] for p in d["best_path"]]
    assert [m for i, m in enumerate(members) if i == 0 or members[i - 1] != m] == result.lineage()
    assert d["best_path"][-1] == (result.best_member_id, 40, result.best_score)
    assert d["first"] == {m: min((st, sc) for (mm, st), sc in scores.items() if mm == m)
                          for m in range(6)}
    assert all(d["last"][m][0] == 40 for m in range(6))


def test_mix_exploits_get_a_second_parent_branch(finished):
    result, _ = finished
    e = dict(result.exploits[0])
    e["detail"] = {**e["detail"], "mix": {"kind": "mix", "donor_id": 1, "donor_step": 5}}
    events = [e if x is result.exploits[0] else x for x in result.events]
    d = rf.lineage_segments(dataclasses.replace(result, events=events))
    (mb,) = d["mix_branches"]
    assert (mb["donor_id"], mb["donor_step"], mb["member_id"]) == (1, 5, e["member_id"])
    assert mb["from"] == (5, result.member_scores(1)[0][1]) and mb["to"] == d["branches"][0]["to"]


def test_hparam_axes_log_linear_and_categorical(finished):
    result, _ = finished
    fig = rf.hparams_figure(result)
    scales = {ax.get_ylabel().split("\n")[0]: ax.get_yscale() for ax in fig.axes}
    assert scales == {"lr": "log", "momentum": "linear", "batch_size": "log"}
    data = rf.hparam_data(result)
    assert len(data["lr"]["population"]) == len(result.intervals)
    trace = [(iv["member_id"], iv["start_step"], iv["end_step"]) for iv in
             lineage.trace(result.intervals, result.best_member_id)]
    assert [b[:3] for b in data["lr"]["best"]] == trace
    assert rf.axis_scale(pbt.Choice(["a", "b"])) == "category"
    assert rf.axis_scale(Gene(["conv3", "skip"])) == "category"
    assert rf.axis_scale(pbt.Int(1, 9)) == "linear"
    # a categorical hparam gets its values as tick labels
    space = {**result.run["space"], "opt": pbt.Choice(["sgd", "adam"]).to_dict()}
    intervals = [{**iv, "hparams": {**iv["hparams"], "opt": ["sgd", "adam"][iv["member_id"] % 2]}}
                 for iv in result.intervals]
    fake = dataclasses.replace(result, run={**result.run, "space": space}, intervals=intervals)
    ax = rf.hparams_figure(fake).axes[3]
    assert ax.get_ylabel().startswith("opt") and ax.get_yscale() == "linear"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sgd", "adam"]


def test_score_bands_best_median_worst(finished):
    result, _ = finished
    b = rf.score_bands(result)
    assert b["steps"] == list(range(5, 45, 5)) and set(b["count"]) == {6}
    for hi, med, lo in zip(b["best"], b["median"], b["worst"], strict=True):
        assert hi >= med >= lo
    assert b["best"][-1] == max(sc for _, sc in
                                (result.member_scores(m)[-1] for m in range(6)))
    flipped = rf.score_bands(dataclasses.replace(
        result, run={**result.run, "config": {**result.run["config"], "mode": "min"}}))
    assert flipped["best"] == b["worst"] and flipped["worst"] == b["best"]


def test_report_of_a_run_with_no_scores_yet(finished, tmp_path):
    result, _ = finished
    members = [{**m, "score": None, "step": 0} for m in result.members]
    empty = dataclasses.replace(result, members=members, intervals=[], scores=[], events=[],
                                run={**result.run, "status": "running"})
    assert rf.best_member(empty) is None
    for draw in (rf.lineage_figure, rf.hparams_figure, rf.scores_figure):
        draw(empty).savefig(tmp_path / "x.png")
    text = render_html(empty, [("x.png", "caption")], "now")
    assert "No member has a score yet" in text and "none yet" in text and "running" in text
    assert rf.best_member(dataclasses.replace(empty, members=[])) is None


CRASH = """
import sys
sys.path[:0] = [{tests!r}, {tests!r} + "/.."]
import torchpbt as pbt
from helpers import SPACE, TinyNet
pbt.run(TinyNet, SPACE, population=4, ready_every=5, steps=30, backend="serial", seed=11,
        run_dir={run_dir!r}, progress=False)
"""


def test_report_of_a_run_that_is_still_running(tmp_path):
    run_dir = tmp_path / "live"
    env = {**os.environ, "TORCHPBT_CRASH_AT": "after_commit:5"}
    proc = subprocess.run([sys.executable, "-c", CRASH.format(tests=str(TESTS),
                                                              run_dir=str(run_dir))],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    result = pbt.load(run_dir)
    assert result.run["status"] == "running" and len(result.scores) == 5
    page = write_report(run_dir, out=tmp_path / "out")
    text = page.read_text()
    assert all((page.parent / name).is_file() for name in FIGURES)
    assert "marks this run as running" in text and f"torchpbt resume {run_dir}" in text
    assert f"member {result.best_member_id}" in text
    assert "25 of 120 member steps" in text


def test_cli_report_and_its_errors(finished, tmp_path, capsys):
    result, _ = finished
    out = tmp_path / "cli"
    assert cli_main(["report", str(result.run_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str((out / "report.html").resolve())
    assert all((out / name).is_file() for name in (*FIGURES, "report.html"))
    assert cli_main(["report", str(tmp_path / "nope")]) == 2
    assert "torchpbt report: run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no torchpbt.db" in capsys.readouterr().err
    assert pbt.write_report is write_report


@pytest.mark.skipif(find_chromium() is None, reason=(
    "CHROMIUM IS NOT INSTALLED: the report is NOT rendered in a browser. Install it with "
    "`apt-get install -y chromium` (.ci/run does) to run this check."))
def test_report_renders_in_headless_chromium(finished, tmp_path):
    import numpy as np

    _, page = finished
    png = screenshot(page, tmp_path / "shot.png", width=1400, height=3000)
    img = matplotlib.image.imread(png)
    assert img.shape[:2] == (3000, 1400)
    rgb = (img[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    colors = np.unique(rgb, axis=0)
    assert len(colors) > 500, f"only {len(colors)} colors: a blank or unstyled page"
    not_white = (rgb < 245).any(axis=1).mean()
    assert 0.03 < not_white < 0.9, not_white
    # the figures were loaded: the lineage's red (#d62728) is on the page
    assert ((abs(rgb.astype(int) - [214, 39, 40]).sum(axis=1)) < 30).sum() > 200
