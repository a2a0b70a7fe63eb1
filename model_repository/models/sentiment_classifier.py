"""sentiment_classifier: token ids → class probabilities (negative, neutral, positive), one
ONNX Runtime call for all the requests of a dynamically batched call (the softmax is inside
the graph)."""

from __future__ import annotations

from fusionrank.model_repository.models.base import triton_model
from fusionrank.model_repository.models.token_graph import TokenGraph

MODEL_FILE = "sentiment.onnx"


class ClassifyReviews(TokenGraph):
    MODEL_FILE = MODEL_FILE
    OUTPUT = "PROBABILITIES"


TritonPythonModel = triton_model(ClassifyReviews)
