"""The `sentiment` ensemble: review text in, class probabilities out.

    sentiment = TEXT >> review_tokenizer >> sentiment_classifier

PROBABILITIES are in SENTIMENT_CLASSES order: negative, neutral, positive, calibrated on dev;
LABEL is the decision (log P plus the offsets dev chose for macro-F1, `sentiment.json`).
`folder` is what `fusionrank train-sentiment` exported (SENTIMENT_FILES). Each model's tensors
are the ones its step declares (`steps.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fusionrank.core import artefacts
from fusionrank.core.sentiment.contract import (
    MAX_REVIEW_BATCH,
    SENTIMENT_INPUTS,
    SENTIMENT_MODEL,
    SENTIMENT_OUTPUTS,
)
from fusionrank.core.sentiment.runtime import SentimentRecord
from fusionrank.model_repository.config import PythonModel
from fusionrank.model_repository.ensemble import Ensemble, Inputs
from fusionrank.model_repository.sentiment import steps


@dataclass
class SentimentServing:
    """Copies per model, batching delay and ONNX Runtime threads per copy."""

    classifier_instances: int = 1
    tokenizer_instances: int = 1
    max_queue_delay_us: int = 200
    onnx_threads: int = 2


def sentiment_ensemble(folder: str | Path, serving: SentimentServing | None = None) -> Ensemble:
    serving = serving or SentimentServing()
    folder = Path(folder)
    record = SentimentRecord.load(folder)  # fails clearly when nothing was exported
    tokenize = PythonModel(
        "review_tokenizer", steps.TokenizeReviews,
        artefacts={artefacts.TOKENIZER: folder / artefacts.TOKENIZER},
        parameters={"max_tokens": str(record.max_tokens)},
        instances=serving.tokenizer_instances, max_batch_size=MAX_REVIEW_BATCH,
        max_queue_delay_us=0)
    classify = PythonModel(
        "sentiment_classifier", steps.ClassifyReviews,
        artefacts={artefacts.SENTIMENT_MODEL: folder / artefacts.SENTIMENT_MODEL,
                   artefacts.SENTIMENT_RECORD: folder / artefacts.SENTIMENT_RECORD},
        parameters={"threads": str(serving.onnx_threads)},
        instances=serving.classifier_instances, max_batch_size=MAX_REVIEW_BATCH,
        max_queue_delay_us=serving.max_queue_delay_us)
    return (Inputs(*SENTIMENT_INPUTS) >> tokenize >> classify).ensemble(
        SENTIMENT_MODEL, SENTIMENT_OUTPUTS, max_batch_size=MAX_REVIEW_BATCH)
