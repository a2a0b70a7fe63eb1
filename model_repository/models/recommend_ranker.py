"""recommend_ranker: shopper tensors → the K best products, with scores and metadata.

Runs `fusionrank.recommender.Recommender.recommend`, the very code the offline evaluator ranks
with: candidate pool (bought + popular + embedding-nearest), behavioural features, the ONNX
feedback head, then fusion with similarity. EXCLUDE_PURCHASED = 1 drops what the shopper bought.
A shopper with no known purchase gets the popularity ranking (cold start).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fusionrank.contract import RequestError, check_k
from fusionrank.model_repository.models.base import Tensors, only_valid, triton_model
from fusionrank.model_repository.models.history import shoppers_from_tensors
from fusionrank.recommend_contract import check_exclude
from fusionrank.recommender import ARTEFACT_FILES, Recommender

ARTEFACTS = ARTEFACT_FILES


def check_options(request: Tensors) -> tuple[int, bool]:
    k = check_k(np.asarray(request["K"]).reshape(-1).tolist())
    return k, check_exclude(np.asarray(request["EXCLUDE_PURCHASED"]).reshape(-1).tolist())


class RecommendRank:
    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        threads = int(parameters.get("threads", "1"))
        self.recommender = Recommender.load(folder, threads=threads)
        self.product_ids = np.array([p.encode("utf-8") for p in self.recommender.product_ids],
                                    dtype=object)
        self.product_json = np.array([line.encode("utf-8")
                                      for line in self.recommender.product_json], dtype=object)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        valid, results = only_valid(requests, check_options)
        for i in valid:
            k, exclude = check_options(requests[i])
            ranked = [self.recommender.recommend(s, k, exclude)
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
        return {"PRODUCT_IDS": ids, "SCORES": scores, "PRODUCTS": products}


TritonPythonModel = triton_model(RecommendRank)
