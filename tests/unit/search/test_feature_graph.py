"""The numeric features graph against the plain arithmetic its docstring defines, and the same
features for a query whatever batch it arrives in, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrank.core.search.feature_graph import GRAPH_FEATURES, NEIGHBOUR_QUERIES, SHARPNESS
from fusionrank.core.search.features import graph_features
from fusionrank.core.search.judgements import JudgementMemory, ProductPriors


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def memory() -> tuple[JudgementMemory, np.ndarray]:
    rng = np.random.default_rng(3)
    catalogue = _unit(rng.normal(size=(60, 16)))
    queries = [f"query {i}" for i in range(45)]  # more than NEIGHBOUR_QUERIES
    judged = [rng.choice(60, size=rng.integers(1, 6), replace=False) for _ in queries]
    grades = [rng.choice([1.0, 1.67, 2.33, 3.0], size=len(j)) for j in judged]
    return JudgementMemory.fit(queries, _unit(rng.normal(size=(45, 16))), judged, grades,
                               catalogue), catalogue


def reference(memory: JudgementMemory, query: np.ndarray, products: np.ndarray,
              rows: np.ndarray, hidden_fold: int) -> np.ndarray:
    """The memory features by their definition, one candidate and one judgement at a time."""
    queries = memory.query_vectors.astype(np.float64)
    similarity = queries @ query
    visible = [i for i in np.argsort(-similarity, kind="stable")
               if memory.folds[i] != hidden_fold][:NEIGHBOUR_QUERIES]
    judgements = [(j, similarity[i]) for i in visible
                  for j in range(memory.offsets[i], memory.offsets[i + 1])]
    out = []
    for product, row in zip(products, rows, strict=True):
        joint = [float(memory.product_vectors[j].astype(np.float64) @ product) + s
                 for j, s in judgements]
        grades = [float(memory.grades[j]) for j, _ in judgements]
        weight = np.exp(SHARPNESS * (np.array(joint) - max(joint)))
        same = [(np.exp(SHARPNESS * (s - 1.0)), memory.grades[j]) for j, s in judgements
                if memory.product_rows[j] == row]
        judged_grade = sum(w * g for w, g in same) / sum(w for w, _ in same) if same else 0.0
        out.append([weight @ grades / weight.sum() - 2.0, max(joint) - 2.0,
                    grades[int(np.argmax(joint))] - 2.0, float(bool(same)), judged_grade / 3.0,
                    similarity[visible[0]]])
    return np.array(out)


def test_the_graph_computes_the_features_it_defines(memory):
    memory, catalogue = memory
    rng = np.random.default_rng(4)
    vectors = _unit(rng.normal(size=(4, 16)))
    rows = rng.choice(60, size=(4, 9))
    # Query 0 is training query 0, with its judged products among its candidates.
    vectors[0] = memory.query_vectors[0]
    own = memory.product_rows[memory.offsets[0]:memory.offsets[1]]
    rows[0, :len(own)] = own
    priors = ProductPriors(rng.uniform(1, 3, 60).astype(np.float32),
                           rng.integers(0, 5, 60).astype(np.float32))
    folds = np.array([-1, 0, 3, -1])
    numeric = memory.graph(vectors, catalogue[rows], rows,
                           np.stack([priors.mean[rows], priors.count[rows]], axis=-1), folds)
    assert numeric.shape == (4, 9, len(GRAPH_FEATURES)) and numeric.dtype == np.float32
    named = {name: numeric[..., i] for i, name in enumerate(GRAPH_FEATURES)}
    np.testing.assert_allclose(named["similarity"],
                               np.einsum("qpd,qd->qp", catalogue[rows], vectors), atol=1e-6)
    np.testing.assert_allclose(named["prior"], priors.mean[rows] - 2.0, atol=1e-6)
    np.testing.assert_allclose(named["prior_count"], np.log1p(priors.count[rows]) / 3.0,
                               atol=1e-6)
    for q in range(4):
        np.testing.assert_allclose(numeric[q, :, 3:], reference(
            memory, vectors[q].astype(np.float64), catalogue[rows[q]].astype(np.float64),
            rows[q], folds[q]), atol=2e-5)
    assert named["judged_before"][0, :len(own)].all()
    assert named["judged_before"][1:].sum() < named["judged_before"][1:].size


def test_a_querys_features_do_not_depend_on_its_batch(memory):
    memory, catalogue = memory
    rng = np.random.default_rng(5)
    vectors = _unit(rng.normal(size=(7, 16)))
    sizes = [12, 12, 12, 12, 12, 12, 12]
    rows = rng.choice(60, size=sum(sizes))
    priors = [ProductPriors(np.full(60, 2.0, np.float32), np.ones(60, np.float32))] * 7
    folds = [None, 1, None, 2, None, None, 4]
    together = graph_features(memory.graph, vectors, sizes, rows, catalogue[rows], priors,
                              folds)
    bounds = np.cumsum([0, *sizes])
    for q in range(7):
        part = slice(bounds[q], bounds[q + 1])
        alone = graph_features(memory.graph, vectors[q:q + 1], sizes[q:q + 1], rows[part],
                               catalogue[rows[part]], priors[q:q + 1], folds[q:q + 1])
        assert np.array_equal(alone, together[part]), q
    # Padded to the longest query of a batch (training's ragged pools), and cut back.
    ragged = graph_features(memory.graph, vectors[:2], [12, 5], rows[:17], catalogue[rows[:17]],
                            priors[:2], folds[:2])
    assert ragged.shape == (17, len(GRAPH_FEATURES))
    np.testing.assert_allclose(ragged[12:], graph_features(
        memory.graph, vectors[1:2], [5], rows[12:17], catalogue[rows[12:17]], priors[1:2],
        folds[1:2]), atol=1e-6)


def test_a_memory_with_fewer_visible_queries_than_neighbours_gives_finite_features():
    """Hiding a fold of a small memory leaves fewer than NEIGHBOUR_QUERIES queries to consult,
    and blank judgement slots beside them: still the definition, and no NaN."""
    rng = np.random.default_rng(6)
    catalogue = _unit(rng.normal(size=(12, 8)))
    queries = [f"q{i}" for i in range(8)]
    judged = [rng.choice(12, size=rng.integers(1, 4), replace=False) for _ in queries]
    memory = JudgementMemory.fit(queries, _unit(rng.normal(size=(8, 8))), judged,
                                 [np.full(len(j), 2.5) for j in judged], catalogue)
    rows = np.arange(12)[None]
    vectors = _unit(rng.normal(size=(1, 8)))
    for fold in sorted(set(memory.folds.tolist())):
        numeric = memory.graph(vectors, catalogue[rows], rows, np.zeros((1, 12, 2)),
                               np.array([fold]))
        assert np.isfinite(numeric).all()
        np.testing.assert_allclose(numeric[0, :, 3:], reference(
            memory, vectors[0].astype(np.float64), catalogue[rows[0]].astype(np.float64),
            rows[0], fold), atol=2e-5)
