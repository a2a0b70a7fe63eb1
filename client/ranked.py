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
    # The product's metadata; None where the call did not ask for it (a light search:
    # `search(..., products=False)`, the default, carries ids and scores alone).
    product: Product | None = None

    def to_dict(self) -> dict:
        return {"product_id": self.product_id, "score": self.score,
                "product": asdict(self.product) if self.product is not None else None}


def ranked_rows(ids: np.ndarray, scores: np.ndarray,
                products: np.ndarray | None = None) -> list[list[RankedProduct]]:
    """The PRODUCT_IDS, SCORES and (where the answer carries it) PRODUCTS outputs [rows, k] as
    products, row by row (empty ids, padding of a short row, are left out)."""
    if products is None:
        return [[RankedProduct(pid.decode("utf-8"), float(score))
                 for pid, score in zip(row_ids, row_scores, strict=True) if pid]
                for row_ids, row_scores in zip(ids, scores, strict=True)]
    return [[RankedProduct(pid.decode("utf-8"), float(score), Product(**json.loads(meta)))
             for pid, score, meta in zip(row_ids, row_scores, row_products, strict=True) if pid]
            for row_ids, row_scores, row_products in zip(ids, scores, products, strict=True)]
