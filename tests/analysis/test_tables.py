"""A run's records as DataFrames, and the CSV export built from the same tables."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from helpers import QSPACE, Quadratic

import torchpbt as pbt
from torchpbt.ui.cli import main as cli_main


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tables") / "run"
    return pbt.run(Quadratic, QSPACE, population=6, steps=60, ready_every=10, seed=3,
                   backend="serial", run_dir=run_dir, progress=False)


def test_one_row_per_record_with_each_hparam_a_column(result):
    iv = result.dataframe("intervals")
    assert len(iv) == len(result.intervals) > 0
    assert iv["hparams.lr"].dtype.kind == "f"
    assert (iv["end_step"] - iv["start_step"]).sum() == result.member_steps
    assert iv["hparams.lr"].tolist() == [r["hparams"]["lr"] for r in result.intervals]
    scores = result.dataframe("scores")
    assert len(scores) == len(result.scores) and {"member_id", "step", "score"} <= set(scores)
    events = result.dataframe("events")
    exploits = events[events["kind"] == "exploit"]
    assert len(exploits) == len(result.exploits) > 0
    assert exploits["old_hparams.lr"].notna().all()


def test_the_csv_export_holds_the_same_tables(result, tmp_path):
    assert cli_main(["export", str(result.run_dir), "--format", "csv", "--out", str(tmp_path)]) == 0
    for kind in ("intervals", "scores", "events"):
        frame = result.dataframe(kind)
        csv = pd.read_csv(tmp_path / f"{kind}.csv")
        assert list(csv.columns) == list(frame.columns)
        numeric = [c for c in frame.columns if frame[c].dtype.kind in "if"]
        pd.testing.assert_frame_equal(csv[numeric], frame[numeric], check_dtype=False)


def test_an_unknown_kind_names_the_choices(result):
    with pytest.raises(ValueError, match="kind='members': choose one of 'intervals', 'scores'"):
        result.dataframe("members")


def test_without_pandas_the_message_says_what_to_install(result, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'torchpbt\[dataframe\]'"):
        result.dataframe("scores")
