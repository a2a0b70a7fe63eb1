"""The live catalogue's dense retrieval (core/search/live_view.py `LiveRetrieval`): the base's
exact retrieval less its dead rows, and the segments' live rows, give each query the k best
live rows of the whole catalogue, ties by the lower row, however many rows the segments hold."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrank.core import artefacts
from fusionrank.core.search.live_view import LiveRetrieval
from fusionrank.core.search.retrieval import GraphRetrieval
from fusionrank.export.search.retrieval import retrieval_graph


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("appended", [12, 900])  # fewer than k, and many more
def test_live_retrieval_is_the_k_best_live_rows_ties_by_row(tmp_path, appended):
    rng = np.random.default_rng(5)
    base = unit(rng.standard_normal((400, 16)))
    delta = unit(rng.standard_normal((appended, 16)))
    delta[: appended // 3] = base[rng.integers(0, 400, appended // 3)]  # ties with the base
    delta[appended // 2:appended // 2 + 60] = delta[appended // 2]  # a tie across the k-th
    delta[-4:] = delta[:4]  # and among the segments' own rows
    retrieval_graph(base, tmp_path / artefacts.RETRIEVAL)
    live = np.ones(400 + appended, dtype=bool)
    live[rng.choice(400, 120, replace=False)] = False  # replaced or deleted base rows
    live[400 + rng.choice(appended, appended // 5, replace=False)] = False
    retrieval = LiveRetrieval(GraphRetrieval(tmp_path), 400, live, delta)
    queries = unit(np.concatenate([base[:3], delta[:3], delta[appended // 2:][:1],
                                   rng.standard_normal((4, 16))]))
    k = 40
    rows, similarity = retrieval.search(queries, k)

    # Every live row scored: the base's by its exact graph (all 400), the segments' live rows
    # by the same matrix product (one of another shape may round the last bit otherwise, and
    # the base's copies tie with them), then sorted by score, ties by row.
    base_rows, base_scores = GraphRetrieval(tmp_path).search(queries, 400)
    live_delta = np.flatnonzero(live[400:])
    delta_scores = queries @ np.ascontiguousarray(delta[live_delta]).T
    for q in range(len(queries)):
        scores = np.full(400 + appended, -np.inf, dtype=np.float32)
        scores[base_rows[q]] = base_scores[q]
        scores[400 + live_delta] = delta_scores[q]
        candidates = np.flatnonzero(live)
        order = candidates[np.lexsort((candidates, -scores[candidates]))][:k]
        np.testing.assert_array_equal(rows[q], order)
        np.testing.assert_array_equal(similarity[q], scores[order])
    assert live[rows].all()
