"""The `search` model, seen from a client: typed results, one request per batch of queries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tritonclient.grpc as grpcclient

from fusionrank.client.errors import InvalidRequestError
from fusionrank.client.ranked import RankedProduct, ranked_rows
from fusionrank.core.contract import RequestError, check_batch, check_k
from fusionrank.core.search.contract import SEARCH_OUTPUTS, check_query

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


def search_outputs(module=grpcclient) -> list:
    return [module.InferRequestedOutput(spec.name) for spec in SEARCH_OUTPUTS]


def parse_hits(result) -> list[list[SearchHit]]:
    return ranked_rows(*(result.as_numpy(name) for name in ("PRODUCT_IDS", "SCORES", "PRODUCTS")))
