"""The extension seam: hooks found by name, payloads in, records out; no stray state."""

from __future__ import annotations

import pytest
from helpers import Quadratic

from torchpbt.backends import IntervalRunner, Task
from torchpbt.backends.worker import task_from_json, task_to_json
from torchpbt.engine.extension import HOOKS, OPTIONS, IntervalHook, hook_class, options_class


class Counting(IntervalHook):
    """A third-party hook: named in a task by its import path, not registered anywhere."""

    def before_train(self, member, task, payload):
        member.seen = payload["tag"]

    def after_train(self, member, task, payload):
        return {"tag": member.seen, "step": task.start_step}


class Silent(IntervalHook):
    pass  # records nothing: the outcome has no entry for it


COUNTING, SILENT = f"{__name__}:Counting", f"{__name__}:Silent"


def test_every_built_in_name_resolves_to_a_hook_or_an_options_class():
    for name in HOOKS:
        assert issubclass(hook_class(name), IntervalHook), name
    for option in OPTIONS:
        assert callable(getattr(options_class(option), "run_extension", None)), option


def test_a_hook_named_by_import_path_sees_its_payload_and_its_record_comes_back(tmp_path):
    runner = IntervalRunner(Quadratic, str(tmp_path))
    task = Task(0, 0, 3, {"lr": 0.1}, None, 1, extras={COUNTING: {"tag": "a"}, SILENT: {}})
    out = runner.run(task)
    assert out.error is None and out.checkpoint is not None
    assert out.extras == {COUNTING: {"tag": "a", "step": 0}}  # Silent returned None
    again = runner.run(Task(0, 3, 3, {"lr": 0.1}, out.checkpoint, 2,
                            extras={COUNTING: {"tag": "b"}}))
    assert again.extras[COUNTING] == {"tag": "b", "step": 3}
    plain = runner.run(Task(1, 0, 3, {"lr": 0.1}, None, 3))
    assert plain.extras == {}


def test_an_unknown_payload_name_fails_the_interval_with_the_fix(tmp_path):
    out = IntervalRunner(Quadratic, str(tmp_path)).run(
        Task(0, 0, 3, {"lr": 0.1}, None, 1, extras={"nope": {}}))
    assert out.failed and "names no interval hook" in out.error and "module:Class" in out.error


def test_a_hook_that_sets_no_weights_refuses_to_load():
    with pytest.raises(TypeError, match="sets no weights"):
        Silent(None).load(None, None, None)


def test_extras_and_reads_survive_the_json_the_store_keeps():
    task = Task(2, 10, 5, {"lr": 0.1}, "abc", 7, extras={"mix": {"lam": 0.5}},
                also_reads=("def",))
    assert task_from_json(task_to_json(task)) == task
    assert task.checkpoints_read() == {"abc", "def"}
    bare = Task(2, 10, 5, {"lr": 0.1}, None, 7)
    assert "extras" not in task_to_json(bare) and task_from_json(task_to_json(bare)) == bare


def test_a_task_stored_before_the_seam_keeps_its_nas_plan():
    old = {"member_id": 1, "start_step": 5, "steps": 5, "hparams": {}, "checkpoint": "a",
           "seed": 3, "knowledge": None, "mix": {"donor_checkpoint": "b", "lam": 0.5}}
    task = task_from_json(old)
    assert task.extras == {"mix": old["mix"]} and task.also_reads == ("b",)
