"""Judgement loading, the split by query and the hard-negative guards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusionrank.core.search.lexical import LexicalIndex
from fusionrank.core.search.title_terms import TitleTerms
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
