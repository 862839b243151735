"""The repository tracks only source, tests, docs and build files.

Temporary folders and run directories once slipped into a commit (tens of
thousands of files); this test fails as soon as a tracked path lies outside
the known top-level entries.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KNOWN_TOP_LEVEL = {
    ".ci",
    ".gitignore",
    "BENCHMARKS.md",
    "Makefile",
    "README.md",
    "benchmarks",
    "constraints.txt",
    "examples",
    "pyproject.toml",
    "src",
    "tests",
}


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    return [p for p in out.split("\0") if p]


def test_no_tracked_file_outside_known_top_level_folders() -> None:
    stray = sorted({p.split("/", 1)[0] for p in _tracked_files()} - KNOWN_TOP_LEVEL)
    assert not stray, f"tracked paths outside the known folders: {stray}"


def test_no_run_scratch_is_tracked() -> None:
    scratch = [
        p
        for p in _tracked_files()
        if p.endswith((".db", ".db-wal", ".db-shm"))
        or "/runs/" in p
        or "/.tmp-" in p
    ]
    assert not scratch, f"run scratch is tracked: {scratch[:10]}"


def test_import_torchpbt_is_lazy_and_every_public_name_resolves():
    # a worker process imports torchpbt: it must not pay for the store, rich or pandas
    code = ("import sys, torchpbt; heavy = [m for m in ('torch', 'sqlalchemy', 'rich', 'pandas',"
            " 'scipy') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", out
    import torchpbt

    assert sorted(torchpbt.__all__) == sorted([*torchpbt._EXPORTS, *torchpbt._SUBMODULES,
                                               "__version__"])
    for name in torchpbt.__all__:
        assert getattr(torchpbt, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        torchpbt.Nope  # noqa: B018
