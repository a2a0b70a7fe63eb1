"""The BM25 index: saved and loaded unchanged, and the hybrid candidate pool it feeds."""

from __future__ import annotations

import numpy as np

from fusionrank.core.search.lexical import LexicalIndex, lexical_pool, top_k


def test_bm25_index_round_trip_and_hybrid_pool(tmp_path):
    titles = [f"product {i} {'drill' if i % 3 == 0 else 'saw'} {'blue' if i % 2 else 'red'}"
              for i in range(50)]
    index = LexicalIndex.build(titles)
    index.save(tmp_path / "bm25.npz")
    loaded = LexicalIndex.load(tmp_path / "bm25.npz")
    for query in ["red drill", "saw", "unknown words"]:
        terms = index.query_terms(query)
        assert loaded.query_terms(query) == terms
        np.testing.assert_array_equal(index.scores(terms), loaded.scores(terms))
    rows, _ = loaded.top(loaded.query_terms("red drill"), 5)
    assert all("drill" in titles[r] for r in rows)
    dense = np.array([1, 2, 3], dtype=np.int64)
    pool, _ = lexical_pool(dense, loaded.scores(loaded.query_terms("red drill")), 10)
    assert len(pool) == 13 and len(set(pool.tolist())) == 13
    np.testing.assert_array_equal(pool[:3], dense)
    # The BM25 part is the best rows not among the dense ones (ties by row), and the pool's
    # top_k also gives the query's best score, which the LEXICAL signal divides by.
    for query in ["red drill", "saw", "unknown words"]:
        scores = loaded.scores(loaded.query_terms(query))
        pool, best = lexical_pool(dense, scores, 10)
        by_score = np.lexsort((np.arange(len(scores)), -scores))
        np.testing.assert_array_equal(pool[3:], [r for r in by_score if r not in dense][:10])
        assert best == float(scores.max())
    # Ties are broken by the lower row, so the order never depends on the platform.
    tied, _ = top_k(np.zeros(10, dtype=np.float32), 4)
    np.testing.assert_array_equal(tied, [0, 1, 2, 3])
