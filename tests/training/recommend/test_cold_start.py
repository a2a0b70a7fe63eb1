"""The cold-start path's parts: Platt scaling, the mapping of a cold logit onto the warm scale,
the served folder's pair of files, and the cold head scoring the cold products of a pool."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fusionrank.core.recommend.runtime import ColdStart, Recommender
from fusionrank.training.recommend.cold_start import platt
from tests.support import shop


def test_platt_recovers_the_logistic_curve_the_outcomes_were_drawn_from():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=200_000)
    bought = rng.random(len(scores)) < 1 / (1 + np.exp(-(1.5 * scores - 3.0)))
    alpha, beta = platt(scores, bought)
    assert alpha == pytest.approx(1.5, abs=0.05) and beta == pytest.approx(-3.0, abs=0.05)


def test_platt_needs_both_outcomes():
    with pytest.raises(ValueError, match="both outcomes"):
        platt(np.arange(5.0), np.zeros(5, bool))


def test_equal_probability_means_equal_score():
    """A cold logit mapped by ColdStart lands where a warm score of the same fitted purchase
    probability lies: σ(α_w·S + β_w) = σ(α_c·logit + β_c)."""
    warm, cold = (2.0, -1.0), (0.5, -4.0)
    mapped = ColdStart(cold[0] / warm[0], (cold[1] - warm[1]) / warm[0])
    for logit in (-3.0, 0.0, 2.5):
        score = mapped.score(np.array([logit]))[0]
        assert warm[0] * score + warm[1] == pytest.approx(cold[0] * logit + cold[1])


@pytest.fixture(scope="module")
def analytic(tmp_path_factory):
    return shop.analytic_artefacts(tmp_path_factory.mktemp("analytic"))


def test_cold_products_are_scored_by_the_cold_head_through_the_fit(analytic):
    """In the analytic shop the cold head's logit is the cosine similarity: every cold product
    of a pool scores ColdStart(2, −0.25) of it, every warm one the fused S."""
    recommender = Recommender.load(analytic)
    assert recommender.has_cold_head and recommender.cold.sum() > 0
    theme = [pid for pid in shop.product_ids() if shop.theme_of(pid) == 1][:2]
    shopper = recommender.shopper(theme, np.zeros(2, np.int64))
    pool = recommender.candidates(shopper)
    assert pool.cold.any() and (~pool.cold).any()
    similarity = recommender.embeddings[pool.rows] @ shopper.vector
    np.testing.assert_allclose(recommender.scores(pool)[pool.cold],
                               2.0 * similarity[pool.cold] - 0.25, atol=1e-5)
    warm = ~pool.cold
    np.testing.assert_allclose(recommender.scores(pool)[warm],
                               pool.features[warm, 0] + 0.5 * similarity[warm], atol=1e-5)


@pytest.mark.parametrize("kept", ["cold_head.onnx", "cold_start.json"])
def test_a_folder_with_half_the_cold_start_path_is_refused(analytic, tmp_path, kept):
    folder = tmp_path / "serving"
    shutil.copytree(analytic, folder)
    other = {"cold_head.onnx": "cold_start.json", "cold_start.json": "cold_head.onnx"}[kept]
    (folder / other).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{kept} without {other}"):
        Recommender.load(folder)


def test_a_folder_without_the_cold_start_path_ranks_with_the_one_head(analytic, tmp_path):
    folder = tmp_path / "serving"
    shutil.copytree(analytic, folder)
    for name in ("cold_head.onnx", "cold_start.json"):
        (folder / name).unlink()
    recommender = Recommender.load(folder)
    assert not recommender.has_cold_head
    theme = [pid for pid in shop.product_ids() if shop.theme_of(pid) == 1][:2]
    pool = recommender.candidates(recommender.shopper(theme, np.zeros(2, np.int64)))
    assert not pool.cold.any()
    assert json.loads((analytic / "cold_start.json").read_text())["scale"] == 2.0


def test_the_exposure_delta_is_the_smallest_that_gives_cold_products_their_share(analytic):
    """With the analytic recommender (a cold product scores 2·cos − 0.25) and a calibrated
    offset far below, cold products take no slot; the fitted δ is the least (to the
    tolerance) at which they take the asked share of the top 5."""
    from fusionrank.training.recommend.cold_start import (
        DELTA_TOLERANCE,
        cold_slot_share,
        exposure_delta,
    )

    recommender = Recommender.load(analytic)
    pools = {}
    for theme in range(4):
        ids = [pid for pid in shop.product_ids() if shop.theme_of(pid) == theme][:3]
        pools[theme] = recommender.candidates(recommender.shopper(ids, np.zeros(3, np.int64)))
    low = ColdStart(2.0, -10.0)
    assert cold_slot_share(recommender, pools, low, 5) == 0.0
    delta = exposure_delta(recommender, pools, low, 0.2, 5)
    assert cold_slot_share(recommender, pools, ColdStart(2.0, -10.0 + delta), 5) >= 0.2
    assert cold_slot_share(recommender, pools,
                           ColdStart(2.0, -10.0 + delta - 2 * DELTA_TOLERANCE), 5) < 0.2
    assert exposure_delta(recommender, pools, ColdStart(2.0, 10.0), 0.2, 5) == 0.0
