"""Every example runs as a file and through the CLI; status and export work on the run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import chains_are_complete

import torchpbt as pbt
from torchpbt.analysis.replay import replay_run
from torchpbt.ui.cli import main as cli_main

pytestmark = pytest.mark.slow  # end to end: processes, files, browsers

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def _py(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300)


def test_toy_example_runs_as_a_file_and_pbt_beats_grid(tmp_path):
    best = {}
    for variant in ("pbt", "grid"):
        p = _py(str(EXAMPLES / "toy_quadratic.py"), "--steps", "80", "--quiet", "--variant",
                variant, "--run-dir", str(tmp_path / variant), cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert "best true Q" in p.stdout
        best[variant] = pbt.load(tmp_path / variant).best_score
    # grid members can each only fix one coordinate; PBT combines them
    assert best["pbt"] > best["grid"] + 0.2


@pytest.mark.timeout(600)  # two CNN runs: ~2 min alone, near the default 300 s on a busy box
def test_nas_example_runs_as_a_file_and_through_the_cli(tmp_path):
    p = _py(str(EXAMPLES / "nas_cnn.py"), "--population", "8", "--steps", "60",
            "--ready-every", "10", "--backend", "serial", "--quiet", "--run-dir",
            str(tmp_path / "nas"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "best architecture: {'cell0'" in p.stdout and "test accuracy" in p.stdout
    r = pbt.load(tmp_path / "nas")
    assert any(e["detail"].get("mix", {}).get("kind") == "mix" for e in r.exploits)
    assert r.best_score > 0.3
    cli = [sys.executable, "-m", "torchpbt", "run", str(EXAMPLES / "nas_cnn.py"), "--",
           "--population", "4", "--steps", "20", "--ready-every", "10", "--backend", "serial",
           "--strategy", "mutation", "--quiet", "--run-dir", str(tmp_path / "cli")]
    q = subprocess.run(cli, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert q.returncode == 0, q.stderr
    assert pbt.load(tmp_path / "cli").run["config"]["exploit"] == "Mutation(fraction=0.25)"


def test_mnist1d_schedule_example_runs_as_a_file_and_through_the_cli(tmp_path):
    p = _py(str(EXAMPLES / "mnist1d_schedule.py"), "--population", "4", "--steps", "200",
            "--ready-every", "50", "--workers", "1", "--quiet", "--run-dir",
            str(tmp_path / "m1"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "test accuracy" in p.stdout and "its lr schedule: 0-" in p.stdout
    r = pbt.load(tmp_path / "m1")
    chains_are_complete(r, 200)
    assert r.member_steps == 4 * 200 and r.best_score > 0.2  # 10 classes: chance is 0.1
    cli = [sys.executable, "-m", "torchpbt", "run", str(EXAMPLES / "mnist1d_schedule.py"),
           "--", "--population", "2", "--steps", "40", "--ready-every", "20", "--workers", "1",
           "--quiet", "--run-dir", str(tmp_path / "cli")]
    q = subprocess.run(cli, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert q.returncode == 0, q.stderr
    assert pbt.load(tmp_path / "cli").member_steps == 80


def test_translation_rules_reorder_agree_and_split_words():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import translation as tr
    finally:
        sys.path.remove(str(EXAMPLES))
    d = tr._dictionary()
    out = tr._translate("the big cats sees a dog near the tree".split(), d)
    # noun, plural marker, adjectives after it; object; prep phrase; verb last + agreement
    assert out == [*d["the"], *d["cat"], "ri", *d["big"], *d["a"], *d["dog"], *d["near"],
                   *d["the"], *d["tree"], *d["sees"], "ma"]
    assert tr._translate("a cat sees the dogs".split(), d)[-1] == "to"  # singular subject
    assert tr.make_pairs(5, seed=7) == tr.make_pairs(5, seed=7) != tr.make_pairs(5, seed=8)
    vocab = tr.Vocab(["x y", "y z"])
    assert vocab.decode(vocab.encode(["z x y"])[0].tolist()) == "z x y"


def test_translation_example_runs_as_a_file_and_through_the_cli(tmp_path):
    p = _py(str(EXAMPLES / "translation.py"), "--population", "4", "--steps", "150",
            "--ready-every", "50", "--workers", "1", "--quiet", "--run-dir",
            str(tmp_path / "tr"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "test BLEU" in p.stdout
    r = pbt.load(tmp_path / "tr")
    chains_are_complete(r, 150)
    assert r.member_steps == 4 * 150 and r.best_score > 1.0  # an untrained model scores ~0
    cli = [sys.executable, "-m", "torchpbt", "run", str(EXAMPLES / "translation.py"), "--",
           "--population", "2", "--steps", "20", "--ready-every", "10", "--workers", "1",
           "--quiet", "--run-dir", str(tmp_path / "cli")]
    q = subprocess.run(cli, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert q.returncode == 0, q.stderr
    assert pbt.load(tmp_path / "cli").member_steps == 40


def test_mnist_example_runs_as_a_file_with_local_workers(tmp_path):
    p = _py(str(EXAMPLES / "mnist.py"), "--population", "4", "--steps", "60", "--ready-every",
            "20", "--workers", "2", "--run-dir", str(tmp_path / "mn"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "test accuracy" in p.stdout and "hparam schedule" in p.stdout
    assert f"report: {(tmp_path / 'mn' / 'report' / 'report.html').resolve()}" in p.stdout
    r = pbt.load(tmp_path / "mn")
    assert r.best_score > 0.3  # 10 classes: chance is 0.1
    # every final model trained all 60 steps; a copy of a donor ahead skips the steps between
    chains_are_complete(r, 60)
    assert r.member_steps == sum(iv["end_step"] - iv["start_step"] for iv in r.intervals) <= 240


def test_mnist_example_runs_vectorized_as_a_file_and_through_the_cli(tmp_path):
    p = _py(str(EXAMPLES / "mnist.py"), "--population", "4", "--steps", "60", "--ready-every",
            "20", "--backend", "vectorized", "--quiet", "--run-dir", str(tmp_path / "mv"),
            cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "test accuracy" in p.stdout
    r = pbt.load(tmp_path / "mv")
    assert r.run["config"]["backend"] == "vectorized" and r.best_score > 0.3
    assert {iv["worker"] for iv in r.intervals} == {"vectorized:cpu"}
    chains_are_complete(r, 60)
    assert r.member_steps == 240
    cli = [sys.executable, "-m", "torchpbt", "run", "--backend", "vectorized",
           str(EXAMPLES / "mnist.py"), "--", "--population", "2", "--steps", "20",
           "--ready-every", "10", "--quiet", "--run-dir", str(tmp_path / "cli")]
    q = subprocess.run(cli, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert q.returncode == 0, q.stderr
    assert pbt.load(tmp_path / "cli").run["config"]["backend"] == "vectorized"


def test_cli_runs_an_example_then_status_and_export(tmp_path):
    cli = [sys.executable, "-m", "torchpbt"]
    run_dir = tmp_path / "toy"
    p = subprocess.run([*cli, "run", str(EXAMPLES / "toy_quadratic.py"), "--", "--steps", "80",
                        "--quiet", "--run-dir", str(run_dir)], cwd=tmp_path, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([*cli, "status", str(run_dir)], env=ENV, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and "members" in p.stdout and "80/80" in p.stdout
    assert cli_main(["export", str(run_dir), "--format", "csv", "--out", str(tmp_path / "csv")]) == 0
    r = pbt.load(run_dir)
    with open(tmp_path / "csv" / "intervals.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(r.intervals) and "hparams.h0" in rows[0]
    with open(tmp_path / "csv" / "events.csv") as f:
        kinds = [row["kind"] for row in csv.DictReader(f)]
    assert kinds.count("exploit") == len(r.exploits) > 0
    assert cli_main(["export", str(run_dir), "--format", "json", "--out", str(tmp_path / "j")]) == 0
    doc = json.loads((tmp_path / "j" / "run.json").read_text())
    assert len(doc["scores"]) == len(r.scores) and len(doc["events"]) == len(r.events)


def test_cli_clear_errors(tmp_path, capsys):
    assert cli_main(["status", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["export", str(tmp_path / "empty")]) == 2
    assert "holds no torchpbt.db" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no main"):
        (tmp_path / "x.py").write_text("x = 1\n")
        cli_main(["run", str(tmp_path / "x.py")])


def test_readme_snippet_runs(tmp_path):
    import re

    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    small = block.replace("steps=2000", "steps=40").replace("ready_every=100", "ready_every=10")
    assert small != block
    (tmp_path / "snippet.py").write_text(small)
    p = _py("snippet.py", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    r = pbt.load(run_dir)
    assert r.best_score > 0.6  # a learnable task, scored on held-out data
    # every member sees the same data, so the best member's schedule replays exactly
    sys.path.insert(0, str(tmp_path))
    try:
        replayed = replay_run(run_dir)
    finally:
        sys.path.remove(str(tmp_path))
    assert replayed.same_weights and all(replayed.same_weights)
    assert replayed.score == r.best_score


def test_knowledge_sharing_example_runs_on_idx_files(tmp_path):
    import numpy as np

    from torchpbt import datasets

    rng = np.random.default_rng(0)
    for name, shape in (("train-images-idx3-ubyte", (300, 28, 28)), ("train-labels-idx1-ubyte", (300,)),
                        ("t10k-images-idx3-ubyte", (50, 28, 28)), ("t10k-labels-idx1-ubyte", (50,))):
        datasets.write_idx(tmp_path / name, rng.integers(0, 10 if len(shape) == 1 else 256, shape))
    p = _py(str(EXAMPLES / "knowledge_sharing.py"), "--dataset", "idx", "--data-dir",
            str(tmp_path), "--population", "4", "--steps", "40", "--ready-every", "10",
            "--workers", "1", "--quiet", "--run-dir", str(tmp_path / "ks"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "shared table versions published" in p.stdout
    r = pbt.load(tmp_path / "ks")
    assert any(e["kind"] == "knowledge" for e in r.events)
