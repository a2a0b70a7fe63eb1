"""The tests are filed by the layer they cover: those under tests/unit/ (the torch-free layers
and the app) load without PyTorch, so they run on a machine that has only the serving side
installed; the training and export layers' tests live in tests/training/ and tests/export/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]
# The training-only libraries: what "serving and the client are torch-free" forbids.
TRAINING_ONLY = ("torch", "transformers", "sklearn", "skl2onnx", "sentence_transformers")

# pytest collecting tests/unit in an interpreter where the training-only libraries cannot be
# imported: any test module importing one (itself, or through what it imports) fails to load.
COLLECT_WITHOUT_TORCH = f"""
import importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TRAINING_ONLY!r}:
            raise ModuleNotFoundError(f"{{name}} is not installed here", name=name)

sys.meta_path.insert(0, Refuse())
import pytest
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider",
                      "-o", "filterwarnings=", {str(TESTS / "unit")!r}]))
"""


def test_the_unit_tests_load_without_the_training_libraries():
    done = subprocess.run([sys.executable, "-c", COLLECT_WITHOUT_TORCH], cwd=TESTS.parent,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "collected" in done.stdout, done.stdout[-500:]


def test_each_test_folder_is_a_package():
    """tests/training/search/test_data.py and tests/unit/... share base names: pytest tells
    them apart only as packages."""
    folders = {path.parent for path in TESTS.rglob("test_*.py")}
    missing = sorted(str(folder.relative_to(TESTS)) for folder in folders
                     if not (folder / "__init__.py").is_file())
    assert not missing, missing
