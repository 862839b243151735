"""The typed run settings: what run() stores is what every reader gets back."""

from __future__ import annotations

import pytest
from helpers import QSPACE, Quadratic

import torchpbt as pbt
from torchpbt.engine.settings import RunSettings


def test_a_runs_settings_read_back_by_attribute_and_round_trip(tmp_path):
    r = pbt.run(Quadratic, QSPACE, population=3, ready_every=2, steps=6, seed=4,
                backend="serial", max_retries=1, progress=False, run_dir=tmp_path / "r")
    s = r.settings
    assert (s.population, s.steps, s.ready_every, s.seed, s.backend) == (3, 6, 2, 4, "serial")
    assert s.max_retries == 1 and s.total_steps == 18 and s.extensions(tmp_path) == []
    assert s.pbt_config.population == 3 and s.member_ref.resolve() is Quadratic
    assert s.to_dict() == r.run["config"]  # the stored JSON is exactly what it writes
    assert RunSettings.from_dict(s.to_dict()) == s


def test_settings_of_an_older_store_take_defaults_and_keep_unknown_keys():
    stored = {"population": 2, "ready_every": 1, "steps": 2, "mode": "max", "sync": False,
              "burn_in": 0, "inherit_hparams": True, "explore_when": "exploit", "seed": 0,
              "exploit": "T", "explore": "P", "exploit_spec": {}, "explore_spec": {},
              "backend": "serial", "workers": 1, "devices": ["cpu"],
              "member": {"module": "m", "qualname": "M", "path": None}, "run_dir": "/r",
              "torchpbt": "0.0.1", "from_the_future": 7}  # no max_retries, worker_timeout, ...
    s = RunSettings.from_dict(stored)
    assert (s.max_retries, s.worker_timeout, s.tensorboard) == (2, 60.0, None)
    assert s.to_dict()["from_the_future"] == 7
    with pytest.raises(TypeError):
        RunSettings.from_dict({k: v for k, v in stored.items() if k != "steps"})
