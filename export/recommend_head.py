"""Export the recommendation feedback head to ONNX and check it against PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fusionrank.export.onnx_encoder import ONNX_OPSET
from fusionrank.recommender import FeedbackHead
from fusionrank.training.recommend_head import FeedbackMLP

INPUT_NAMES = ["features", "shopper", "product"]


@dataclass(frozen=True)
class HeadExport:
    path: Path
    max_abs_diff: float  # largest |ONNX − PyTorch| logit over the check rows
    rows_checked: int


def export_head(model: FeedbackMLP, path: str | Path, check: tuple[np.ndarray, ...],
                tolerance: float = 1e-4) -> HeadExport:
    """Write the head to `path`; fail unless ONNX Runtime's logits on `check`
    (features, shopper, product rows) match PyTorch's within `tolerance`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_features = int(model.mean.shape[0])
    dim = int(model.net[0].in_features) - n_features
    example = (torch.zeros(2, n_features), torch.zeros(2, dim), torch.zeros(2, dim))
    model.eval()
    with torch.no_grad():
        torch.onnx.export(model, example, str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=INPUT_NAMES, output_names=["logit"],
                          dynamic_axes={**{n: {0: "candidates"} for n in INPUT_NAMES},
                                        "logit": {0: "candidates"}})
    return HeadExport(path, parity_check(model, path, check, tolerance), len(check[0]))


def parity_check(model: FeedbackMLP, path: Path, check: tuple[np.ndarray, ...],
                 tolerance: float) -> float:
    features, shopper, product = (np.ascontiguousarray(a, np.float32) for a in check)
    if len(features) == 0:
        raise ValueError("the parity check needs at least one row")
    with torch.no_grad():
        expected = model(*(torch.from_numpy(a) for a in (features, shopper, product))).numpy()
    session = FeedbackHead(path).session
    (actual,) = session.run(None, {"features": features, "shopper": shopper, "product": product})
    worst = float(np.abs(expected - actual.reshape(-1)).max())
    if not worst <= tolerance:
        raise RuntimeError(f"ONNX head diverges from PyTorch: |Δlogit| {worst:.2e} > {tolerance}")
    return worst
