"""sentiment_classifier: token ids → class probabilities (negative, neutral, positive), one
ONNX Runtime call for all the requests of a dynamically batched call."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fusionrank.contract import RequestError
from fusionrank.encoding import TokenBatch, onnx_session, pad
from fusionrank.model_repository.models.base import Tensors, split_rows, triton_model

MODEL_FILE = "sentiment.onnx"


class OnnxSentiment:
    """Token batch → probabilities [batch, 3] (the softmax is inside the graph)."""

    def __init__(self, model_path: str | Path, threads: int | None = None):
        self._session = onnx_session(model_path, threads)

    def __call__(self, batch: TokenBatch) -> np.ndarray:
        (probabilities,) = self._session.run(
            None, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
        return probabilities.astype(np.float32)


class ClassifyReviews:
    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        threads = int(parameters.get("threads", "0"))
        self.model = OnnxSentiment(folder / MODEL_FILE, threads=threads or None)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        # Each request arrives padded to its own longest review; re-pad them as one batch.
        sequences = [row[mask.astype(bool)]
                     for request in requests
                     for row, mask in zip(request["INPUT_IDS"], request["ATTENTION_MASK"],
                                          strict=True)]
        probabilities = self.model(pad(sequences))
        sizes = [len(request["INPUT_IDS"]) for request in requests]
        return [{"PROBABILITIES": part} for part in split_rows(probabilities, sizes)]


TritonPythonModel = triton_model(ClassifyReviews)
