"""What the server's model processes load: only what serving needs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fusionrank.app.serve import children
from fusionrank.app.stub_watch import STUB, stub_model

pytestmark = pytest.mark.server


def test_no_model_process_loads_numba(triton_server):
    """bm25s imports numba wherever it is installed; the model processes block it
    (`triton_model.initialize`), so none maps its LLVM library."""
    if importlib.util.find_spec("numba") is None:
        pytest.skip("numba is not installed: nothing to keep out")
    stubs = {pid: stub_model(pid) for pid, name, state in children(triton_server.process.pid)
             if name == STUB and state != "Z"}
    assert "search_steps" in stubs.values(), stubs  # the model that imports bm25s
    for pid, model in stubs.items():
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "llvmlite" not in maps, f"the {model} model process (pid {pid}) loaded numba"
