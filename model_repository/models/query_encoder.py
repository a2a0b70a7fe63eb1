"""query_encoder: token ids → unit-length query embeddings, one ONNX Runtime call per batch."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fusionrank.contract import RequestError
from fusionrank.encoding import OnnxEncoder, pad
from fusionrank.model_repository.models.base import Tensors, split_rows, triton_model

ENCODER_FILE = "encoder.onnx"


class EncodeQueries:
    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        threads = int(parameters.get("threads", "0"))
        self.encoder = OnnxEncoder(folder / ENCODER_FILE, threads=threads or None)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        # Requests arrive padded to their own longest query; re-pad them to one batch.
        sequences = [row[mask.astype(bool)]
                     for request in requests
                     for row, mask in zip(request["INPUT_IDS"], request["ATTENTION_MASK"],
                                          strict=True)]
        embeddings = self.encoder(pad(sequences))
        sizes = [len(request["INPUT_IDS"]) for request in requests]
        return [{"EMBEDDING": part} for part in split_rows(embeddings.astype(np.float32), sizes)]


TritonPythonModel = triton_model(EncodeQueries)
