"""The feedback head's training data: every judged (query, product) pair of a split as the
head's inputs (one query row per pair), built by the search runtime's
`FeatureSources.head_inputs` (the code the server's `ranker` runs), with out-of-fold priors and
memory for training queries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusionrank.core.search.features import FeatureSources
from fusionrank.core.search.judgements import ProductPriors, query_fold
from fusionrank.core.search.lexical import LexicalIndex, normalised
from fusionrank.training.search.data import Judgements
from fusionrank.training.search.feedback import PairSet


@dataclass
class PairResources:
    """What turning judgements into head inputs needs, built once per run."""

    judgements: Judgements
    lexical: LexicalIndex  # BM25 and the query speller
    sources: FeatureSources
    query_vectors: dict[str, np.ndarray]  # normalised query → fine-tuned embedding
    fold_priors: list[ProductPriors] | None = None  # out-of-fold priors of training pairs


def judged_pairs(res: PairResources, split: str, queries: list[str] | None = None) -> PairSet:
    """Every judged pair of the split (or of its `queries`); training pairs get out-of-fold
    priors and memory features: a training query's own fold is hidden, as a new query's
    judgements are."""
    frame = res.judgements.of(split)
    if queries is not None:
        frame = frame[frame["query"].isin(set(queries))]
    names, terms, rows, lexical, grades = [], [], [], [], []
    for query, group in frame.groupby("query", sort=True):
        query_terms = res.lexical.query_terms(query)
        products = group.row.to_numpy(np.int64)
        names.append(query)
        terms.append(query_terms)
        rows.append(products)
        lexical.append(normalised(res.lexical.scores(query_terms), products))
        grades.append(group.grade.to_numpy(np.float32))
    folds = [query_fold(q) for q in names] if split == "train" else None
    priors = None
    if folds is not None:
        if res.fold_priors is None:
            raise ValueError("training pairs need out-of-fold priors (fold_priors)")
        priors = [res.fold_priors[fold] for fold in folds]
    inputs = res.sources.head_inputs(names, terms, [res.query_vectors[q] for q in names], rows,
                                     lexical, priors, folds)
    return PairSet(inputs.pair_queries(), inputs.product, inputs.features,
                   np.concatenate(grades))
