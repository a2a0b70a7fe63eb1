"""The `search` model's gRPC contract: one row per query; every row of one request asks for
the same K and the same DETAIL."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np

from fusionrank.core.contract import RequestError, TensorSpec, check_text

SEARCH_MODEL = "search"
MAX_QUERY_CHARS = 256

SEARCH_INPUTS = (
    TensorSpec("QUERY", "BYTES", (1,)),  # UTF-8 text, 1..MAX_QUERY_CHARS characters
    TensorSpec("K", "INT32", (1,)),  # 1..MAX_K
    # Which outputs the answer carries (a Detail's value); left out: Detail.EXPLAIN, every
    # output, as before the input existed. It is an input so that it enters the key of
    # Triton's response cache, which is the request's inputs alone: an answer cached for a
    # light search is then never returned to an explain call, nor the reverse.
    TensorSpec("DETAIL", "BYTES", (1,), optional=True),
)
SEARCH_OUTPUTS = (
    TensorSpec("PRODUCT_IDS", "BYTES", (-1,)),  # best first
    TensorSpec("SCORES", "FP32", (-1,)),  # the ranking score S, descending
    TensorSpec("PRODUCTS", "BYTES", (-1,)),  # each product's metadata as a JSON object
)

# Optional outputs, for "why this result": each product's SCORES is Σ SIGNAL_WEIGHTS[j, i] ·
# SIGNALS[j, i], summed in float64 in this order, then rounded to float32. The weights are a
# product's own: in a cascade (core/fusion.py), a product below the head was scored by the
# first stage, whose weights it shows (0 for the feedback, which was not computed for it).
EXPLAIN_OUTPUTS = (
    TensorSpec("SIGNAL_NAMES", "BYTES", (-1,)),  # similarity, feedback, ..., reranker (if served)
    TensorSpec("SIGNAL_WEIGHTS", "FP64", (-1, -1)),  # [k, signals]: the weights that scored it
    TensorSpec("SIGNALS", "FP32", (-1, -1)),  # [k, signals]: each product's signal values
    TensorSpec("CORRECTED", "BYTES", (1,)),  # the query as spelling-corrected; "" if unchanged
)




class Detail(StrEnum):
    """How much a search answer carries (the DETAIL input); each level adds to the one before."""

    IDS = "ids"  # PRODUCT_IDS and SCORES: what a caller with its own catalogue needs
    PRODUCTS = "products"  # and PRODUCTS, each product's metadata
    EXPLAIN = "explain"  # and the EXPLAIN_OUTPUTS: the whole answer (no DETAIL input: this)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The outputs an answer at this level carries (and a client should ask for)."""
        ids_and_scores, products = SEARCH_OUTPUTS[:2], SEARCH_OUTPUTS[2:]
        return {Detail.IDS: ids_and_scores,
                Detail.PRODUCTS: (*ids_and_scores, *products),
                Detail.EXPLAIN: (*SEARCH_OUTPUTS, *EXPLAIN_OUTPUTS)}[self]


DETAIL_VALUES = ", ".join(level.value for level in Detail)


def check_query(query: bytes | str, row: int = 0) -> str:
    return check_text(query, "QUERY", row, MAX_QUERY_CHARS)


def check_detail(values: Sequence[bytes | str] | None) -> Detail:
    """The one Detail of a request: every row must name the same; no DETAIL input (None) is
    Detail.EXPLAIN, the whole answer."""
    if values is None:
        return Detail.EXPLAIN
    texts = [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)
             for v in values]
    if not texts:
        raise RequestError("DETAIL has no rows")
    distinct = sorted(set(texts))
    if len(distinct) > 1:
        raise RequestError(f"DETAIL must be the same for every row of a request, got {distinct}")
    try:
        return Detail(distinct[0])
    except ValueError:
        raise RequestError(f"DETAIL = {distinct[0]!r} is not one of {DETAIL_VALUES}") from None


def search_request(queries: Sequence[str], k: int,
                   detail: Detail | None = None) -> dict[str, np.ndarray]:
    """One request's input tensors, as the wire carries them (in-process callers use this);
    without `detail`, no DETAIL input (the whole answer)."""
    request = {"QUERY": np.array([q.encode("utf-8") for q in queries],
                                 dtype=object).reshape(-1, 1),
               "K": np.full((len(queries), 1), k, dtype=np.int32)}
    if detail is not None:
        request["DETAIL"] = np.full((len(queries), 1), Detail(detail).value.encode("utf-8"),
                                    dtype=object)
    return request


# The `catalogue` model (a build with a live catalogue: docs/live_catalogue.md): one change set
# per request, applied to the served catalogue before the answer.
CATALOGUE_MODEL = "catalogue"
CHANGES = TensorSpec("CHANGES", "BYTES", (1,))  # JSON Lines (core/live/changes.py); empty: status
REPORT = TensorSpec("REPORT", "BYTES", (1,))  # JSON: {"applied": ApplyReport | null, "status"}
