"""The benchmarks' comparison helpers: equal compute and pairing are enforced, the
p-values are scipy's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common as C  # noqa: E402

import torchpbt as pbt  # noqa: E402


def _run(method: str, seed: int, score: float, steps: int = 80, start=({"lr": 0.1},)) -> dict:
    return {"method": method, "seed": seed, "member_steps": steps, "score": score,
            "initial_hparams": list(start)}


def test_method_kwargs_configure_each_method_and_refuse_unknown_ones():
    pbt_kw = C.method_kwargs("pbt", [])
    assert isinstance(pbt_kw["exploit"], pbt.Truncation) and isinstance(pbt_kw["explore"], pbt.Perturb)
    assert C.method_kwargs("random", []) == {"exploit": None, "explore": None}
    grid = [{"lr": 0.1}, {"lr": 0.01}]
    assert C.method_kwargs("grid", grid)["initial_hparams"] == grid
    with pytest.raises(ValueError, match="unknown method 'bayes'"):
        C.method_kwargs("bayes", [])


def test_check_comparison_refuses_unequal_compute_and_unpaired_populations():
    ok = [_run("pbt", 0, 1.0), _run("random", 0, 0.5), _run("grid", 0, 0.7, start=({"lr": 1},))]
    C.check_comparison(ok, 80)  # the grid has its own population: not paired
    with pytest.raises(RuntimeError, match="random seed 0 spent 79 member-steps, not 80"):
        C.check_comparison([ok[0], _run("random", 0, 0.5, steps=79)], 80)
    with pytest.raises(RuntimeError, match="seed 0: the methods started from different"):
        C.check_comparison([ok[0], _run("random", 0, 0.5, start=({"lr": 0.2},))], 80)


def test_compare_gives_means_differences_and_scipys_welch_and_paired_p():
    a, b = [3.0, 4.0, 6.0, 5.0], [1.0, 3.0, 2.0, 4.5]
    runs = [_run(m, s, v) for m, xs in (("pbt", a), ("random", b)) for s, v in enumerate(xs)]
    out = C.compare(runs[::-1], "score", "t", others=("random",))  # order does not matter
    assert out["pbt_t_mean"] == 4.5 and out["t_pbt_minus_random"] == pytest.approx(4.5 - 2.625)
    assert out["t_p_vs_random"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert out["t_p_vs_random_paired"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
