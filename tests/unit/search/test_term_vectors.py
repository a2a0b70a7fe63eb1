"""TermVectors.features, the batch's array code, against the definitions in term_vectors.py
computed pair by pair with plain loops over each query term and title term."""

from __future__ import annotations

import numpy as np

from fusionrank.core.search.term_vectors import TERM_VECTOR_FEATURES, WEAK_MATCH, TermVectors
from fusionrank.core.search.title_terms import TitleTerms

TITLES = ["Makita 18V Cordless Drill Kit with Battery", "Drill Bit Set (20-Piece)",
          "Garden Hose 50 ft. in Green", "Cordless Drill", "()", "Kit Kit, Drill",
          "Chrome Kitchen Tap with Hose", "Kitchen Faucet, Brushed Chrome"]
QUERIES = [["makita", "drill", "kit"], ["18v", "cordless", "drill", "zzz"], ["drill"], [],
           ["garden", "hose", "50", "ft"], ["kit", "kit"], ["faucet", "chrome"], ["qqq"]]


def reference(vectors: TermVectors, titles: TitleTerms, tokens: list[str],
              row: int) -> dict[str, float]:
    """One (query, title) pair's features, straight from their definitions."""
    terms = list(dict.fromkeys(tokens))
    title = sorted(titles.terms[row])
    if not terms or not title:
        return dict.fromkeys(TERM_VECTOR_FEATURES, 0.0)

    def vector(term: str) -> np.ndarray:  # a term no title holds has none: cosine 0
        known = vectors.index.get(term)
        return np.zeros(vectors.vectors.shape[1]) if known is None else \
            vectors.vectors[known].astype(np.float64)

    def nearest_query_term(term: str) -> float:
        return max(float(vector(q) @ vector(term)) for q in terms)

    best = [max(float(vector(q) @ vector(t)) for t in title) for q in terms]
    head = [t for t in titles.heads[row] if t in vectors.index]
    unseen = np.log1p(titles.products)
    idf = [float(vectors.idf[vectors.index[q]]) if q in vectors.index else unseen for q in terms]
    ordered = sorted(best)
    return {
        "weakest_term": ordered[0],
        "term_match": sum(best) / len(best),
        "kind_similarity": nearest_query_term(head[-1]) if head else 0.0,
        "last_term_match": best[-1],
        "first_term_match": best[0],
        "weak_terms": sum(b < WEAK_MATCH for b in best) / len(best),
        "idf_term_match": sum(w * b for w, b in zip(idf, best, strict=True)) / sum(idf),
        "head_cover": sum(nearest_query_term(t) for t in head) / max(len(head), 1),
        "second_weakest": ordered[min(1, len(ordered) - 1)],
    }


def test_term_vector_features_are_their_definitions_pair_by_pair():
    titles = TitleTerms(TITLES)
    rng = np.random.default_rng(3)
    catalogue = rng.normal(size=(len(TITLES), 12)).astype(np.float32)
    catalogue /= np.linalg.norm(catalogue, axis=1, keepdims=True)
    vectors = TermVectors.fit(titles, catalogue)
    # Every query against every title, and a ragged batch (one query's pool is empty).
    for rows in ([np.arange(len(TITLES))] * len(QUERIES),
                 [np.array([0, 5, 3]), np.array([1]), np.array([], np.int64), np.array([4, 2]),
                  np.array([2, 6, 7]), np.array([5, 0]), np.array([7, 6, 4]), np.array([3])]):
        got = vectors.features(QUERIES, np.concatenate(rows), [len(r) for r in rows])
        assert got.dtype == np.float32 and got.shape == (sum(map(len, rows)),
                                                         len(TERM_VECTOR_FEATURES))
        pairs = [(q, r) for q, query_rows in enumerate(rows) for r in query_rows.tolist()]
        for (query, row), features in zip(pairs, got, strict=True):
            want = reference(vectors, titles, QUERIES[query], row)
            np.testing.assert_allclose(features, [want[n] for n in TERM_VECTOR_FEATURES],
                                       atol=2e-6, err_msg=f"{QUERIES[query]} × {TITLES[row]}")
