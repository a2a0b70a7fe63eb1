"""The `search` model's gRPC contract: one row per query; every row of one request asks for
the same K."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fusionrank.core.contract import TensorSpec, check_text

SEARCH_MODEL = "search"
MAX_QUERY_CHARS = 256

SEARCH_INPUTS = (
    TensorSpec("QUERY", "BYTES", (1,)),  # UTF-8 text, 1..MAX_QUERY_CHARS characters
    TensorSpec("K", "INT32", (1,)),  # 1..MAX_K
)
SEARCH_OUTPUTS = (
    TensorSpec("PRODUCT_IDS", "BYTES", (-1,)),  # best first
    TensorSpec("SCORES", "FP32", (-1,)),  # the ranking score S, descending
    TensorSpec("PRODUCTS", "BYTES", (-1,)),  # each product's metadata as a JSON object
)

# Optional outputs, for "why this result": S = Σ SIGNAL_WEIGHTS[i] · SIGNALS[:, i], summed in
# float64 in this order, then rounded to float32, is SCORES exactly.
EXPLAIN_OUTPUTS = (
    TensorSpec("SIGNAL_NAMES", "BYTES", (-1,)),  # the fused signals: similarity, feedback, ...
    TensorSpec("SIGNAL_WEIGHTS", "FP64", (-1,)),  # their fitted weights
    TensorSpec("SIGNALS", "FP32", (-1, -1)),  # [k, signals]: each product's signal values
    TensorSpec("CORRECTED", "BYTES", (1,)),  # the query as spelling-corrected; "" if unchanged
)


def check_query(query: bytes | str, row: int = 0) -> str:
    return check_text(query, "QUERY", row, MAX_QUERY_CHARS)


def search_request(queries: Sequence[str], k: int) -> dict[str, np.ndarray]:
    """One request's input tensors, as the wire carries them (in-process callers use this)."""
    return {"QUERY": np.array([q.encode("utf-8") for q in queries], dtype=object).reshape(-1, 1),
            "K": np.full((len(queries), 1), k, dtype=np.int32)}
