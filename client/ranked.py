"""What search and recommend answers share: a ranked product with its score and metadata."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from fusionrank.core.catalogue import Product


@dataclass(frozen=True, slots=True)
class RankedProduct:
    product_id: str
    score: float
    product: Product

    def to_dict(self) -> dict:
        return {"product_id": self.product_id, "score": self.score, "product": asdict(self.product)}


def ranked_rows(ids: np.ndarray, scores: np.ndarray,
                products: np.ndarray) -> list[list[RankedProduct]]:
    """The PRODUCT_IDS, SCORES and PRODUCTS outputs [rows, k] as products, row by row (empty
    ids, padding of a short row, are left out)."""
    return [[RankedProduct(pid.decode("utf-8"), float(score), Product(**json.loads(meta)))
             for pid, score, meta in zip(row_ids, row_scores, row_products, strict=True) if pid]
            for row_ids, row_scores, row_products in zip(ids, scores, products, strict=True)]
