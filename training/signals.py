"""Per-pair inputs of the feedback head (embeddings + features) for judged pairs and for
candidate pools, computed from one run's resources."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusionrank.encoding import onnx_session
from fusionrank.export.feedback_head import INPUTS
from fusionrank.training.data import Judgements
from fusionrank.training.features import (
    JudgementMemory,
    ProductPriors,
    TermVectors,
    TitleTerms,
    pair_features,
    query_fold,
)
from fusionrank.training.feedback import PairSet
from fusionrank.training.fusion import CandidatePool
from fusionrank.training.lexical_index import LexicalIndex, normalised


@dataclass
class Resources:
    """What scoring a (query, product) pair needs, built once per run."""

    judgements: Judgements | None  # None where only pools are scored (serving checks)
    lexical: LexicalIndex
    terms: TitleTerms
    priors: ProductPriors
    memory: JudgementMemory
    catalogue: np.ndarray  # fine-tuned title embeddings [products, d]
    query_vectors: dict[str, np.ndarray]  # normalised query → fine-tuned embedding
    fold_priors: list[ProductPriors] | None = None  # out-of-fold priors of training pairs
    term_vectors: TermVectors | None = None  # made from `terms` and `catalogue` when not given

    def __post_init__(self) -> None:
        if self.term_vectors is None:
            self.term_vectors = TermVectors.fit(self.terms, self.catalogue)

    def pair_features(self, query: str, rows: np.ndarray, lexical: np.ndarray,
                      training: bool = False) -> np.ndarray:
        """The head's features for one query's products; `training`: the query is a training
        query, so what is learnt from the training judgements comes out of fold."""
        fold = query_fold(query) if training else None
        return pair_features(query, self.query_vectors[query], self.catalogue[rows], rows,
                             lexical, self.terms, self.term_vectors,
                             self.fold_priors[fold] if training else self.priors, self.memory,
                             hidden_fold=fold)


def judged_pairs(res: Resources, split: str, queries: list[str] | None = None) -> PairSet:
    """Every judged pair of the split (or of its `queries`); training pairs get out-of-fold
    priors and memory features."""
    frame = res.judgements.of(split)
    if queries is not None:
        frame = frame[frame["query"].isin(set(queries))]
    queries, products, features, grades = [], [], [], []
    for query, group in frame.groupby("query", sort=True):
        rows = group.row.to_numpy(np.int64)
        grade = group.grade.to_numpy(np.float32)
        vector = res.query_vectors[query]
        lexical = normalised(res.lexical.scores(query))[rows]
        features.append(res.pair_features(query, rows, lexical, training=split == "train"))
        queries.append(np.repeat(vector[None], len(rows), axis=0))
        products.append(res.catalogue[rows])
        grades.append(grade)
    return PairSet(np.concatenate(queries), np.concatenate(products),
                   np.concatenate(features), np.concatenate(grades))


class OnnxFeedbackHead:
    """The exported head, as the server runs it."""

    def __init__(self, path, threads: int | None = None):
        self.session = onnx_session(path, threads)

    def __call__(self, query: np.ndarray, product: np.ndarray, features: np.ndarray,
                 output: str = "grade") -> np.ndarray:
        """The served blend, or one of its parts ("network", "trees")."""
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in (query, product, features)]
        return self.session.run([output], dict(zip(INPUTS, arrays, strict=True)))[0]


def pool_feedback(res: Resources, pool: CandidatePool, head: OnnxFeedbackHead) -> np.ndarray:
    """The head's predicted grade for every candidate of every pool [queries, pool]."""
    out = np.empty(pool.rows.shape, dtype=np.float32)
    for i, query in enumerate(pool.queries):
        rows = pool.rows[i]
        features = res.pair_features(query, rows, pool.lexical[i])
        vector = np.repeat(res.query_vectors[query][None], len(rows), axis=0)
        out[i] = head(vector, res.catalogue[rows], features)
    return out
