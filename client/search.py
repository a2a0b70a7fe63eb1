"""The `search` model, seen from a client: typed results, one request per batch of queries,
and, with `explain`, each result's score broken into its fused signals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import tritonclient.grpc as grpcclient

from fusionrank.client.errors import InvalidRequestError
from fusionrank.client.ranked import RankedProduct, ranked_rows
from fusionrank.core.catalogue import Product
from fusionrank.core.contract import RequestError, check_batch, check_k
from fusionrank.core.search.contract import EXPLAIN_OUTPUTS, SEARCH_OUTPUTS, check_query

SearchHit = RankedProduct


def search_inputs(queries: Sequence[str], k: int, module=grpcclient) -> list:
    """The request's input tensors, after the same checks the server makes."""
    if isinstance(queries, str | bytes):
        raise InvalidRequestError("queries must be a list of strings, not one string")
    try:
        check_batch(len(queries))
        texts = [check_query(q, row) for row, q in enumerate(queries)]
        check_k([k])
    except RequestError as error:
        raise InvalidRequestError(str(error)) from None
    query = module.InferInput("QUERY", [len(texts), 1], "BYTES")
    query.set_data_from_numpy(np.array([t.encode("utf-8") for t in texts],
                                       dtype=object).reshape(-1, 1))
    top_k = module.InferInput("K", [len(texts), 1], "INT32")
    top_k.set_data_from_numpy(np.full((len(texts), 1), k, dtype=np.int32))
    return [query, top_k]


def parse_hits(result) -> list[list[SearchHit]]:
    return ranked_rows(*(result.as_numpy(name) for name in ("PRODUCT_IDS", "SCORES", "PRODUCTS")))


@dataclass(frozen=True, slots=True)
class ScorePart:
    """One fused signal of a result: its value, its fitted weight and weight × value."""

    signal: str  # similarity, feedback, lexical
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


# Every search call asks for every output, `search` as much as `explain`: Triton's response
# cache keys an answer on the request's inputs alone and answers a repeat with the outputs the
# first request asked for, so a cached `search` answer would lack the explanation.
SEARCH_RESPONSE = (*SEARCH_OUTPUTS, *EXPLAIN_OUTPUTS)


def parse_explained(queries: Sequence[str], result) -> list[SearchAnswer]:
    hits = parse_hits(result)
    names, weights, signals, corrected = (result.as_numpy(spec.name) for spec in EXPLAIN_OUTPUTS)
    answers = []
    for row, query in enumerate(queries):
        row_names = [name.decode("utf-8") for name in names[row]]
        explained = []
        for hit, values in zip(hits[row], signals[row], strict=False):
            parts = tuple(ScorePart(name, float(value), float(weight),
                                    float(weight) * float(value))
                          for name, weight, value in zip(row_names, weights[row], values,
                                                         strict=True))
            explained.append(ExplainedHit(hit.product_id, hit.score, hit.product, parts))
        correction = corrected[row].reshape(-1)[0].decode("utf-8")
        answers.append(SearchAnswer(query, correction or None, explained))
    return answers
