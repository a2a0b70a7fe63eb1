"""Judgement loading, the split by query, hard-negative guards and the BM25 index."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from fusionrank.core.search.feature_graph import GRAPH_FEATURES
from fusionrank.core.search.features import (
    FEATURES,
    FOLDS,
    MEMORY_FEATURES,
    TERM_VECTOR_FEATURES,
    JudgementMemory,
    ProductPriors,
    TermVectors,
    TitleTerms,
    query_fold,
)
from fusionrank.core.search.lexical import LexicalIndex, merge_candidates, top_k
from fusionrank.core.search.text import lexical_tokens
from fusionrank.training.search.data import (
    SPLITS,
    SplitConfig,
    assert_disjoint,
    load_judgements,
    normalise_query,
    split_of,
)
from fusionrank.training.search.negatives import MiningConfig, mine_negatives
from tests.support.relevance import sample_judgements, synthetic_judgements

WIDE = SplitConfig(seed=7, dev_fraction=0.25, test_fraction=0.25)


def variant_rows(queries: int = 40) -> list[tuple[str, str, str, float]]:
    """Each query in three spellings (case, padding, inner spaces), each judging products."""
    rows = []
    for q in range(queries):
        base = f"cordless drill model {q}"
        for v, spelling in enumerate([base, f"  {base.upper()} ", base.replace(" ", "  ")]):
            rows.append((f"{q}{v}", f"Drill kit {q} variant {v} with battery", spelling,
                         1.0 + (q + v) % 3))
    return rows


def test_normalised_variants_never_cross_splits(tmp_path):
    judgements = load_judgements(synthetic_judgements(tmp_path / "v.csv", variant_rows()), WIDE)
    groups = [set(judgements.queries(s)) for s in SPLITS]
    assert_disjoint(groups)
    assert all(groups), "every split holds queries"
    raw = pd.read_csv(tmp_path / "v.csv")
    split_by_raw = {t: split_of(normalise_query(t), WIDE) for t in raw.search_term}
    for q in range(40):
        spellings = [t for t in split_by_raw if normalise_query(t) == f"cordless drill model {q}"]
        assert len(spellings) == 3 and len({split_by_raw[t] for t in spellings}) == 1


def test_split_is_deterministic_and_independent_of_row_order(tmp_path):
    path = sample_judgements(tmp_path / "real.csv", queries=60)
    first = load_judgements(path, WIDE)
    shuffled = pd.read_csv(path, dtype={"product_uid": str}).sample(frac=1.0, random_state=3)
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    second = load_judgements(tmp_path / "shuffled.csv", WIDE)
    for s in SPLITS:
        assert first.queries(s) == second.queries(s)
    assert_disjoint(first.queries(s) for s in SPLITS)
    # Graded labels are kept as they are.
    assert set(first.frame.grade.round(2)) <= {1.0, 1.25, 1.33, 1.5, 1.67, 1.75, 2.0, 2.25, 2.33,
                                               2.5, 2.67, 2.75, 3.0}
    assert first.frame.grade.nunique() > 3


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda f: f.drop(columns=["relevance"]), "required column(s) missing: relevance"),
    (lambda f: f.drop(columns=["search_term", "product_title"]), "product_title, search_term"),
    (lambda f: f.assign(relevance=[0.5, *list(f.relevance[1:])]), "outside 1..3"),
    (lambda f: f.assign(relevance=[3.5, *list(f.relevance[1:])]), "first on data row 1"),
    (lambda f: f.assign(relevance=["high", *list(f.relevance[1:])]), "or not numbers"),
    (lambda f: f.assign(search_term=["  ", *list(f.search_term[1:])]), "empty search_term"),
    (lambda f: f.iloc[:0], "no judgements"),
])
def test_bad_input_fails_early_with_a_clear_message(tmp_path, mutate, message):
    frame = pd.read_csv(synthetic_judgements(tmp_path / "ok.csv", variant_rows(10)))
    mutate(frame).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_judgements(tmp_path / "bad.csv", WIDE)


def test_an_empty_split_is_an_error(tmp_path):
    one_query = [("1", "Hammer", "hammer", 3.0), ("2", "Nails", "hammer", 1.0)]
    with pytest.raises(ValueError, match="split would be empty"):
        load_judgements(synthetic_judgements(tmp_path / "one.csv", one_query), WIDE)


def test_missing_file_and_cli_errors(tmp_path, capsys):
    from fusionrank.app.cli import main

    with pytest.raises(FileNotFoundError, match="not found"):
        load_judgements(tmp_path / "absent.csv")
    assert main(["train", "--data", str(tmp_path / "absent.csv"), "--out",
                 str(tmp_path / "run")]) == 2
    assert "absent.csv not found" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(tmp_path / "nothing")]) == 2
    assert "is not a training run" in capsys.readouterr().err


def test_hard_negatives_skip_judged_relevant_and_near_duplicates():
    titles = ["cordless drill 18v kit", "cordless drill 18v kit black",  # near-copy of positive
              "corded drill 600w", "drill bit set", "garden hose 50 ft", "cordless drill case",
              "hammer drill cordless 20v"]
    index = LexicalIndex.build(titles)
    judged = {"cordless drill": {0: 3.0, 6: 2.33, 3: 1.0}}
    negatives = mine_negatives(judged, index, TitleTerms(titles), MiningConfig(depth=7))
    mined = negatives["cordless drill"]
    assert mined[0] == 3, "the judged-irrelevant product comes first"
    assert 0 not in mined and 6 not in mined, "judged-relevant products are never negatives"
    assert 1 not in mined, "a near-copy of a positive's title is skipped"
    assert 5 in mined


def test_hard_negatives_from_the_encoder_skip_near_identical_embeddings():
    titles = ["a b c", "d e f", "g h i", "j k l"]
    catalogue = np.eye(4, dtype=np.float32)
    catalogue[1] = (catalogue[0] + 0.01 * catalogue[1]) / np.linalg.norm(catalogue[0]
                                                                          + 0.01 * catalogue[1])
    query = np.array([[0.9, 0.1, 0.3, 0.3]], dtype=np.float32)
    negatives = mine_negatives({"q": {0: 3.0}}, LexicalIndex.build(titles), TitleTerms(titles),
                               MiningConfig(depth=4), query, catalogue)
    assert 1 not in negatives["q"] and {2, 3} <= set(negatives["q"])


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
    pool = merge_candidates(dense, loaded.scores(loaded.query_terms("red drill")), 10)
    assert len(pool) == 13 and len(set(pool.tolist())) == 13
    np.testing.assert_array_equal(pool[:3], dense)
    # Ties are broken by the lower row, so the order never depends on the platform.
    tied, _ = top_k(np.zeros(10, dtype=np.float32), 4)
    np.testing.assert_array_equal(tied, [0, 1, 2, 3])


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
