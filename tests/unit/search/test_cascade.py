"""The ranking cascade (fusionrank.core.fusion.Cascade): the first stage picks each pool's
head, S orders the head, the rest follow in the first stage's order; a depth that covers the
pool is today's one-stage ranking."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusionrank.core.fusion import Cascade, FusionWeights

WEIGHTS = {"similarity": 0.5, "feedback": 0.3, "lexical": 0.2}
FIRST = {"similarity": 0.6, "lexical": 0.4}


def tensors(similarity, lexical, feedback) -> dict[str, np.ndarray]:
    return {"SIMILARITY": np.asarray(similarity, np.float32),
            "LEXICAL": np.asarray(lexical, np.float32),
            "FEEDBACK": np.asarray(feedback, np.float32)}


def test_the_head_is_ordered_by_s_and_the_rest_by_the_first_stage():
    candidates = np.array([[10, 11, 12, 13, 14]])
    # First stage 0.6·s + 0.4·lexical: 0.9, 0.7, 0.5, 0.3, 0.1 → head (depth 3) = 10, 11, 12.
    # S over the head: 10 → 0.5·0.9 + 0.3·1 + 0.2·0.9 = 0.93, 11 → 0.35 + 0.9 + 0.14 = 1.39,
    # 12 → 0.25 + 0.6 + 0.1 = 0.95. Product 14's feedback would put it first in one stage.
    pool = tensors([[0.9, 0.7, 0.5, 0.3, 0.1]], [[0.9, 0.7, 0.5, 0.3, 0.1]],
                   [[1.0, 3.0, 2.0, np.nan, 99.0]])
    weights = FusionWeights(WEIGHTS, cascade=Cascade(3, FIRST))
    order, scores = weights.ranked_positions(candidates, pool, 5)
    assert np.take_along_axis(candidates, order, axis=1).tolist() == [[11, 12, 10, 13, 14]]
    np.testing.assert_allclose(scores, [[1.39, 0.95, 0.93, 0.3, 0.1]], atol=1e-6)


def test_first_stage_ties_are_broken_by_catalogue_order():
    candidates = np.array([[7, 3, 5]])
    pool = tensors([[0.5, 0.5, 0.5]], [[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]])
    order, _ = FusionWeights(WEIGHTS, cascade=Cascade(1, FIRST)).ranked_positions(
        candidates, pool, 3)
    assert np.take_along_axis(candidates, order, axis=1).tolist() == [[3, 5, 7]]


def test_a_depth_that_covers_the_pool_is_todays_ranking():
    rng = np.random.default_rng(0)
    candidates = np.stack([rng.permutation(1000)[:40] for _ in range(6)])
    pool = tensors(rng.uniform(size=(6, 40)), rng.uniform(size=(6, 40)),
                   rng.uniform(1, 3, size=(6, 40)))
    today = FusionWeights(WEIGHTS).ranked_positions(candidates, pool, 20)
    for depth in (40, 41, 500):
        weights = FusionWeights(WEIGHTS, cascade=Cascade(depth, FIRST))
        assert not weights.cascades(40) and weights.head(candidates, pool) is None
        got = weights.ranked_positions(candidates, pool, 20)
        np.testing.assert_array_equal(got[0], today[0])
        np.testing.assert_array_equal(got[1], today[1])
    assert not FusionWeights(WEIGHTS).cascades(40)
    assert FusionWeights(WEIGHTS, cascade=Cascade(39, FIRST)).cascades(40)


def test_feedback_below_the_head_is_never_read():
    rng = np.random.default_rng(1)
    candidates = np.stack([rng.permutation(500)[:30] for _ in range(4)])
    pool = tensors(rng.uniform(size=(4, 30)), rng.uniform(size=(4, 30)),
                   rng.uniform(1, 3, size=(4, 30)))
    weights = FusionWeights(WEIGHTS, cascade=Cascade(8, FIRST))
    head = weights.head(candidates, pool)
    assert head.shape == (4, 8)
    # The head is each query's 8 best first-stage scores, computed here without the library.
    first = 0.6 * pool["SIMILARITY"].astype(np.float64) + 0.4 * pool["LEXICAL"]
    for q in range(4):
        assert set(head[q]) == set(np.argsort(-first[q])[:8])
    hidden = dict(pool, FEEDBACK=np.full((4, 30), np.nan, np.float32))
    np.put_along_axis(hidden["FEEDBACK"], head, np.take_along_axis(pool["FEEDBACK"], head, 1), 1)
    full = weights.ranked_positions(candidates, pool, 30)
    partial = weights.ranked_positions(candidates, hidden, 30)
    np.testing.assert_array_equal(full[0], partial[0])
    np.testing.assert_array_equal(full[1], partial[1])
    assert np.isfinite(partial[1]).all()


@pytest.mark.parametrize("depth", [0, -3, True, "8", 2.5])
def test_a_bad_depth_is_refused(depth):
    with pytest.raises(ValueError, match="cascade depth must be a positive integer"):
        Cascade(depth, FIRST)


def test_a_first_stage_cannot_weigh_what_it_orders_for():
    with pytest.raises(ValueError, match="cannot weigh it"):
        Cascade(8, {"similarity": 0.5, "feedback": 0.5})
    with pytest.raises(ValueError, match=r"unknown first-stage signal\(s\) \['clicks'\]"):
        Cascade(8, {"clicks": 1.0})
    with pytest.raises(ValueError, match="needs at least one weighted signal"):
        Cascade(8, {})
    with pytest.raises(ValueError, match=r"weighs \['lexical'\], which the ranking does not fuse"):
        FusionWeights({"similarity": 0.5, "feedback": 0.5}, cascade=Cascade(8, FIRST))


def test_the_weights_file_keeps_the_cascade_and_a_one_stage_file_reads_as_before(tmp_path):
    cascade = FusionWeights(WEIGHTS, "fitted", Cascade(32, FIRST))
    cascade.save(tmp_path / "cascade.json")
    assert FusionWeights.load(tmp_path / "cascade.json") == cascade
    FusionWeights(WEIGHTS, "fitted").save(tmp_path / "one.json")
    assert set(json.loads((tmp_path / "one.json").read_text())) == {"weights", "provenance"}
    assert FusionWeights.load(tmp_path / "one.json").cascade is None
