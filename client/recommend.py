"""The `recommend` model, seen from a client: a shopper's history in, typed products out.

    with FusionRankClient(url) as client:
        result = client.recommend(["85123A", ("71053", 1_320_000_000)], k=10,
                                  exclude_purchased=True)
    for item in result.items: print(item.product_id, item.score, item.product.title)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import tritonclient.grpc as grpcclient

from fusionrank.client.errors import InvalidRequestError
from fusionrank.client.ranked import RankedProduct, ranked_rows
from fusionrank.core.contract import RequestError, check_k
from fusionrank.core.recommend.contract import check_history, read_positions

# A history entry: a product id (bought at an unknown time) or (product id, when).
Purchase = str | tuple[str, int | float | datetime]


# A recommended product is the same record as a search hit: id, score and metadata.
RecommendedProduct = RankedProduct


@dataclass(frozen=True, slots=True)
class Recommendations:
    items: list[RecommendedProduct] = field(default_factory=list)
    unknown_ids: int = 0  # history entries the server ignored (not in its catalogue)
    history_entries: int = 0  # entries sent (padding aside)

    @property
    def cold_start(self) -> bool:
        """No product of the history is known (or there was none): the items are the popular
        products, as the contract says, not a personal ranking."""
        return self.unknown_ids >= self.history_entries


def history_tensors(history: Sequence[Purchase]) -> tuple[np.ndarray, np.ndarray]:
    """(ids [1, n] object, times [1, n] int64) after the checks the server makes."""
    if isinstance(history, str | bytes):
        raise InvalidRequestError("history must be a list of product ids, not one string")
    ids, times = [], []
    for entry in history:
        product_id, when = (entry, 0) if isinstance(entry, str) else entry
        ids.append(str(product_id).encode("utf-8"))
        times.append(int(when.timestamp()) if isinstance(when, datetime) else int(when))
    id_array = np.array(ids, dtype=object).reshape(1, -1)
    time_array = np.array(times, dtype=np.int64).reshape(1, -1)
    try:
        check_history(id_array[0], time_array[0])
    except RequestError as error:
        raise InvalidRequestError(str(error)) from None
    return id_array, time_array


def history_entries(history: Sequence[Purchase]) -> int:
    """How many entries of the history the server reads (empty ids are padding)."""
    return len(read_positions([str(entry if isinstance(entry, str) else entry[0])
                               for entry in history]))


def recommend_inputs(history: Sequence[Purchase], k: int, exclude_purchased: bool,
                     module=grpcclient) -> list:
    try:
        check_k([k])
    except RequestError as error:
        raise InvalidRequestError(str(error)) from None
    ids, times = history_tensors(history)
    tensors = [("HISTORY", ids, "BYTES"), ("K", np.array([[k]], dtype=np.int32), "INT32"),
               ("EXCLUDE_PURCHASED", np.array([[int(exclude_purchased)]], np.int32), "INT32")]
    if times.any():  # HISTORY_TIMES is optional: left out, every time is "unknown"
        tensors.append(("HISTORY_TIMES", times, "INT64"))
    inputs = []
    for name, array, dtype in tensors:
        tensor = module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def parse_recommendations(result, history_entries: int) -> Recommendations:
    (items,) = ranked_rows(*(result.as_numpy(n) for n in ("PRODUCT_IDS", "SCORES", "PRODUCTS")))
    return Recommendations(items, int(result.as_numpy("UNKNOWN_IDS").reshape(-1)[0]),
                           history_entries)
