"""The sentiment ensemble's steps: thin adapters from Triton's tensors to the text runtime.

    review_tokenizer      TEXT → INPUT_IDS, ATTENTION_MASK. Rejects, with a RequestError naming
                          the row: empty or whitespace-only text, text that is not UTF-8, text
                          over MAX_REVIEW_CHARS characters, requests over MAX_REVIEW_BATCH rows.
                          Text beyond the token window is truncated (as the classifier trained).
    sentiment_classifier  token ids → PROBABILITIES (negative, neutral, positive; calibrated),
                          one ONNX Runtime call per dynamic batch (the softmax is inside the
                          graph), and LABEL, the decision `core.sentiment.runtime.decide` takes
                          with the export's dev-chosen offsets.

`fusionrank.core.sentiment.runtime.SentimentRuntime` runs the same tokenizer and graph offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.sentiment.contract import (
    LABEL,
    MAX_REVIEW_TOKENS,
    PROBABILITIES,
    REVIEW_TOKENS,
    SENTIMENT_CLASSES,
    TEXT,
    check_review,
    check_review_batch,
)
from fusionrank.core.sentiment.runtime import SentimentRecord, decide
from fusionrank.model_repository.step import StepContract, Tensors
from fusionrank.model_repository.text_steps import TokenGraph, TokenizeText


class TokenizeReviews(TokenizeText):
    CONTRACT = StepContract(inputs=(TEXT,), outputs=REVIEW_TOKENS)
    MAX_TOKENS = MAX_REVIEW_TOKENS
    check_batch = staticmethod(check_review_batch)
    check_row = staticmethod(check_review)


class ClassifyReviews(TokenGraph):
    CONTRACT = StepContract(inputs=REVIEW_TOKENS, outputs=(PROBABILITIES, LABEL))
    MODEL_FILE = artefacts.SENTIMENT_MODEL
    NAMES = np.array([name.encode("utf-8") for name in SENTIMENT_CLASSES], dtype=object)

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        super().__init__(folder, parameters)
        self.offsets = SentimentRecord.load(folder).decision_offsets

    def respond(self, output: np.ndarray) -> Tensors:
        labels = self.NAMES[decide(output, self.offsets)].reshape(-1, 1)
        return {PROBABILITIES.name: output, LABEL.name: labels}
