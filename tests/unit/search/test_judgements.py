"""The learned judgement artefacts: product priors out of fold, and the memory of training
judgements read by the nearest queries."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrank.core.search.feature_graph import GRAPH_FEATURES, MEMORY_FEATURES
from fusionrank.core.search.judgements import FOLDS, JudgementMemory, ProductPriors, query_fold


def test_product_priors_out_of_fold_hide_the_fold():
    rows, grades = np.array([0, 0, 1]), np.array([3.0, 1.0, 3.0])
    folds = np.array([0, 1, 1])
    priors = ProductPriors.out_of_fold(3, rows, grades, folds)
    assert len(priors) == FOLDS
    # Fold 0 sees only the two fold-1 judgements; fold 1 only product 0's 3.0.
    assert priors[0].count.tolist() == [1.0, 1.0, 0.0]
    assert priors[1].count.tolist() == [1.0, 0.0, 0.0]
    assert priors[1].mean[0] > priors[0].mean[0]
    full = ProductPriors.fit(3, rows, grades)
    assert full.count.tolist() == [2.0, 1.0, 0.0]


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_judgement_memory_reads_the_nearest_queries_grades(tmp_path):
    rng = np.random.default_rng(0)
    catalogue = _unit(rng.normal(size=(20, 8)))
    queries = ["cordless drill", "garden hose", "red paint"]
    vectors = _unit(rng.normal(size=(3, 8)))
    memory = JudgementMemory.fit(queries, vectors, [np.array([0, 1]), np.array([2]),
                                                    np.array([3, 4])],
                                 [np.array([3.0, 1.0]), np.array([2.0]),
                                  np.array([1.0, 1.0])], catalogue)
    memory.save(tmp_path / "memory.npz")
    loaded = JudgementMemory.load(tmp_path / "memory.npz")
    # Asked with the first training query itself: product 0 was judged 3.0, product 1 1.0.
    def remembered(rows: list[int], hidden_fold: int = -1) -> np.ndarray:
        numeric = loaded.graph(vectors[:1], catalogue[rows][None], np.array([rows]),
                               np.zeros((1, len(rows), 2)), np.array([hidden_fold]))
        return numeric[0, :, [GRAPH_FEATURES.index(name) for name in MEMORY_FEATURES]].T

    features = remembered([0, 1, 9])
    named = dict(zip(MEMORY_FEATURES, features.T, strict=True))
    assert features.shape == (3, len(MEMORY_FEATURES)) and features.dtype == np.float32
    assert named["judged_before"].tolist() == [1.0, 1.0, 0.0]
    assert named["judged_grade"][0] > named["judged_grade"][1] > 0 == named["judged_grade"][2]
    assert named["nearest_grade"][0] == 1.0 and named["nearest_grade"][1] == -1.0
    assert named["neighbour_grade"][0] > named["neighbour_grade"][1]
    np.testing.assert_allclose(named["nearest_query"], 1.0, atol=1e-3)
    # Hiding the query's fold hides its own judgements: nothing says product 0 was judged.
    hidden = remembered([0], hidden_fold=query_fold(queries[0]))
    assert hidden[0, MEMORY_FEATURES.index("judged_before")] == 0.0
    # A memory whose every query is hidden has nothing to say: zeros.
    alone = JudgementMemory.fit(queries[:1], vectors[:1], [np.array([0, 1])],
                                [np.array([3.0, 1.0])], catalogue)
    nothing = alone.graph(vectors[:1], catalogue[[0, 1]][None], np.array([[0, 1]]),
                          np.zeros((1, 2, 2)), np.array([query_fold(queries[0])]))
    assert not nothing[0, :, GRAPH_FEATURES.index(MEMORY_FEATURES[0]):].any()
    # Another catalogue: products are matched by row map, -1 where not served.
    moved = loaded.aligned(np.array([5, -1] + [-1] * 18))
    assert moved.product_rows.tolist() == [5, -1, -1, -1, -1]


def test_judgement_memory_load_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="memory"):
        JudgementMemory.load(tmp_path / "memory.npz")
