"""The title structures of a live catalogue (core/live/titles.py) give the features a fresh
build of its live titles gives, after a sequence of changes (issue 24's equivalence)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fusionrank.core.search import live_titles
from fusionrank.core.search.live_titles import TitleBase, extended
from fusionrank.core.search.term_vectors import TermVectors
from fusionrank.core.search.title_terms import TitleTerms

WORDS = ["red", "blue", "steel", "oak", "cordless", "drill", "saw", "kettle", "lamp", "shade",
         "ceiling", "fan", "wool", "scarf", "garden", "hose", "brass", "tap", "white", "paint",
         "18v", "2x4", "makita", "dewalt"]
JOINS = [" with ", " in ", ", ", " - ", " "]


def title(rng: random.Random, words: list[str]) -> str:
    head = " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
    return head + rng.choice(JOINS) + " ".join(rng.choice(words) for _ in range(rng.randint(0, 3)))


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("chunk", [live_titles.SUM_CHUNK, 3])
def test_live_title_structures_give_a_fresh_builds_features(chunk, monkeypatch):
    """(`chunk`: terms summed again at a time; 3 splits them into dozens of sums: the bits of
    one.)"""
    monkeypatch.setattr(live_titles, "SUM_CHUNK", chunk)
    rng = random.Random(3)
    np_rng = np.random.default_rng(3)
    base_titles = [title(rng, WORDS[:18]) for _ in range(200)]
    # The delta brings words the base never held, replaces 30 base rows and deletes 20.
    delta_titles = ["dewalt 18v drill with 2x4 paint", *(title(rng, WORDS) for _ in range(39))]
    embeddings = unit(np_rng.normal(size=(240, 12)))
    live = np.ones(240, dtype=bool)
    live[rng.sample(range(200), 50)] = False
    base_terms = TitleTerms(base_titles)
    base = TitleBase(base_terms, TermVectors.fit(base_terms, embeddings[:200]), embeddings[:200])

    terms, vectors = extended(base, TitleTerms(delta_titles), live, embeddings)

    rows = np.flatnonzero(live)  # the fresh build holds the live rows, in row order
    all_titles = base_titles + delta_titles
    fresh_terms = TitleTerms([all_titles[r] for r in rows])
    fresh_vectors = TermVectors.fit(fresh_terms, embeddings[rows])

    np.testing.assert_array_equal(terms.idf, fresh_terms.idf)
    np.testing.assert_array_equal(terms.char_norms[rows], fresh_terms.char_norms)
    assert terms.vocabulary[:len(base_terms.vocabulary)] == base_terms.vocabulary
    # The base's title arrays are read where they are, never copied into the live state's.
    for name in TitleTerms.RAGGED:
        assert getattr(terms, name).first is getattr(base_terms, name)
    assert terms.char_counts.first is base_terms.char_counts
    assert set(vectors.index) == set(fresh_vectors.index)
    mine = [vectors.index[t] for t in fresh_vectors.index]
    # Summed over the same rows in the same order: the same bits.
    np.testing.assert_array_equal(vectors.vectors[mine], fresh_vectors.vectors)
    np.testing.assert_array_equal(vectors.idf[mine], fresh_vectors.idf)

    # Some queries are the words of new titles: their pairs are pairs only the delta holds.
    queries = ["red oak drill", "makita 18v cordless", "steel tap with brass", "2x4 lamp shade",
               "kettel", "nothing here", *(" ".join(delta_titles[i].replace(",", "").replace(
                   " - ", " ").split()[:3]) for i in range(4)), "dewalt 18v drill"]
    tokens = [q.split() for q in queries]
    new_rows = np.flatnonzero(rows >= len(base_titles)).tolist()  # the new titles' too
    candidates = np.array([rng.sample(range(len(rows)), 15) + new_rows[:1]
                           + rng.sample(new_rows[1:], 9) for _ in queries])
    owner = np.repeat(np.arange(len(queries)), 25)
    fresh_rows = candidates.ravel()
    live_rows = rows[fresh_rows]
    got = terms.term_features(tokens, live_rows, owner)
    want = fresh_terms.term_features(tokens, fresh_rows, owner)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_array_equal(terms.char_cosine(queries, live_rows, owner),
                                  fresh_terms.char_cosine(queries, fresh_rows, owner))
    np.testing.assert_allclose(vectors.features(tokens, live_rows, [25] * len(queries)),
                               fresh_vectors.features(tokens, fresh_rows, [25] * len(queries)),
                               atol=1e-5)


def test_without_a_delta_the_base_is_served_with_its_live_rows_statistics():
    rng = random.Random(4)
    titles = [title(rng, WORDS) for _ in range(60)]
    embeddings = unit(np.random.default_rng(4).normal(size=(60, 8)))
    live = np.ones(60, dtype=bool)
    live[:10] = False
    base = TitleTerms(titles)
    terms, vectors = extended(TitleBase(base, TermVectors.fit(base, embeddings), embeddings),
                              TitleTerms([]), live, embeddings)
    fresh = TitleTerms(titles[10:])
    np.testing.assert_array_equal(terms.idf, fresh.idf)
    fresh_vectors = TermVectors.fit(fresh, embeddings[10:])
    mine = [vectors.index[t] for t in fresh_vectors.index]
    assert set(vectors.index) == set(fresh_vectors.index)
    np.testing.assert_array_equal(vectors.vectors[mine], fresh_vectors.vectors)


@pytest.mark.parametrize("chunk", [live_titles.SUM_CHUNK, 1])
def test_a_common_terms_vector_is_moved_by_the_changes_to_within_rounding(chunk, monkeypatch):
    """(`chunk` 1: the 70 changed rows are added to the sums 8 at a time.)"""
    monkeypatch.setattr(live_titles, "SUM_CHUNK", chunk)
    rng = random.Random(5)
    titles = [title(rng, WORDS[:6]) for _ in range(120)]  # six words: every term is common
    delta = [title(rng, WORDS[:8]) for _ in range(30)]
    embeddings = unit(np.random.default_rng(5).normal(size=(150, 8)))
    live = np.ones(150, dtype=bool)
    live[rng.sample(range(120), 40)] = False
    base_terms = TitleTerms(titles)
    base = TitleBase(base_terms, TermVectors.fit(base_terms, embeddings[:120]), embeddings[:120],
                     exact_up_to=10)
    assert len(base.common[0]) >= 6
    _, vectors = extended(base, TitleTerms(delta), live, embeddings)
    rows = np.flatnonzero(live)
    fresh = TermVectors.fit(TitleTerms([(titles + delta)[r] for r in rows]), embeddings[rows])
    mine = [vectors.index[t] for t in fresh.index]
    np.testing.assert_allclose(vectors.vectors[mine], fresh.vectors, atol=1e-6)
    np.testing.assert_array_equal(vectors.idf[mine], fresh.idf)


def test_a_state_built_on_the_previous_one_has_the_bits_of_one_built_from_the_base(
        monkeypatch):
    """`extended(..., previous=)` takes the vectors of the base terms no row touched since the
    previous state from it: every term's vector equals, bit for bit, a build from the base."""
    rng = random.Random(5)
    np_rng = np.random.default_rng(5)
    words = [*WORDS, *(f"w{i}" for i in range(300))]
    base_titles = [title(rng, words) for _ in range(300)]
    embeddings = unit(np_rng.normal(size=(300 + 80, 12)))
    base_terms = TitleTerms(base_titles)
    base = TitleBase(base_terms, TermVectors.fit(base_terms, embeddings[:300]), embeddings[:300])
    first_titles = [title(rng, words) for _ in range(40)]
    first = np.ones(340, dtype=bool)
    first[rng.sample(range(300), 40)] = False
    _, before = extended(base, TitleTerms(first_titles), first, embeddings[:340])
    # The next state: 40 more rows, some of the first state's and the base's rows killed.
    later_titles = first_titles + [title(rng, words) for _ in range(40)]
    live = np.concatenate([first, np.ones(40, dtype=bool)])
    live[rng.sample(sorted(np.flatnonzero(live[:340])), 15)] = False

    summed: list[int] = []
    real = live_titles._summed

    def counting(base, title_terms, terms, live, embeddings):
        summed.append(len(terms))
        return real(base, title_terms, terms, live, embeddings)

    monkeypatch.setattr(live_titles, "_summed", counting)
    _, fresh = extended(base, TitleTerms(later_titles), live, embeddings)
    _, carried = extended(base, TitleTerms(later_titles), live, embeddings, (first, before))

    assert carried.index == fresh.index
    rows = np.array(sorted(fresh.index.values()))
    np.testing.assert_array_equal(carried.vectors[rows], fresh.vectors[rows])
    np.testing.assert_array_equal(carried.idf, fresh.idf)
    assert 0 < summed[1] < summed[0]  # fewer terms summed again: the rest carried over
