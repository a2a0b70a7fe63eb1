"""The `search` model, seen from a client: typed results, one request per batch of queries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import tritonclient.grpc as grpcclient

from fusionrank.catalogue import Product
from fusionrank.client.errors import InvalidRequestError
from fusionrank.contract import (
    SEARCH_OUTPUTS,
    RequestError,
    check_batch,
    check_k,
    check_query,
)


@dataclass(frozen=True, slots=True)
class SearchHit:
    product_id: str
    score: float
    product: Product

    def to_dict(self) -> dict:
        return {"product_id": self.product_id, "score": self.score, "product": asdict(self.product)}


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


def search_outputs(module=grpcclient) -> list:
    return [module.InferRequestedOutput(spec.name) for spec in SEARCH_OUTPUTS]


def parse_hits(result) -> list[list[SearchHit]]:
    ids = result.as_numpy("PRODUCT_IDS")
    scores = result.as_numpy("SCORES")
    products = result.as_numpy("PRODUCTS")
    return [[SearchHit(pid.decode("utf-8"), float(score), Product(**json.loads(meta)))
             for pid, score, meta in zip(row_ids, row_scores, row_products, strict=True)]
            for row_ids, row_scores, row_products in zip(ids, scores, products, strict=True)]
