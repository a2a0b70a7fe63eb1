"""ranker: candidates and their signals → the final ranking S, with product metadata.

S is a weighted sum of the signals the ensemble provides, with the weights that
`ranking.json` records (fitted offline; see fusionrank.ranking).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fusionrank.contract import RequestError, check_k
from fusionrank.model_repository.models.base import Tensors, only_valid, triton_model
from fusionrank.ranking import FusionWeights, rank

PRODUCTS_FILE = "products.jsonl"
WEIGHTS_FILE = "ranking.json"


class Rank:
    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        lines = (folder / PRODUCTS_FILE).read_text(encoding="utf-8").splitlines()
        self.product_json = np.array([line.encode("utf-8") for line in lines], dtype=object)
        self.product_ids = np.array([json.loads(line)["product_id"].encode("utf-8")
                                     for line in lines], dtype=object)
        self.weights = FusionWeights.load(folder / WEIGHTS_FILE)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        valid, results = only_valid(requests, lambda r: check_k(r["K"].reshape(-1).tolist()))
        for i in valid:
            request = requests[i]
            k = int(request["K"].reshape(-1)[0])
            order, scores = rank(request["CANDIDATES"], self.weights.signals(request), k)
            results[i] = {"PRODUCT_IDS": self.product_ids[order],
                          "SCORES": scores.astype(np.float32),
                          "PRODUCTS": self.product_json[order]}
        return results


TritonPythonModel = triton_model(Rank)
