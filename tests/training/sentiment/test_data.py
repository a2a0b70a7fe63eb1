"""Labelling, text and split rules of the review sentiment data (no model involved)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusionrank.training.sentiment.data import (
    ReviewDataError,
    label_of_rating,
    load_reviews,
    review_text,
    split_of,
)
from fusionrank.training.sentiment.model import class_weights
from tests.support.reviews import review_rows


def test_three_classes_from_the_star_rating():
    assert [label_of_rating(r) for r in (1, 2, 3, 4, 5)] == [0, 0, 1, 2, 2]
    with pytest.raises(ValueError, match=r"not 1\.\.5"):
        label_of_rating(0)


def test_text_joins_title_and_body():
    assert review_text("Great", "Fits well.") == "Great. Fits well."
    assert review_text("Great!", "Fits well.") == "Great! Fits well."
    assert review_text(None, " Fits well. ") == "Fits well."
    assert review_text("Great", float("nan")) == "Great"
    assert review_text(None, "   ") == ""


def test_split_is_by_review_id_and_deterministic():
    ids = [str(i) for i in range(5000)]
    first = [split_of(i) for i in ids]
    assert first == [split_of(i) for i in ids]  # no hidden state, no salted hash
    shares = pd.Series(first).value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.8, abs=0.03)
    assert shares["dev"] == pytest.approx(0.1, abs=0.02)
    assert shares["test"] == pytest.approx(0.1, abs=0.02)
    # md5 of the id's text: fixed values anyone can recompute.
    assert split_of(0) == split_of("0")


def test_load_labels_splits_and_counts_skips(reviews_file):
    reviews = load_reviews(reviews_file)
    assert reviews.rows_read == len(review_rows())
    assert reviews.skipped == {"without title or text": 2}
    frame = reviews.frame
    assert len(frame) == reviews.rows_read - 2
    assert frame.review_id.is_unique  # so no review is in two splits
    assert set(frame.split) == {"train", "dev", "test"}
    assert (frame.split == frame.review_id.map(split_of)).all()
    assert (frame.label == frame.rating.map(label_of_rating)).all()
    assert "skipped 2 without title or text" in reviews.summary()


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"review_id": [1], "Title": ["x"], "Rating": [5]}).to_csv(path, index=False)
    with pytest.raises(ReviewDataError, match="Clothing ID, Review Text"):
        load_reviews(path)


def test_minority_classes_weigh_more():
    labels = [2] * 80 + [1] * 12 + [0] * 8
    weights = class_weights(labels, power=0.5)
    assert weights[0] > weights[1] > weights[2]
    assert weights.mean() == pytest.approx(1.0)
    assert np.allclose(class_weights(labels, power=0.0), 1.0)


def test_real_dataset_split_has_every_class(shared_datasets):
    reviews = load_reviews(shared_datasets / "reviews" / "womens_clothing_reviews.csv.gz")
    for split in ("train", "dev", "test"):
        assert min(reviews.class_counts(split).values()) > 100
