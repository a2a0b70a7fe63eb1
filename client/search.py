"""The `search` model, seen from a client: typed results, one request per batch of queries,
and, with `explain`, each result's score broken into its fused signals.

Each call names the answer it wants in the DETAIL input (`Detail`) and asks for exactly that
level's outputs: a plain search carries ids and scores alone, `products=True` adds each
product's metadata, `explain` everything. DETAIL is part of the request, so Triton's response
cache (keyed on the inputs alone) keeps each level's answer apart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import tritonclient.grpc as grpcclient

from fusionrank.client.errors import InvalidRequestError
from fusionrank.client.ranked import RankedProduct, ranked_rows
from fusionrank.core.catalogue import Product
from fusionrank.core.contract import RequestError, check_batch, check_k
from fusionrank.core.search.contract import (
    EXPLAIN_OUTPUTS,
    Detail,
    check_detail,
    check_query,
)

SearchHit = RankedProduct


def search_inputs(queries: Sequence[str], k: int, detail: Detail | str,
                  module=grpcclient) -> list:
    """The request's input tensors, after the same checks the server makes."""
    if isinstance(queries, str | bytes):
        raise InvalidRequestError("queries must be a list of strings, not one string")
    try:
        check_batch(len(queries))
        texts = [check_query(q, row) for row, q in enumerate(queries)]
        check_k([k])
        level = check_detail([detail])
    except RequestError as error:
        raise InvalidRequestError(str(error)) from None
    rows = len(texts)
    query = module.InferInput("QUERY", [rows, 1], "BYTES")
    query.set_data_from_numpy(np.array([t.encode("utf-8") for t in texts],
                                       dtype=object).reshape(-1, 1))
    top_k = module.InferInput("K", [rows, 1], "INT32")
    top_k.set_data_from_numpy(np.full((rows, 1), k, dtype=np.int32))
    wanted = module.InferInput("DETAIL", [rows, 1], "BYTES")
    wanted.set_data_from_numpy(np.full((rows, 1), level.value.encode("utf-8"), dtype=object))
    return [query, top_k, wanted]


def hits_detail(products: bool) -> Detail:
    """The level a `search` call asks for: ids and scores, or with the products' metadata."""
    return Detail.PRODUCTS if products else Detail.IDS


def parse_hits(result, detail: Detail) -> list[list[SearchHit]]:
    """An answer at `detail` as hits (their `product` None where it carries no PRODUCTS)."""
    return ranked_rows(result.as_numpy("PRODUCT_IDS"), result.as_numpy("SCORES"),
                       None if detail is Detail.IDS else result.as_numpy("PRODUCTS"))


@dataclass(frozen=True, slots=True)
class ScorePart:
    """One fused signal of a result: its value, its fitted weight and weight × value."""

    signal: str  # similarity, feedback, lexical; reranker where the build serves one
    value: float
    weight: float
    contribution: float


@dataclass(frozen=True, slots=True)
class ExplainedHit:
    """A result with its score S broken into parts: the contributions, summed in order in
    float64 and rounded to float32, are the served `score` exactly."""

    product_id: str
    score: float
    product: Product
    parts: tuple[ScorePart, ...]

    def parts_total(self) -> float:
        """The contributions summed as the server sums them (float64, in order), rounded to
        float32: equal to `score`."""
        return float(np.float32(sum(part.contribution for part in self.parts)))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    query: str
    corrected: str | None  # the query's terms as the server spelling-corrected them, if it did
    hits: list[ExplainedHit]

    def to_dict(self) -> dict:
        return {"query": self.query, "corrected": self.corrected,
                "results": [hit.to_dict() for hit in self.hits]}


# The whole answer, every output: what a request without DETAIL gets.
SEARCH_RESPONSE = Detail.EXPLAIN.outputs


def parse_explained(queries: Sequence[str], result) -> list[SearchAnswer]:
    """An answer at Detail.EXPLAIN as one SearchAnswer per query."""
    hits = parse_hits(result, Detail.EXPLAIN)
    names, weights, signals, corrected = (result.as_numpy(spec.name) for spec in EXPLAIN_OUTPUTS)
    answers = []
    for row, query in enumerate(queries):
        row_names = [name.decode("utf-8") for name in names[row]]
        explained = []
        # [k, s]: each hit's own weights (a cascade's head and the rest differ); [s] from a
        # server built before cascades, the same for every hit.
        per_hit = weights[row] if weights.ndim == 3 else np.tile(weights[row],
                                                                  (len(signals[row]), 1))
        for hit, values, hit_weights in zip(hits[row], signals[row], per_hit, strict=False):
            parts = tuple(ScorePart(name, float(value), float(weight),
                                    float(weight) * float(value))
                          for name, weight, value in zip(row_names, hit_weights, values,
                                                         strict=True))
            explained.append(ExplainedHit(hit.product_id, hit.score, hit.product, parts))
        correction = corrected[row].reshape(-1)[0].decode("utf-8")
        answers.append(SearchAnswer(query, correction or None, explained))
    return answers
