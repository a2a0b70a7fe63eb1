"""Title terms and term vectors: head phrases, close words, and the batch term features against
the set comparisons each one is defined by."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from fusionrank.core.search.features import FEATURES
from fusionrank.core.search.term_vectors import TERM_VECTOR_FEATURES, TermVectors
from fusionrank.core.search.text import lexical_tokens
from fusionrank.core.search.title_terms import TitleTerms


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_title_heads_and_term_vectors_describe_close_words():
    titles = ["Makita Cordless Drill Kit with Battery", "DeWalt Drill Driver (Tool Only)",
              "Garden Hose in Green", "Faucet Tap in Chrome", "Kitchen Faucet, Brushed", "()"]
    terms = TitleTerms(titles)
    assert terms.heads[0] == ["makita", "cordless", "drill", "kit"]
    assert terms.heads[1] == ["dewalt", "drill", "driver"]
    assert terms.heads[2] == ["garden", "hose"]
    head = terms.term_features([["makita", "kit"]], np.array([0, 1]), np.array([0, 0]))
    assert head["brand_match"].tolist() == [1.0, 0.0]
    assert head["kind_match"].tolist() == [1.0, 0.0]  # "kit" ends the first title's head
    assert head["all_found"].tolist() == [1.0, 0.0]
    np.testing.assert_allclose(head["missing_terms"], [0.0, 2 / 5])

    rng = np.random.default_rng(1)
    catalogue = _unit(rng.normal(size=(len(titles), 16)))
    vectors = TermVectors.fit(terms, catalogue)
    # A term's vector is the mean of the embeddings of the titles that hold it.
    faucet = catalogue[3] + catalogue[4]
    np.testing.assert_allclose(vectors.vectors[vectors.index["faucet"]],
                               faucet / np.linalg.norm(faucet), atol=1e-6)
    # "tap" (title 3 only) is close to "faucet" (titles 3 and 4): it matches title 4, which
    # does not hold it, better than the garden hose; an unknown word matches nothing.
    tap = dict(zip(TERM_VECTOR_FEATURES,
                   vectors.features([["tap"]], np.array([4, 2]), [2]).T, strict=True))
    assert tap["term_match"][0] > tap["term_match"][1]
    unknown = vectors.features([["zzzz"]], np.array([0, 4]), [2])
    assert unknown.shape == (2, len(TERM_VECTOR_FEATURES)) and unknown.dtype == np.float32
    assert (unknown[:, TERM_VECTOR_FEATURES.index("term_match")] == 0).all()
    assert (unknown[:, TERM_VECTOR_FEATURES.index("weak_terms")] == 1).all()
    assert not vectors.features([["faucet"]], np.array([5]), [1]).any()  # no title terms
    assert len(set(FEATURES)) == len(FEATURES)


def test_term_vector_features_of_a_query_do_not_depend_on_its_batch():
    titles = ["Makita Cordless Drill Kit with Battery", "DeWalt Drill Driver (Tool Only)",
              "Garden Hose in Green", "Faucet Tap in Chrome", "Kitchen Faucet, Brushed", "()",
              "Cordless Garden Hose Reel", "Chrome Kitchen Tap with Hose"]
    rng = np.random.default_rng(2)
    vectors = TermVectors.fit(TitleTerms(titles), _unit(rng.normal(size=(len(titles), 16))))
    tokens = [["kitchen", "tap", "chrome"], ["zzzz"], [], ["drill", "makita", "drill", "kit"],
              ["hose"]]
    rows = [np.array([7, 3, 4, 5]), np.array([0, 2]), np.array([1, 6, 7]),
            np.array([0, 1, 6, 5, 3]), np.array([2])]
    batch = vectors.features(tokens, np.concatenate(rows), [len(r) for r in rows])
    alone = np.concatenate([vectors.features([t], r, [len(r)]) for t, r in zip(tokens, rows,
                                                                              strict=True)])
    np.testing.assert_array_equal(batch, alone)  # bit for bit
    assert not alone[6:9].any()  # the third query, without terms, matches nothing
    # The first query against "Chrome Kitchen Tap with Hose", which holds all its terms: every
    # term's nearest title term is itself, and the head phrase is "chrome kitchen tap".
    first = dict(zip(TERM_VECTOR_FEATURES, alone[0], strict=True))
    for name in ("weakest_term", "term_match", "last_term_match", "first_term_match",
                 "idf_term_match", "second_weakest", "head_cover", "kind_similarity"):
        assert first[name] == pytest.approx(1.0, abs=1e-5), name
    assert first["weak_terms"] == 0.0


def test_term_features_of_a_batch_are_the_set_comparisons_they_describe():
    """The array code against the plain set arithmetic each feature is defined by, for every
    (query, title) pair of a small catalogue."""
    titles = ["Makita 18V Cordless Drill Kit with Battery", "Drill Bit Set (20-Piece)",
              "Garden Hose 50 ft. in Green", "Cordless Drill", "()", "Kit Kit, Drill"]
    queries = [["makita", "drill", "kit"], ["18v", "cordless", "drill", "zzz"], ["drill"], [],
               ["garden", "hose", "50", "ft"], ["kit", "kit"]]
    terms = TitleTerms(titles)
    rows = np.tile(np.arange(len(titles)), len(queries))
    owner = np.repeat(np.arange(len(queries)), len(titles))
    got = terms.term_features(queries, rows, owner)
    for j, (row, query) in enumerate(zip(rows, owner, strict=True)):
        tokens, title = queries[query], terms.terms[row]
        words, head = set(tokens), terms.heads[row]
        first = lexical_tokens(titles[row])[:1]
        pairs = set(pairwise(tokens))
        title_pairs = set(pairwise(lexical_tokens(titles[row])))
        numbers = {t for t in words if any(c.isdigit() for c in t)}
        want = {
            "overlap": len(words & title) / max(len(words), 1),
            "title_cover": len(words & title) / max(len(title), 1),
            "query_terms": len(tokens) / 10,
            "last_term": float(bool(tokens) and tokens[-1] in title),
            "first_term": float(bool(tokens) and tokens[0] in title),
            "bigrams": len(pairs & title_pairs) / len(pairs) if pairs else 0.0,
            "numbers": len(numbers & title) / len(numbers) if numbers else 1.0,
            "title_terms": len(title) / 20,
            "brand_match": float(bool(first) and first[0] in words),
            "kind_match": float(bool(head) and head[-1] in words),
            "kind_pair": sum(t in words for t in head[-2:]) / max(len(head[-2:]), 1),
            "all_found": float(bool(words) and words <= title),
            "missing_terms": len(words - title) / 5,
            "head_overlap": len(words & set(head)) / max(len(words), 1),
            "head_terms": len(head) / 10,
        }
        for name, value in want.items():
            assert got[name][j] == np.float32(value), (name, titles[row], tokens)
