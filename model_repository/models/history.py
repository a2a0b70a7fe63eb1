"""recommend_history: a shopper's purchase history → shopper vector and what they bought.

In: HISTORY BYTES [rows, n] product ids (padding b"" skipped), optional HISTORY_TIMES INT64
[rows, n] unix seconds (0 or absent = unknown). Out per row: SHOPPER (recency-weighted mean
product embedding), BOUGHT_ROWS / BOUGHT_COUNTS / BOUGHT_DAYS (distinct catalogue rows bought,
how often, how long ago; padded with -1 / 0), UNKNOWN_IDS (entries ignored as unknown).
Handling, as `fusionrank.recommend_contract` documents: unknown ids are ignored and counted; a
history with nothing known yields an empty BOUGHT_ROWS, which the ranker answers with popularity;
more than MAX_HISTORY entries is a RequestError.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fusionrank.contract import RequestError, check_batch
from fusionrank.model_repository.models.base import Tensors, triton_model
from fusionrank.recommend_contract import PAD_ROW, check_history
from fusionrank.recommender import (
    CONFIG_FILE,
    EMBEDDINGS_FILE,
    PRODUCTS_FILE,
    HistoryEncoder,
    Shopper,
)

ARTEFACTS = (EMBEDDINGS_FILE, PRODUCTS_FILE, CONFIG_FILE)


def shopper_tensors(shoppers: list[Shopper]) -> Tensors:
    """Shoppers → the step's output tensors, one row each, padded to the longest."""
    width = max(len(s.rows) for s in shoppers)
    rows = np.full((len(shoppers), width), PAD_ROW, dtype=np.int64)
    counts = np.zeros((len(shoppers), width), dtype=np.float32)
    days = np.zeros((len(shoppers), width), dtype=np.float32)
    for i, shopper in enumerate(shoppers):
        n = len(shopper.rows)
        rows[i, :n], counts[i, :n], days[i, :n] = shopper.rows, shopper.counts, shopper.days
    return {"SHOPPER": np.stack([s.vector for s in shoppers]).astype(np.float32),
            "BOUGHT_ROWS": rows, "BOUGHT_COUNTS": counts, "BOUGHT_DAYS": days,
            "UNKNOWN_IDS": np.array([[s.unknown] for s in shoppers], dtype=np.int32)}


def shoppers_from_tensors(tensors: Tensors) -> list[Shopper]:
    """The inverse of `shopper_tensors` (padding dropped)."""
    shoppers = []
    for i, vector in enumerate(tensors["SHOPPER"]):
        keep = tensors["BOUGHT_ROWS"][i] != PAD_ROW
        shoppers.append(Shopper(np.asarray(vector, np.float32),
                                tensors["BOUGHT_ROWS"][i][keep].astype(np.int64),
                                tensors["BOUGHT_COUNTS"][i][keep].astype(np.float32),
                                tensors["BOUGHT_DAYS"][i][keep].astype(np.float32)))
    return shoppers


class EncodeHistory:
    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        self.encode = HistoryEncoder.load(folder)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        results: list[Tensors | RequestError] = []
        for request in requests:
            try:
                results.append(shopper_tensors(self.shoppers(request)))
            except RequestError as error:
                results.append(error)
        return results

    def shoppers(self, request: Tensors) -> list[Shopper]:
        ids = np.asarray(request["HISTORY"], dtype=object)
        ids = ids.reshape(1, -1) if ids.ndim < 2 else ids
        check_batch(len(ids))
        times = request.get("HISTORY_TIMES")  # optional: absent means "all unknown"
        if times is not None:
            times = np.asarray(times)
            if times.ndim < 2 or len(times) != len(ids):
                raise RequestError(f"HISTORY_TIMES has shape {list(times.shape)} where HISTORY "
                                   f"has {list(ids.shape)}")
        return [self.encode(*check_history(ids[row], None if times is None else times[row], row))
                for row in range(len(ids))]


TritonPythonModel = triton_model(EncodeHistory)
