"""query_encoder: token ids → unit-length query embeddings, one ONNX Runtime call per batch."""

from __future__ import annotations

from fusionrank.model_repository.models.base import triton_model
from fusionrank.model_repository.models.token_graph import TokenGraph

ENCODER_FILE = "encoder.onnx"


class EncodeQueries(TokenGraph):
    MODEL_FILE = ENCODER_FILE
    OUTPUT = "EMBEDDING"


TritonPythonModel = triton_model(EncodeQueries)
