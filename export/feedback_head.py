"""Export the feedback head to ONNX and check it against PyTorch.

Graph: query [n, d] float32, product [n, d] float32, features [n, F] float32 → grade [n].
The server's `feedback` model runs it with ONNX Runtime over every (query, candidate) pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fusionrank.encoding import onnx_session
from fusionrank.export.onnx_encoder import ONNX_OPSET

MODEL_FILE = "feedback_head.onnx"
INPUTS = ("query", "product", "features")
OUTPUT = "grade"


def export_feedback_head(head: torch.nn.Module, path: str | Path,
                         check: tuple[np.ndarray, np.ndarray, np.ndarray],
                         tolerance: float = 1e-4) -> float:
    """Write the ONNX graph and return the largest |ONNX − PyTorch| over the `check` rows;
    fail above `tolerance`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = head.eval()
    example = tuple(torch.from_numpy(np.ascontiguousarray(a[:2], dtype=np.float32))
                    for a in check)
    with torch.no_grad():
        torch.onnx.export(head, example, str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=list(INPUTS), output_names=[OUTPUT],
                          dynamic_axes={**{n: {0: "n"} for n in INPUTS}, OUTPUT: {0: "n"}})
    return parity_check(head, path, check, tolerance)


def parity_check(head: torch.nn.Module, path: Path,
                 check: tuple[np.ndarray, np.ndarray, np.ndarray], tolerance: float) -> float:
    if len(check[0]) == 0:
        raise ValueError("the parity check needs at least one pair")
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in check]
    with torch.no_grad():
        expected = head(*(torch.from_numpy(a) for a in arrays)).numpy()
    (actual,) = onnx_session(path, threads=1).run(None, dict(zip(INPUTS, arrays, strict=True)))
    worst = float(np.abs(expected - actual).max())
    if worst > tolerance:
        raise RuntimeError(f"feedback head ONNX export diverges from PyTorch by {worst:.2e}")
    return worst
