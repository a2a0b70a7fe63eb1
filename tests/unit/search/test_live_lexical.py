"""BM25 over a base and delta segments (core/search/live_lexical.py) equals a BM25 index built
afresh over the live titles, after any sequence of change sets (issue 24's equivalence)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from fusionrank.core.live.changes import parse_changes
from fusionrank.core.live.rows import CatalogueRows
from fusionrank.core.search import live_lexical
from fusionrank.core.search.lexical import LexicalIndex
from fusionrank.core.search.live_lexical import LiveLexical, TermCounts

WORDS = ["red", "blue", "steel", "oak", "cordless", "drill", "saw", "kettle", "lamp", "shade",
         "ceiling", "fan", "wool", "scarf", "garden", "hose", "brass", "tap", "white", "paint"]


def title(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))


@pytest.mark.parametrize("cached", [1_000_000, 40], ids=["cached", "cache-full"])
def test_bm25_over_segments_equals_a_fresh_index_of_the_live_titles(cached, monkeypatch):
    # A state computes a term's scores once (while its cache has room): the same answers
    # whether a query's terms were scored before or not.
    monkeypatch.setattr(live_lexical, "CACHED_POSTINGS", cached)
    rng = random.Random(7)
    catalogue = {f"P{i}": title(rng) for i in range(300)}
    rows = CatalogueRows.of_base(list(catalogue))
    segments = [TermCounts.of_titles(list(catalogue.values()))]
    queries = [["red", "kettle"], ["cordless", "drill", "drill"], ["oak"], ["nothing"],
               ["white", "paint", "garden"]]
    for step in range(12):
        lines = []
        for product_id in rng.sample(list(catalogue), 15) + [f"N{step}-{j}" for j in range(4)]:
            if product_id in catalogue and rng.random() < 0.3:
                lines.append(json.dumps({"op": "delete", "product_id": product_id}))
                del catalogue[product_id]
            else:
                catalogue[product_id] = title(rng)
                lines.append(json.dumps({"op": "upsert", "product": {
                    "product_id": product_id, "title": catalogue[product_id]}}))
        before = rows.rows
        rows, done = rows.apply(parse_changes(lines))
        segments.append(TermCounts.of_titles([catalogue[i] for i in done.added], before))
        live = LiveLexical(segments, rows.live)
        # The segments merged into one (as a search process carries them from state to state)
        merged = LiveLexical([segments[0], TermCounts(
            300, np.zeros(0, dtype=np.float32), {}).extended(segments[1:])], rows.live)
        fresh_ids = list(catalogue)
        fresh = LexicalIndex.build([catalogue[i] for i in fresh_ids])
        served_rows = np.array([rows.row_of(i) for i in fresh_ids])
        for terms in queries:
            scores = live.scores(terms)
            np.testing.assert_array_equal(merged.scores(terms), scores)
            np.testing.assert_array_equal(live.scores(terms), scores)  # scored before
            expected = fresh.scores(terms)
            np.testing.assert_allclose(scores[served_rows], expected, rtol=0, atol=1e-5)
            assert not scores[~rows.live].any()  # replaced and deleted rows never score
            # and so the same products come first, ties aside
            top = np.argsort(-expected, kind="stable")[:5]
            assert set(np.round(scores[served_rows[top]], 4)) == set(np.round(expected[top], 4))


def test_segments_and_a_live_mask_of_other_lengths_are_refused():
    segment = TermCounts.of_titles(["red kettle", "blue lamp"])
    with pytest.raises(ValueError, match="segments hold 2 rows, the live mask 3"):
        LiveLexical([segment], np.ones(3, dtype=bool))


def test_the_best_rows_are_live_rows_even_where_few_titles_match():
    rows = CatalogueRows.of_base(["A", "B", "C", "D"])
    titles = ["red kettle", "blue lamp", "red lamp", "oak shelf"]
    rows, _ = rows.apply(parse_changes([
        json.dumps({"op": "delete", "product_id": "A"}),
        json.dumps({"op": "upsert", "product": {"product_id": "B", "title": "red lamp"}})]))
    live = LiveLexical([TermCounts.of_titles(titles),
                        TermCounts.of_titles(["red lamp"], first_row=4)], rows.live)
    best, scores = live.top(["red"], 10)  # two rows match "red"; the rest are zero filler
    assert best.tolist() == [2, 4, 3] and scores[2] == 0  # live rows only: C, B's new row, D
    assert live.top(["nothing"], 2)[0].tolist() == [2, 3]


def test_a_saved_index_s_term_counts_are_a_base_segment(tmp_path):
    rng = random.Random(3)
    titles = [title(rng) for _ in range(120)] + ["", "!!"]  # titles without terms too
    LexicalIndex.build(titles).save(tmp_path / "lexical.npz")
    saved = LexicalIndex.load(tmp_path / "lexical.npz")
    base = TermCounts.of_index(saved)
    fresh = TermCounts.of_titles(titles)
    np.testing.assert_array_equal(base.lengths, fresh.lengths)
    assert base.postings.keys() == fresh.postings.keys()
    for term, (rows, counts) in fresh.postings.items():
        np.testing.assert_array_equal(base.postings[term][0], rows)
        np.testing.assert_array_equal(base.postings[term][1], counts)
    live = LiveLexical([base], np.ones(len(titles), dtype=bool))
    for terms in (["red", "kettle"], ["oak", "oak"], ["nothing"]):
        np.testing.assert_allclose(live.scores(terms), saved.scores(terms), rtol=0, atol=1e-5)


def test_the_live_speller_corrects_as_a_speller_built_over_the_live_titles():
    """A word only a new title holds is known (never corrected to a base word); a word no live
    title holds any more is corrected; a misspelling goes to the most frequent live term, new
    ones included, as a speller rebuilt over the live titles would."""
    from fusionrank.core.search.live_view import LiveBM25

    rng = random.Random(3)
    words = [*WORDS, "lantern", "lanterns", "planter", "hammer", "hammock"]
    catalogue = {f"P{i}": " ".join(rng.choice(words) for _ in range(rng.randint(1, 5)))
                 for i in range(200)}
    catalogue["ONLY-HAMMOCK"] = "hammock"
    catalogue = {i: t.replace("hammock", "hammer") if i != "ONLY-HAMMOCK" else t
                 for i, t in catalogue.items()}
    base = LexicalIndex.build(list(catalogue.values()))
    rows = CatalogueRows.of_base(list(catalogue))
    segments = [TermCounts.of_titles(list(catalogue.values()))]
    lines = [json.dumps({"op": "delete", "product_id": "ONLY-HAMMOCK"})]
    upserts = {f"NEW-{j}": "zorbex lampshade planters hamper" for j in range(60)}
    upserts |= {f"P{j}": "lanterns lanterns" for j in range(40)}  # "lanterns" now the commoner
    for product_id, text in upserts.items():
        catalogue[product_id] = text
        lines.append(json.dumps({"op": "upsert", "product": {"product_id": product_id,
                                                             "title": text}}))
    del catalogue["ONLY-HAMMOCK"]
    before = rows.rows
    rows, done = rows.apply(parse_changes(lines))
    segments.append(TermCounts.of_titles([catalogue[i] for i in done.added], before))
    served = LiveBM25(base, LiveLexical(segments, rows.live))
    rebuilt = LexicalIndex.build(list(catalogue.values()))

    probes = ["zorbex", "zorbx", "lampshade", "lampshad", "planters", "plantrs", "hammock",
              "hamock", "lanternz", "lantrns", "kettle", "ketle", "qqqq", "oak", "100kettle",
              "hamper", "hampers"]
    assert served.speller.correct(probes) == rebuilt.speller.correct(probes)
    assert base.speller.correct(["hamper"]) == ["hammer"]  # what the base alone would read
    assert served.query_terms("Hamper lampshad") == ["hamper", "lampshade"]
