"""Review sentiment through the served `sentiment` ensemble.

    with FusionRankClient(url) as client:
        for result in client.sentiment(["Love this dress", "Runs small, returned it"]):
            print(result.label, result.probabilities)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import tritonclient.grpc as grpcclient

from fusionrank.client.errors import InvalidRequestError
from fusionrank.core.contract import RequestError
from fusionrank.core.sentiment.contract import (
    LABEL,
    PROBABILITIES,
    SENTIMENT_CLASSES,
    TEXT,
    check_review,
    check_review_batch,
)


@dataclass(frozen=True, slots=True)
class SentimentResult:
    text: str
    # The served decision: negative, neutral or positive. Not always the most probable class:
    # the server adds the offsets dev chose for macro-F1 to log P before the arg-max.
    label: str
    probabilities: dict[str, float]  # class → calibrated probability, in SENTIMENT_CLASSES order

    @property
    def score(self) -> float:
        """P(positive) − P(negative), in [-1, 1]: the per-review score products aggregate."""
        return self.probabilities["positive"] - self.probabilities["negative"]

    def to_dict(self) -> dict:
        return asdict(self) | {"score": round(self.score, 6)}


def sentiment_inputs(texts: Sequence[str], module=grpcclient) -> list:
    """The request's TEXT tensor; texts the server would reject are rejected here first, with
    the same message."""
    try:
        check_review_batch(len(texts))
        for row, text in enumerate(texts):
            check_review(text, row)
    except RequestError as error:
        raise InvalidRequestError(str(error)) from None
    data = np.array([[text.encode("utf-8")] for text in texts], dtype=object)
    tensor = module.InferInput(TEXT.name, list(data.shape), TEXT.dtype)
    tensor.set_data_from_numpy(data)
    return [tensor]


def parse_results(texts: Sequence[str], result) -> list[SentimentResult]:
    """`result`: the server's answer (PROBABILITIES and LABEL)."""
    probabilities = result.as_numpy(PROBABILITIES.name)
    labels = result.as_numpy(LABEL.name).reshape(-1)
    return [SentimentResult(text, label.decode("utf-8") if isinstance(label, bytes) else label,
                            {name: float(p) for name, p in zip(SENTIMENT_CLASSES, row,
                                                               strict=True)})
            for text, row, label in zip(texts, probabilities, labels, strict=True)]
