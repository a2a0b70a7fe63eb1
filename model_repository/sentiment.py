"""The `sentiment` ensemble: review text in, class probabilities out.

    TEXT (BYTES [1]) → review_tokenizer → INPUT_IDS, ATTENTION_MASK
                     → sentiment_classifier → PROBABILITIES (FP32 [3])

PROBABILITIES are in SENTIMENT_CLASSES order: negative, neutral, positive. Their arg-max is the
classifier's decision (the logit offsets tuned on dev for macro-F1 are inside the graph).

`artefact_dir` is what `fusionrank.export.sentiment_onnx.export_sentiment` wrote:
sentiment.onnx, tokenizer.json and sentiment.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrank.contract import RequestError
from fusionrank.export.sentiment_onnx import MODEL_FILE, TOKENIZER_FILE, SentimentArtefacts
from fusionrank.model_repository.config import PythonModel
from fusionrank.model_repository.ensemble import Ensemble, Inputs
from fusionrank.model_repository.models import review_tokenizer, sentiment_classifier
from fusionrank.sentiment_contract import (
    MAX_REVIEW_BATCH,
    PROBABILITIES,
    REVIEW_TOKENS,
    SENTIMENT_MODEL,
    SENTIMENT_OUTPUTS,
    TEXT,
)


@dataclass
class SentimentServing:
    """Copies per model, batching delay and ONNX Runtime threads per copy."""

    classifier_instances: int = 1
    tokenizer_instances: int = 1
    max_queue_delay_us: int = 200
    onnx_threads: int = 2


def sentiment_ensemble(artefact_dir: str | Path,
                       serving: SentimentServing | None = None) -> Ensemble:
    """The sentiment pipeline over an exported classifier."""
    serving = serving or SentimentServing()
    artefact_dir = Path(artefact_dir)
    artefacts = SentimentArtefacts.load(artefact_dir)  # fails clearly when nothing was exported
    tokenize = PythonModel(
        "review_tokenizer", review_tokenizer.__name__, (TEXT,), REVIEW_TOKENS,
        artefacts={review_tokenizer.TOKENIZER_FILE: artefact_dir / TOKENIZER_FILE},
        parameters={"max_tokens": str(artefacts.max_tokens)},
        instances=serving.tokenizer_instances, max_batch_size=MAX_REVIEW_BATCH,
        max_queue_delay_us=0)
    classify = PythonModel(
        "sentiment_classifier", sentiment_classifier.__name__, REVIEW_TOKENS, (PROBABILITIES,),
        artefacts={sentiment_classifier.MODEL_FILE: artefact_dir / MODEL_FILE},
        parameters={"threads": str(serving.onnx_threads)},
        instances=serving.classifier_instances, max_batch_size=MAX_REVIEW_BATCH,
        max_queue_delay_us=serving.max_queue_delay_us)
    return (Inputs(TEXT) >> tokenize >> classify).ensemble(
        SENTIMENT_MODEL, SENTIMENT_OUTPUTS, max_batch_size=MAX_REVIEW_BATCH)


class InProcessSentiment:
    """The ensemble's two steps called directly, for offline evaluation and feature building:
    what it returns for a text is what the served ensemble returns."""

    def __init__(self, artefact_dir: str | Path, threads: int | None = None):
        artefact_dir = Path(artefact_dir)
        artefacts = SentimentArtefacts.load(artefact_dir)
        self.classes = tuple(artefacts.classes)
        self.tokenize = review_tokenizer.TokenizeReviews(
            artefact_dir, {"max_tokens": str(artefacts.max_tokens)})
        self.classify = sentiment_classifier.ClassifyReviews(
            artefact_dir, {"threads": str(threads or 0)})

    def __call__(self, texts: Sequence[str], batch_size: int = MAX_REVIEW_BATCH,
                 progress: bool = False) -> np.ndarray:
        """Probabilities [len(texts), 3]; raises RequestError for a text the server rejects.
        Texts go in length-sorted batches so little of the work is padding."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), len(self.classes)), dtype=np.float32)
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="classifying reviews", unit="batch", mininterval=5.0)
        for start in starts:
            rows = order[start : start + batch_size]
            request = {"TEXT": np.array([[texts[i].encode("utf-8")] for i in rows], dtype=object)}
            (tokens,) = self.tokenize([request])
            if isinstance(tokens, RequestError):
                raise tokens
            (result,) = self.classify([tokens])
            out[rows] = result["PROBABILITIES"]
        return out
