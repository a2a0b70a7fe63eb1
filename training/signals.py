"""Per-pair inputs of the feedback head (embeddings + features) for judged pairs and for
candidate pools, computed from one run's resources."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusionrank.encoding import onnx_session
from fusionrank.export.feedback_head import INPUTS
from fusionrank.training.data import Judgements
from fusionrank.training.features import ProductPriors, TitleTerms, pair_features
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
    catalogue: np.ndarray  # fine-tuned title embeddings [products, d]
    query_vectors: dict[str, np.ndarray]  # normalised query → fine-tuned embedding


def judged_pairs(res: Resources, split: str, queries: list[str] | None = None) -> PairSet:
    """Every judged pair of the split (or of its `queries`); training pairs get
    leave-one-out product priors."""
    frame = res.judgements.of(split)
    if queries is not None:
        frame = frame[frame["query"].isin(set(queries))]
    queries, products, features, grades = [], [], [], []
    for query, group in frame.groupby("query", sort=True):
        rows = group.row.to_numpy(np.int64)
        grade = group.grade.to_numpy(np.float32)
        vector = res.query_vectors[query]
        similarity = res.catalogue[rows] @ vector
        lexical = normalised(res.lexical.scores(query))[rows]
        if split == "train":
            mean, count = res.priors.leave_one_out(rows, grade)
        else:
            mean, count = res.priors.mean[rows], res.priors.count[rows]
        features.append(pair_features(query, rows, similarity, lexical, res.terms, mean, count))
        queries.append(np.repeat(vector[None], len(rows), axis=0))
        products.append(res.catalogue[rows])
        grades.append(grade)
    return PairSet(np.concatenate(queries), np.concatenate(products),
                   np.concatenate(features), np.concatenate(grades))


class OnnxFeedbackHead:
    """The exported head, as the server runs it."""

    def __init__(self, path, threads: int | None = None):
        self.session = onnx_session(path, threads)

    def __call__(self, query: np.ndarray, product: np.ndarray,
                 features: np.ndarray) -> np.ndarray:
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in (query, product, features)]
        return self.session.run(None, dict(zip(INPUTS, arrays, strict=True)))[0]


def pool_feedback(res: Resources, pool: CandidatePool, head: OnnxFeedbackHead) -> np.ndarray:
    """The head's predicted grade for every candidate of every pool [queries, pool]."""
    out = np.empty(pool.rows.shape, dtype=np.float32)
    for i, query in enumerate(pool.queries):
        rows = pool.rows[i]
        features = pair_features(query, rows, pool.similarity[i], pool.lexical[i], res.terms,
                                 res.priors.mean[rows], res.priors.count[rows])
        vector = np.repeat(res.query_vectors[query][None], len(rows), axis=0)
        out[i] = head(vector, res.catalogue[rows], features)
    return out
