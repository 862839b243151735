"""The package's layers, checked: the decision logic stays pure, imports point down."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import torchpbt

PACKAGE = Path(torchpbt.__file__).parent


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, relative imports resolved."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    package = package.removesuffix(".__init__")
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.add(name)
    return out


def test_the_algorithm_layer_imports_no_torch_no_store_and_nothing_above_it():
    for path in sorted((PACKAGE / "algorithm").rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in ("torch", "sqlalchemy", "alembic"), (path.name, name)
            if top == "torchpbt":
                assert name.startswith("torchpbt.algorithm"), (path.name, name)


def test_importing_the_whole_algorithm_layer_loads_neither_torch_nor_sqlalchemy():
    names = sorted(p.stem for p in (PACKAGE / "algorithm").glob("*.py") if p.stem != "__init__")
    code = ("import sys\n" + "".join(f"import torchpbt.algorithm.{n}\n" for n in names)
            + "print([m for m in ('torch', 'sqlalchemy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", out


def test_every_module_lives_in_a_layer_folder():
    # a new module goes into the layer it belongs to, not back to the top of the package
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "datasets.py", "nas.py"], top


def test_the_core_never_imports_an_extension():
    # extensions plug in through engine/extension.py: hooks and options are named there by
    # import path, so core code depends on the seam, never on an extension's modules
    core = [p for p in PACKAGE.rglob("*.py")
            if p.relative_to(PACKAGE).parts[0] not in ("ext", "__init__.py", "nas.py")]
    assert len(core) > 40
    for path in core:
        for name in _imports(path):
            assert not name.startswith("torchpbt.ext"), (str(path.relative_to(PACKAGE)), name)
