"""Export the recommendation feedback head to ONNX and check it against PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fusionrank.core.encoding import onnx_session
from fusionrank.core.recommend.runtime import HEAD_INPUTS
from fusionrank.export.graphs import ONNX_OPSET, check_parity


@dataclass(frozen=True)
class HeadExport:
    path: Path
    max_abs_diff: float  # largest |ONNX − PyTorch| logit over the check rows
    rows_checked: int


def export_head(model: torch.nn.Module, path: str | Path, check: tuple[np.ndarray, ...],
                tolerance: float = 1e-4) -> HeadExport:
    """Write the head (a module of (features, shopper, product) → logit, e.g.
    training.recommend.head.FeedbackMLP) to `path`; fail unless ONNX Runtime's logits on `check`
    (features, shopper, product rows) match PyTorch's within `tolerance`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = [np.ascontiguousarray(a, np.float32) for a in check]
    example = tuple(torch.zeros(2, a.shape[1]) for a in arrays)
    model.eval()
    with torch.no_grad():
        torch.onnx.export(model, example, str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=list(HEAD_INPUTS), output_names=["logit"],
                          dynamic_axes={**{n: {0: "candidates"} for n in HEAD_INPUTS},
                                        "logit": {0: "candidates"}})
        expected = model(*(torch.from_numpy(a) for a in arrays)).numpy()
    (actual,) = onnx_session(path, threads=1).run(None, dict(zip(HEAD_INPUTS, arrays,
                                                                  strict=True)))
    worst = check_parity("recommendation head", expected, actual.reshape(-1),
                         max_abs_diff=tolerance)
    return HeadExport(path, worst, len(arrays[0]))
