"""The `recommend` model's gRPC contract: tensor names, dtypes, shapes and limits.

One request row is one shopper. HISTORY holds the product ids the shopper bought, one entry per
purchase (repeat an id to say it was bought again); HISTORY_TIMES holds the matching purchase
times. Rows of one request are padded to the same length with empty ids (b""), which are
skipped. The client SDK sends one shopper per request.

- HISTORY_TIMES (optional): unix seconds, one per HISTORY entry; 0 (or any value <= 0) means
  "time unknown", and the purchase then counts as made at the model's reference time (the end of
  its training data). Leaving the tensor out means every time is unknown.
- Unknown product ids (not in the served catalogue, e.g. postage or discontinued items) are
  ignored and counted in UNKNOWN_IDS: a history is still useful when a few of its items are gone.
- A history with no known product (empty, or only unknown ids) gets the popularity ranking
  (cold start).
- More than MAX_HISTORY entries is a RequestError: send the most recent MAX_HISTORY purchases.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fusionrank.core.contract import MAX_K, RequestError, TensorSpec

RECOMMEND_MODEL = "recommend"

# 99.9 % of Online Retail customers have fewer purchase entries than this before the evaluation
# cut; the offline evaluator keeps each shopper's most recent MAX_HISTORY entries, as a client must.
MAX_HISTORY = 2000
MAX_PRODUCT_ID_CHARS = 64

HISTORY = TensorSpec("HISTORY", "BYTES", (-1,))
HISTORY_TIMES = TensorSpec("HISTORY_TIMES", "INT64", (-1,), optional=True)  # see above
K = TensorSpec("K", "INT32", (1,))
EXCLUDE_PURCHASED = TensorSpec("EXCLUDE_PURCHASED", "INT32", (1,))  # 0 or 1

RECOMMEND_INPUTS = (HISTORY, HISTORY_TIMES, K, EXCLUDE_PURCHASED)

# Between the history step and the ranker (per shopper; rows padded with -1 / 0).
SHOPPER = TensorSpec("SHOPPER", "FP32", (-1,))  # recency-weighted mean embedding, unit or zero
BOUGHT_ROWS = TensorSpec("BOUGHT_ROWS", "INT64", (-1,))  # distinct catalogue rows bought
BOUGHT_COUNTS = TensorSpec("BOUGHT_COUNTS", "FP32", (-1,))  # purchases of each
BOUGHT_DAYS = TensorSpec("BOUGHT_DAYS", "FP32", (-1,))  # days since its latest purchase
UNKNOWN_IDS = TensorSpec("UNKNOWN_IDS", "INT32", (1,))  # history entries ignored as unknown
SHOPPER_TENSORS = (SHOPPER, BOUGHT_ROWS, BOUGHT_COUNTS, BOUGHT_DAYS)

RECOMMEND_OUTPUTS = (
    TensorSpec("PRODUCT_IDS", "BYTES", (-1,)),  # best first
    TensorSpec("SCORES", "FP32", (-1,)),  # fused score, descending
    TensorSpec("PRODUCTS", "BYTES", (-1,)),  # each product's metadata as a JSON object
    UNKNOWN_IDS,
)

PAD_ROW = -1


def check_history(ids: np.ndarray, times: np.ndarray | None,
                  row: int = 0) -> tuple[list[str], np.ndarray]:
    """One shopper's history as (product ids, unix seconds), padding removed; a RequestError
    says what is wrong with it. No times: all unknown."""
    ids = np.asarray(ids, dtype=object).reshape(-1)
    times = np.zeros(len(ids), np.int64) if times is None else np.asarray(times).reshape(-1)
    if len(times) != len(ids):
        raise RequestError(f"HISTORY_TIMES[{row}] has {len(times)} entries where HISTORY[{row}] "
                           f"has {len(ids)}; send one time per purchase (0 = unknown)")
    keep = read_positions(ids)
    if len(keep) > MAX_HISTORY:
        raise RequestError(f"HISTORY[{row}] has {len(keep)} purchases; the limit is "
                           f"{MAX_HISTORY}: send the most recent {MAX_HISTORY}")
    return [_product_id(ids[i], row) for i in keep], times[keep].astype(np.int64)


def read_positions(ids: Sequence[bytes | str]) -> list[int]:
    """The positions of the history entries the server reads: all but the padding (empty
    ids). A blank id is read, and counted unknown."""
    return [i for i, value in enumerate(ids) if value not in (b"", "")]


def _product_id(value: bytes | str, row: int) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(f"HISTORY[{row}] holds an id that is not valid UTF-8") from None
    if "\0" in value:
        raise RequestError(f"HISTORY[{row}] holds an id with a NUL character")
    text = value.strip()
    if len(text) > MAX_PRODUCT_ID_CHARS:
        raise RequestError(f"HISTORY[{row}] holds an id of {len(text)} characters; "
                           f"product ids are at most {MAX_PRODUCT_ID_CHARS}")
    return text


def check_exclude(values: Sequence[int]) -> bool:
    distinct = sorted({int(v) for v in values})
    if len(distinct) != 1 or distinct[0] not in (0, 1):
        raise RequestError(f"EXCLUDE_PURCHASED must be 0 or 1, the same for every row; "
                           f"got {distinct}")
    return bool(distinct[0])


__all__ = ["MAX_HISTORY", "MAX_K", "RECOMMEND_INPUTS", "RECOMMEND_MODEL", "RECOMMEND_OUTPUTS",
           "RequestError", "check_exclude", "check_history"]
