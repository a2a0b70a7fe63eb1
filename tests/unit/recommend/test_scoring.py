"""Shopper vectors, recency weighting, candidates and features: the recommender's runtime
(tests/training/recommend/test_head.py trains its feedback head)."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrank.core.recommend.runtime import (
    FEATURE_NAMES,
    SECONDS_PER_DAY,
    Affinity,
    ProductStats,
    RecommenderConfig,
    build_shopper,
    candidate_features,
    candidate_rows,
    days_before,
    recency_weights,
)


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


EMBEDDINGS = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1), unit(1, 1, 0)])


def stats(n: int = 4) -> ProductStats:
    buyers = np.arange(n, 0, -1, dtype=np.float64)  # row 0 most popular
    return ProductStats(buyers, buyers / 2, buyers / 4, buyers * 3, buyers / 3,
                        np.zeros(n))


def test_recency_weight_halves_every_half_life():
    weights = recency_weights(np.array([0.0, 30.0, 60.0, -5.0]), half_life_days=30.0)
    assert weights.tolist() == pytest.approx([1.0, 0.5, 0.25, 1.0])


def test_days_before_treats_unknown_and_future_times_as_the_reference_time():
    reference = 1_300_000_000
    times = np.array([reference - 2 * int(SECONDS_PER_DAY), 0, -1, reference + 999])
    assert days_before(times, reference).tolist() == pytest.approx([2.0, 0.0, 0.0, 0.0])


def test_recent_purchases_dominate_the_shopper_vector():
    # Product 0 bought 120 days ago, product 1 today: the shopper leans to product 1.
    shopper = build_shopper(np.array([0, 1]), np.array([120.0, 0.0]), EMBEDDINGS, 30.0)
    assert np.linalg.norm(shopper.vector) == pytest.approx(1.0)
    assert shopper.vector @ EMBEDDINGS[1] > 0.99 > shopper.vector @ EMBEDDINGS[0]
    # Equal ages: the mean direction.
    even = build_shopper(np.array([0, 1]), np.array([5.0, 5.0]), EMBEDDINGS, 30.0)
    assert even.vector @ EMBEDDINGS[0] == pytest.approx(even.vector @ EMBEDDINGS[1])


def test_shopper_counts_repeats_and_keeps_the_latest_purchase():
    shopper = build_shopper(np.array([2, 0, 2, 2]), np.array([40.0, 3.0, 10.0, 25.0]),
                            EMBEDDINGS, 30.0, unknown=2)
    assert shopper.rows.tolist() == [0, 2]
    assert shopper.counts.tolist() == [1, 3]
    assert shopper.days.tolist() == [3.0, 10.0]
    assert shopper.unknown == 2 and not shopper.is_cold


def test_an_empty_history_is_a_cold_shopper_with_a_zero_vector():
    shopper = build_shopper(np.array([], np.int64), np.array([]), EMBEDDINGS, 30.0)
    assert shopper.is_cold and not shopper.vector.any()


def test_candidates_hold_the_bought_popular_and_nearest_products():
    config = RecommenderConfig(reference_time=0, popular_pool=1, nearest_pool=1,
                               copurchase_pool=1)
    shopper = build_shopper(np.array([2]), np.array([1.0]), EMBEDDINGS, 30.0)
    affinity = Affinity(EMBEDDINGS @ unit(1, 1, 0.1), np.array([0, 0, 0, 0.5], np.float32),
                        np.zeros(4, np.float32))
    rows = candidate_rows(shopper, affinity, stats().popularity_order(), config)
    assert rows.tolist() == [0, 2, 3]  # bought 2, popular 0, nearest 3, co-purchased 3
    # Excluding purchases must still leave `need` candidates: more popular ones come in.
    assert len(candidate_rows(shopper, affinity, stats().popularity_order(), config, need=3)) == 4


def test_features_describe_the_shoppers_own_purchases():
    shopper = build_shopper(np.array([1, 1, 2]), np.array([30.0, 60.0, 0.0]), EMBEDDINGS, 30.0)
    affinity = Affinity(EMBEDDINGS @ shopper.vector, np.zeros(4, np.float32),
                        np.zeros(4, np.float32))
    features = candidate_features(shopper, np.array([0, 1, 2]), affinity, stats(), 30.0)
    column = {name: features[:, i] for i, name in enumerate(FEATURE_NAMES)}
    assert features.shape == (3, len(FEATURE_NAMES)) and features.dtype == np.float32
    assert column["bought"].tolist() == [0, 1, 1]
    assert column["bought_log_count"] == pytest.approx(np.log1p([0, 2, 1]))
    assert column["bought_recency"] == pytest.approx([0.0, 0.5, 1.0])
    assert column["bought_share"] == pytest.approx([0, 2 / 3, 1 / 3])
