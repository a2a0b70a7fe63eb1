"""The recommender's feedback head trained on the tiny shop: it learns the shop's themes, beats
popularity on the held-out window, and its fusion weights are fitted on validation."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import shop


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny shop's recommender with a trained head (tests that use it are slow)."""
    return shop.trained_artefacts(tmp_path_factory.mktemp("recommender"))


@pytest.mark.slow
def test_the_head_learns_the_shops_themes(trained):
    recommender = shop.load(trained)
    # A new shopper who bought two theme-2 products: theme 2 should fill the top of the list.
    history = [pid for pid in shop.product_ids() if shop.theme_of(pid) == 2][:2]
    shopper = recommender.shopper(history, np.zeros(len(history), np.int64))
    rows, scores = recommender.recommend(shopper, k=4)
    top = [recommender.product_ids[r] for r in rows]
    assert np.all(np.diff(scores) <= 1e-6)
    assert sum(shop.theme_of(pid) == 2 for pid in top) >= 3


@pytest.mark.slow
def test_the_trained_recommender_beats_popularity_on_the_held_out_window(trained):
    from fusionrank.training.recommend.evaluate import (
        Slices,
        metrics,
        model_ranking,
        popularity_ranking,
        returning_targets,
    )
    from fusionrank.training.recommend.head import window_shoppers
    from fusionrank.training.recommend.purchases import clean_purchases, last_window, split

    recommender = shop.load(trained)
    purchases, _ = clean_purchases(shop.transactions())
    before, after = split(purchases, last_window(purchases, days=14))
    targets = returning_targets(before, after)
    shoppers = window_shoppers(recommender, before, sorted(targets))
    none = Slices(set(), set(), set())
    ours = metrics(model_ranking(recommender, shoppers, 50), targets, 24, none)
    popular = metrics(popularity_ranking(recommender, list(shoppers), 50), targets, 24, none)
    assert ours["recall@5"] > popular["recall@5"] + 0.2
    assert 0 < ours["coverage@20"] <= 1


@pytest.mark.slow
def test_fusion_weights_are_fitted_on_validation_and_recorded(trained):
    from fusionrank.training.recommend.evaluate import SIMILARITY_GRID, fit_fusion_weights
    from fusionrank.training.recommend.head import returning_targets, window_shoppers
    from fusionrank.training.recommend.purchases import clean_purchases, last_window, split

    recommender = shop.load(trained)
    purchases, _ = clean_purchases(shop.transactions())
    validation = last_window(purchases, days=14).shifted(14)
    before, after = split(purchases, validation)
    targets = returning_targets(before, after)
    weights, grid = fit_fusion_weights(recommender, window_shoppers(recommender, before,
                                                                    sorted(targets)), targets)
    assert set(grid) == {str(w) for w in SIMILARITY_GRID}
    assert weights.weights["feedback"] == 1.0
    assert "validation" in weights.provenance
