"""Product-level sentiment: per-review scores aggregated with shrinkage toward the catalogue
mean, written as a feature file and read back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusionrank.training.sentiment.products import (
    FEATURE_COLUMNS,
    aggregate_product_sentiment,
    build_product_sentiment,
    load_product_sentiment,
    review_scores,
)


def test_review_score_is_positive_minus_negative():
    probabilities = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(review_scores(probabilities), [0.6, -0.5, 0.0])


def test_few_reviews_get_little_weight():
    # "A": one perfect review; "B": twenty perfect reviews; "C": twenty poor ones.
    ids = ["A"] + ["B"] * 20 + ["C"] * 20
    scores = np.array([1.0] + [1.0] * 20 + [-0.5] * 20)
    table, prior = aggregate_product_sentiment(ids, scores, prior_weight=10)
    assert prior == pytest.approx(scores.mean())
    by_id = table.set_index("product_id")
    assert list(table.columns) == list(FEATURE_COLUMNS)
    assert by_id.review_count.to_dict() == {"A": 1, "B": 20, "C": 20}
    assert by_id.sentiment_score["A"] == pytest.approx((1.0 + 10 * prior) / 11, abs=1e-6)
    # B's mean equals A's, yet B scores higher: more evidence, less shrinkage.
    assert by_id.sentiment_score["B"] > by_id.sentiment_score["A"] > prior
    assert by_id.sentiment_score["C"] < prior
    assert list(table.product_id) == ["B", "A", "C"]  # best first


def test_no_prior_means_plain_average():
    table, _ = aggregate_product_sentiment(["A", "A"], np.array([0.2, 0.4]), prior_weight=0)
    assert table.sentiment_score[0] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="prior_weight"):
        aggregate_product_sentiment(["A"], np.array([0.2]), prior_weight=-1)


def test_build_writes_and_loads_the_feature(sentiment_export, reviews_file, tmp_path):
    out, _ = sentiment_export
    report = build_product_sentiment(out / "onnx", tmp_path, reviews_file, prior_weight=5,
                                     threads=1, progress=False)
    table = pd.read_csv(report.path, dtype={"product_id": str})
    reviews = pd.read_csv(reviews_file)
    assert report.reviews == table.review_count.sum() == len(reviews) - 2  # two without text
    assert set(table.product_id) == {str(i) for i in reviews["Clothing ID"]}
    assert report.skipped == {"without title or text": 2}
    feature = load_product_sentiment(tmp_path)
    first = table.product_id[0]
    assert feature.score(first) == pytest.approx(table.sentiment_score[0])
    assert feature.score("no-such-product") == pytest.approx(report.prior_mean)
    assert feature.review_count("no-such-product") == 0
