"""The recommend ensemble's steps: thin adapters from Triton's tensors to the recommend runtime.

    recommend_history  HISTORY BYTES [rows, n] product ids (padding b"" skipped), optional
                       HISTORY_TIMES INT64 [rows, n] unix seconds (0 or absent = unknown) →
                       per row: SHOPPER (recency-weighted mean product embedding), BOUGHT_ROWS /
                       BOUGHT_COUNTS / BOUGHT_DAYS (distinct catalogue rows bought, how often, how
                       long ago; padded with -1 / 0), UNKNOWN_IDS (entries ignored as unknown).
    recommend_ranker   shopper tensors, K, EXCLUDE_PURCHASED → the K best products, with scores
                       and metadata: `Recommender.recommend`, the very code the offline evaluator
                       ranks with (candidate pool, behavioural features, the ONNX head, fusion).

Handling, as `fusionrank.core.recommend.contract` documents: unknown ids are ignored and counted;
a history with nothing known gets the popularity ranking (cold start); more than MAX_HISTORY
entries is a RequestError. EXCLUDE_PURCHASED = 1 drops what the shopper bought.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.contract import RequestError, check_batch, check_k
from fusionrank.core.recommend.contract import (
    BOUGHT_COUNTS,
    BOUGHT_DAYS,
    BOUGHT_ROWS,
    EXCLUDE_PURCHASED,
    HISTORY,
    HISTORY_TIMES,
    PAD_ROW,
    RECOMMEND_OUTPUTS,
    SHOPPER,
    SHOPPER_TENSORS,
    UNKNOWN_IDS,
    K,
    check_exclude,
    check_history,
)
from fusionrank.core.recommend.live import (
    LiveCatalogue,
    LiveProducts,
    LiveRows,
    folder_encoder,
    grown,
)
from fusionrank.core.recommend.runtime import HistoryEncoder, Recommender, Shopper
from fusionrank.model_repository.step import StepContract, Tensors, only_valid

# The ranker's answer; the ensemble's fourth output, UNKNOWN_IDS, is the history step's.
PRODUCT_IDS, SCORES, PRODUCTS, _ = RECOMMEND_OUTPUTS


def shopper_tensors(shoppers: list[Shopper]) -> Tensors:
    """Shoppers → the step's output tensors, one row each, padded to the longest."""
    width = max(len(s.rows) for s in shoppers)
    rows = np.full((len(shoppers), width), PAD_ROW, dtype=np.int64)
    counts = np.zeros((len(shoppers), width), dtype=np.float32)
    days = np.zeros((len(shoppers), width), dtype=np.float32)
    for i, shopper in enumerate(shoppers):
        n = len(shopper.rows)
        rows[i, :n], counts[i, :n], days[i, :n] = shopper.rows, shopper.counts, shopper.days
    return {SHOPPER.name: np.stack([s.vector for s in shoppers]).astype(np.float32),
            BOUGHT_ROWS.name: rows, BOUGHT_COUNTS.name: counts, BOUGHT_DAYS.name: days,
            UNKNOWN_IDS.name: np.array([[s.unknown] for s in shoppers], dtype=np.int32)}


def shoppers_from_tensors(tensors: Tensors) -> list[Shopper]:
    """The inverse of `shopper_tensors` (padding dropped)."""
    shoppers = []
    rows, counts, days = (tensors[spec.name] for spec in (BOUGHT_ROWS, BOUGHT_COUNTS,
                                                           BOUGHT_DAYS))
    for i, vector in enumerate(tensors[SHOPPER.name]):
        keep = rows[i] != PAD_ROW
        shoppers.append(Shopper(np.asarray(vector, np.float32), rows[i][keep].astype(np.int64),
                                counts[i][keep].astype(np.float32),
                                days[i][keep].astype(np.float32)))
    return shoppers


class EncodeHistory:
    """A request's histories → each shopper's tensors (`shopper_tensors`), over the catalogue
    as a live catalogue left it (core/recommend/live.py: the ranker numbers rows alike)."""

    CONTRACT = StepContract(inputs=(HISTORY, HISTORY_TIMES),
                            outputs=(*SHOPPER_TENSORS, UNKNOWN_IDS))

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        self.base = HistoryEncoder.load(folder)
        lines = (folder / artefacts.PRODUCTS).read_text(encoding="utf-8").splitlines()
        self.live = LiveCatalogue(folder, LiveProducts(self.base.embeddings, lines,
                                                       folder_encoder(folder)))
        self._rows: LiveRows | None = None
        self.encode = self.base

    def refresh(self) -> None:
        rows = self.live.rows()
        if rows is not self._rows:
            self._rows = rows
            self.encode = self.base if rows is None else HistoryEncoder(
                rows.embeddings, rows.product_ids, self.base.config)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        self.refresh()
        results: list[Tensors | RequestError] = []
        for request in requests:
            try:
                results.append(shopper_tensors(self.shoppers(request)))
            except RequestError as error:
                results.append(error)
        return results

    def shoppers(self, request: Tensors) -> list[Shopper]:
        ids = np.asarray(request[HISTORY.name], dtype=object)
        ids = ids.reshape(1, -1) if ids.ndim < 2 else ids
        check_batch(len(ids))
        times = request.get(HISTORY_TIMES.name)  # optional: absent means "all unknown"
        if times is not None:
            times = np.asarray(times)
            if times.ndim < 2 or len(times) != len(ids):
                raise RequestError(f"HISTORY_TIMES has shape {list(times.shape)} where HISTORY "
                                   f"has {list(ids.shape)}")
        return [self.encode(*check_history(ids[row], None if times is None else times[row], row))
                for row in range(len(ids))]



def check_options(request: Tensors) -> tuple[int, bool]:
    k = check_k(np.asarray(request[K.name]).reshape(-1).tolist())
    return k, check_exclude(np.asarray(request[EXCLUDE_PURCHASED.name]).reshape(-1).tolist())


class RecommendRank:
    """Each shopper → the K best products, their scores and metadata (`Recommender.recommend`),
    over the catalogue as a live catalogue left it: its new products added (cold: found by
    text similarity), its retitles and prices applied, its deletes never recommended
    (core/recommend/live.py)."""

    CONTRACT = StepContract(inputs=(*SHOPPER_TENSORS, K, EXCLUDE_PURCHASED),
                            outputs=(PRODUCT_IDS, SCORES, PRODUCTS))

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        threads = int(parameters.get("threads", "1"))
        self.base = Recommender.load(folder, threads=threads)
        self.live = LiveCatalogue(folder, LiveProducts(
            self.base.embeddings, self.base.product_json, folder_encoder(folder)))
        self._rows: LiveRows | None = None
        self.use(self.base)

    def use(self, recommender: Recommender) -> None:
        self.recommender = recommender
        self.product_ids = np.array([p.encode("utf-8") for p in recommender.product_ids],
                                    dtype=object)
        self.product_json = np.array([line.encode("utf-8") for line in recommender.product_json],
                                     dtype=object)

    def refresh(self) -> np.ndarray | None:
        """The live catalogue's state read (one `stat` when unchanged); returns the rows it
        withdrew (None: none)."""
        rows = self.live.rows()
        if rows is not self._rows:
            self._rows = rows
            self.use(self.base if rows is None else grown(self.base, rows))
        return None if rows is None else rows.withdrawn

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        valid, results = only_valid(requests, check_options)
        withdrawn = self.refresh()
        for i in valid:
            k, exclude = check_options(requests[i])
            ranked = [self.recommender.recommend(s, k, exclude, withdrawn)
                      for s in shoppers_from_tensors(requests[i])]
            results[i] = self.outputs(ranked)
        return results

    def outputs(self, ranked: list[tuple[np.ndarray, np.ndarray]]) -> Tensors:
        """Rows padded to the longest (only a catalogue smaller than K leaves them short)."""
        width = max(len(rows) for rows, _ in ranked)
        ids = np.full((len(ranked), width), b"", dtype=object)
        products = np.full((len(ranked), width), b"{}", dtype=object)
        scores = np.full((len(ranked), width), -np.inf, dtype=np.float32)
        for i, (rows, row_scores) in enumerate(ranked):
            ids[i, :len(rows)] = self.product_ids[rows]
            products[i, :len(rows)] = self.product_json[rows]
            scores[i, :len(rows)] = row_scores
        return {PRODUCT_IDS.name: ids, SCORES.name: scores, PRODUCTS.name: products}

