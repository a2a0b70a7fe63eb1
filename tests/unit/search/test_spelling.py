"""Query spelling correction against the catalogue vocabulary: the lexical index owns the one
speller, and BM25 and the feedback features take the terms it corrected."""

from __future__ import annotations

import numpy as np

from fusionrank.core.search import spelling
from fusionrank.core.search.lexical import LexicalIndex
from fusionrank.core.search.spelling import QuerySpeller
from fusionrank.core.search.text import lexical_tokens
from fusionrank.core.search.title_terms import TitleTerms

TITLES = ["Aluminum Step Ladder 16 ft.", "Garden Hose 100 feet", "Wall Shelf 12 in. White",
          "Metal Pipe 1 inch", "Aluminum Shelf Bracket", "Cordless Drill 18V"]


def test_typos_and_run_together_sizes_become_catalogue_terms():
    speller = QuerySpeller({"aluminum": 2, "ladder": 1, "shelf": 2, "100": 1, "feet": 1,
                            "drill": 1, "hose": 5, "nose": 1})
    assert speller.correct(["aluminuim", "ladder"]) == ["aluminum", "ladder"]
    assert speller.correct(["100feet"]) == ["100", "feet"]
    assert speller.correct(["shefl"]) == ["shelf"]  # a transposition is one edit
    # Of equally close terms the one more titles hold wins.
    assert speller.correct(["gose"]) == ["hose"]
    # Known terms, numbers, short terms and hopeless ones stay as they are.
    assert speller.correct(["drill", "2024", "xyz", "qqqqqqq"]) == ["drill", "2024", "xyz",
                                                                    "qqqqqqq"]


def test_the_speller_remembers_a_bounded_number_of_corrections(monkeypatch):
    monkeypatch.setattr(spelling, "REMEMBERED", 4)
    speller = QuerySpeller({"shelf": 2, "ladder": 1})
    made_up = [f"zq{i:04d}xv" for i in range(50)]  # words a server could be fed endlessly
    for word in made_up:
        assert speller.correct([word, "sheff"]) == [word, "shelf"]
    assert speller._remembered.cache_info().currsize == 4
    assert speller.correct(["sheff"]) == ["shelf"]  # still right after the cache dropped it


def test_bm25_finds_the_product_a_misspelt_query_means(tmp_path):
    index = LexicalIndex.build(TITLES)
    index.save(tmp_path / "lexical.npz")
    loaded = LexicalIndex.load(tmp_path / "lexical.npz")
    for lexical in (index, loaded):
        scores = lexical.scores(lexical.query_terms("aluminuim ladder"))
        assert int(np.argmax(scores)) == 0 and scores[0] > 0
        assert lexical.query_terms("100feet hose") == ["100", "feet", "hose"]


def test_the_speller_knows_exactly_the_terms_the_feature_titles_hold():
    index, terms = LexicalIndex.build(TITLES), TitleTerms(TITLES)
    assert index.speller.vocabulary == frozenset().union(*terms.terms)
    assert index.query_terms("1inch metal pipes") == ["1", "inch", "metal", "pipe"]
    assert lexical_tokens("1inch metal pipes") == ["1inch", "metal", "pipe"]
    matched = terms.term_features([index.query_terms("aluminuim ladder")], np.array([0]),
                                  np.array([0]))
    assert matched["overlap"][0] == 1.0
