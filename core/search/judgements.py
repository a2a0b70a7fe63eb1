"""What the feedback features learn from the training judgements: each product's smoothed mean
grade (`ProductPriors`) and the judgements themselves (`JudgementMemory`), to describe pairs no
one judged.

Both are computed out of fold for training pairs: a training query's own fold is hidden, as a
new query's judgements are. (Leaving out only the pair itself leaks its grade: the rest of its
product's mean then falls as its own grade rises, and a model learns that backwards.)
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.search.feature_graph import FeatureGraph, feature_model

PRIOR_SMOOTHING = 3.0  # pseudo-judgements at the global mean: one rating says little
FOLDS = 5  # out-of-fold features for training pairs


def query_fold(query: str) -> int:
    """A training query's fold: a stable hash of its normalised text."""
    return zlib.crc32(query.encode("utf-8")) % FOLDS


@dataclass
class ProductPriors:
    """Per catalogue row: smoothed mean grade and judgement count from the training split."""

    mean: np.ndarray  # float32 [products]
    count: np.ndarray  # float32 [products]

    @classmethod
    def fit(cls, products: int, rows: np.ndarray, grades: np.ndarray) -> ProductPriors:
        total = np.bincount(rows, weights=grades, minlength=products)
        count = np.bincount(rows, minlength=products).astype(np.float64)
        global_mean = float(grades.mean()) if len(grades) else 2.0
        mean = (total + PRIOR_SMOOTHING * global_mean) / (count + PRIOR_SMOOTHING)
        return cls(mean.astype(np.float32), count.astype(np.float32))

    @classmethod
    def out_of_fold(cls, products: int, rows: np.ndarray, grades: np.ndarray,
                    folds: np.ndarray) -> list[ProductPriors]:
        """Priors for training pairs: entry k is fitted without fold k's queries."""
        return [cls.fit(products, rows[folds != k], grades[folds != k]) for k in range(FOLDS)]

    def save(self, path: str | Path) -> None:
        np.save(Path(path), np.stack([self.mean, self.count], axis=1).astype(np.float32))

    @classmethod
    def load(cls, path: str | Path, products: int | None = None) -> ProductPriors:
        table = artefacts.load_array(path, shape=(products, 2))
        return cls(table[:, 0].copy(), table[:, 1].copy())


@dataclass
class JudgementMemory:
    """The training judgements, kept to describe pairs no one judged: what the training
    queries most like this one said about the products most like this one.

    For a query vector q and a candidate product p, every judgement (q', p', grade) of the
    training queries nearest to q (30 of them, at most 256 judgements) is weighted by
    softmax(20 · (cos(q, q') + cos(p, p'))): `feature_graph`, which computes them, has the
    constants. Features (MEMORY_FEATURES):
      neighbour_grade  the weighted mean grade, minus 2
      neighbour_match  the best cos(q, q') + cos(p, p'), minus 2
      nearest_grade    the grade of that best judgement, minus 2
      judged_before    1 if p itself was judged for one of those queries
      judged_grade     its grades there, weighted by exp(20 · (cos(q, q') − 1)), / 3 (0 if
                       none)
      nearest_query    cos(q, nearest training query)
    Product vectors are stored as float16 (half the size; the server and the trainer read the
    same rounded values).
    """

    query_vectors: np.ndarray  # float16 [queries, d]
    folds: np.ndarray  # int8 [queries]
    offsets: np.ndarray  # int64 [queries + 1]: query i's judgements are offsets[i]:offsets[i + 1]
    product_vectors: np.ndarray  # float16 [judgements, d]
    product_rows: np.ndarray  # int64 [judgements]: catalogue row of the product, -1 if absent
    grades: np.ndarray  # float32 [judgements]

    @classmethod
    def fit(cls, queries: list[str], query_vectors: np.ndarray, judged: list[np.ndarray],
            grades: list[np.ndarray], catalogue: np.ndarray) -> JudgementMemory:
        """`judged[i]` / `grades[i]`: catalogue rows and grades of training query i."""
        if not queries:
            raise ValueError("the judgement memory needs at least one training query")
        rows = np.concatenate(judged).astype(np.int64)
        return cls(np.asarray(query_vectors, dtype=np.float16),
                   np.array([query_fold(q) for q in queries], dtype=np.int8),
                   np.concatenate([[0], np.cumsum([len(r) for r in judged])]).astype(np.int64),
                   catalogue[rows].astype(np.float16), rows,
                   np.concatenate(grades).astype(np.float32))

    @functools.cached_property
    def graph(self) -> FeatureGraph:
        """The numeric features graph holding this memory (built once, ~0.5 s for 47k
        judgements)."""
        return FeatureGraph(feature_model(self.query_vectors, self.folds, self.offsets,
                                          self.product_rows, self.grades), self.product_vectors)

    def aligned(self, row_map: np.ndarray) -> JudgementMemory:
        """The same memory over another catalogue: `row_map[r]` is the new row of old row r
        (-1 where the product is not there)."""
        rows = np.where(self.product_rows >= 0, row_map[self.product_rows], -1)
        return JudgementMemory(self.query_vectors, self.folds, self.offsets,
                               self.product_vectors, rows.astype(np.int64), self.grades)

    def save(self, path: str | Path) -> None:
        with Path(path).open("wb") as handle:  # np.savez would append .npz to a str path
            np.savez(handle, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: str | Path) -> JudgementMemory:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"judgement memory {path} not found (a run trained before "
                                    "the memory existed needs `fusionrank train` again)")
        return cls(**artefacts.load_arrays(path, [f.name for f in fields(cls)]))
