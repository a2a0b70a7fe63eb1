"""The `sentiment` ensemble's gRPC contract: names, dtypes, shapes, limits and class order.

One source of truth for the review tokenizer and classifier steps, the ensemble definition and
the client SDK, kept apart from contract.py (the search contract) so each capability can be
read on its own. Imports nothing beyond the standard library and fusionrank.core.contract.

    TEXT           BYTES [1]  one UTF-8 review per row (title and body joined, as in training)
    PROBABILITIES  FP32  [3]  P(negative), P(neutral), P(positive); each row sums to 1;
                              calibrated on dev (what the product prior averages)
    LABEL          BYTES [1]  the decided class: the arg-max of log P + the per-class offsets
                              dev chose for macro-F1 (not always the most probable class)
"""

from __future__ import annotations

from fusionrank.core.contract import RequestError, TensorSpec, check_text

SENTIMENT_MODEL = "sentiment"

# The order of PROBABILITIES; training labels use the same indices (0, 1, 2).
SENTIMENT_CLASSES = ("negative", "neutral", "positive")
# The classifier predicts the 1..5 star rating; each class is the sum of its stars' shares.
STAR_RATINGS = (1, 2, 3, 4, 5)
CLASS_OF_STAR = (0, 0, 1, 2, 2)

# Reviews in the training data are at most 558 characters (title + text); the limit leaves
# room for longer ones while bounding the tokenizer's work per row. Text beyond the model's token
# window (MAX_REVIEW_TOKENS) is truncated, not rejected.
MAX_REVIEW_CHARS = 4_000
MAX_REVIEW_BATCH = 64
# 90% of the training reviews (title + text) fit in 128 word pieces, 95% in 135; the rest
# lose their end. benchmarks/reports/sentiment.md gives the measured distribution.
MAX_REVIEW_TOKENS = 128

TEXT = TensorSpec("TEXT", "BYTES", (1,))
PROBABILITIES = TensorSpec("PROBABILITIES", "FP32", (len(SENTIMENT_CLASSES),))
LABEL = TensorSpec("LABEL", "BYTES", (1,))
# Between the two steps: each request padded to its own longest review.
REVIEW_TOKENS = (TensorSpec("INPUT_IDS", "INT64", (-1,), ragged=True),
                 TensorSpec("ATTENTION_MASK", "INT64", (-1,), ragged=True))

SENTIMENT_INPUTS = (TEXT,)
SENTIMENT_OUTPUTS = (PROBABILITIES, LABEL)


def check_review_batch(size: int) -> None:
    if not 1 <= size <= MAX_REVIEW_BATCH:
        raise RequestError(f"a request carries {size} reviews; it must carry 1 to "
                           f"{MAX_REVIEW_BATCH}")


def check_review(text: bytes | str, row: int = 0) -> str:
    """The review as text, or a RequestError naming the row and what is wrong with it."""
    return check_text(text, "TEXT", row, MAX_REVIEW_CHARS)
