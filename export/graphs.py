"""What the ONNX exports share: the opset, the token-input graph export, and the parity check
every export runs against the model it was made from."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fusionrank.core.artefacts import replacing
from fusionrank.core.encoding import ONNX_OPSET

TOKEN_INPUTS = ("input_ids", "attention_mask")


def export_token_graph(module: nn.Module, onnx_path: Path, output: str) -> Path:
    """Trace a (input_ids, attention_mask) → `output` module to ONNX with dynamic batch and
    sequence axes; the callers check the result against PyTorch (`check_parity`)."""
    example = (torch.ones(2, 8, dtype=torch.int64), torch.ones(2, 8, dtype=torch.int64))
    # The tracer warns about Python branches on shapes inside transformers' attention; they do
    # not depend on the batch here (a mask is always given), and the parity checks prove it.
    with torch.no_grad(), warnings.catch_warnings(), replacing(onnx_path) as temporary:
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*")
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module.eval(), example, str(temporary), dynamo=False, opset_version=ONNX_OPSET,
            input_names=list(TOKEN_INPUTS), output_names=[output],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                          "attention_mask": {0: "batch", 1: "tokens"},
                          output: {0: "batch"}})
    return onnx_path


def check_parity(what: str, expected: np.ndarray, actual: np.ndarray, *,
                 max_abs_diff: float | None = None, min_cosine: float | None = None,
                 labels: Sequence[str] | None = None) -> float:
    """Compare an export's ONNX Runtime outputs with the original model's, row by row.

    With `max_abs_diff`: returns the largest |expected − actual|; with `min_cosine`: the lowest
    cosine between a row's two vectors. Beyond the limit it raises, naming the worst row (by
    `labels[row]` where given: the text, say)."""
    if (max_abs_diff is None) == (min_cosine is None):
        raise ValueError("give exactly one of max_abs_diff and min_cosine")
    if len(expected) == 0:
        raise ValueError(f"{what}: the parity check needs at least one row")
    expected = np.asarray(expected, dtype=np.float64).reshape(len(expected), -1)
    actual = np.asarray(actual, dtype=np.float64).reshape(len(expected), -1)
    if min_cosine is not None:
        per_row = np.sum(expected * actual, axis=1) / (
            np.linalg.norm(expected, axis=1) * np.linalg.norm(actual, axis=1))
        worst_row, worst = int(per_row.argmin()), float(per_row.min())
        failed, figure = worst < min_cosine, f"cosine {worst:.6f} < {min_cosine}"
    else:
        per_row = np.abs(expected - actual).max(axis=1)
        worst_row, worst = int(per_row.argmax()), float(per_row.max())
        failed = not worst <= max_abs_diff  # NaN fails too
        figure = f"|difference| {worst:.2e} > {max_abs_diff:.0e}"
    if failed:
        row = repr(labels[worst_row]) if labels is not None else f"row {worst_row}"
        raise RuntimeError(f"{what}: the ONNX export diverges from the model it was exported "
                           f"from: {figure} for {row}")
    return worst
