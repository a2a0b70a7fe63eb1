"""The layers hold: import-linter's contracts (pyproject.toml) pass, a crossing import breaks
them, and what the server's model processes import never loads torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
LAYERS = ("fusionrank", "core", "app", "training", "export", "model_repository", "client")


def lint(source_root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with pyproject.toml's contracts over the package in `source_root` (first
    on the path, so a copy there is read instead of the installed one)."""
    if not LINT_IMPORTS.is_file():
        pytest.skip(f"import-linter is not installed beside {sys.executable}")
    return subprocess.run([str(LINT_IMPORTS), str(REPO / "pyproject.toml"), "--no-cache"],
                          cwd=source_root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(source_root), "PATH": "/usr/bin:/bin"})


def test_the_layer_contracts_are_kept():
    done = lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(("module", "crossing"), [
    ("model_repository/search/steps.py", "import fusionrank.training.search.data"),
    ("core/search/runtime.py", "import fusionrank.model_repository.step"),
    ("export/search/feedback_head.py", "import fusionrank.training.search.feedback"),
    ("client/search.py", "import torch"),
    ("core/recommend/runtime.py", "import fusionrank.core.search.lexical"),
])
def test_an_import_across_the_layers_breaks_a_contract(tmp_path, module, crossing):
    for layer in LAYERS:  # the links in fusionrank/ stay links, to the copied layers
        shutil.copytree(REPO / layer, tmp_path / layer, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    with (tmp_path / module).open("a") as source:
        source.write(f"\n{crossing}  # noqa\n")
    done = lint(tmp_path)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout and crossing.split()[-1] in done.stdout


def test_serving_processes_do_not_import_torch():
    """Every module of the core, the model repository and the client, imported in a fresh
    interpreter (as a Triton stub imports its step), leaves torch unloaded."""
    code = """
import importlib, pkgutil, sys
import fusionrank.client, fusionrank.core, fusionrank.model_repository
for package in (fusionrank.core, fusionrank.model_repository, fusionrank.client):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
heavy = sorted(m for m in ("torch", "transformers", "sklearn") if m in sys.modules)
assert not heavy, heavy
print(len(sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
