"""The feedback head: networks and boosted trees, each stopped on dev, blended by a share fitted
on dev, and exported as one ONNX graph whose every output equals the trained model's."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
from skl2onnx import to_onnx
from sklearn.ensemble import HistGradientBoostingRegressor

from fusionrank.core.search.features import HeadInputs
from fusionrank.core.search.runtime import HEAD_INPUTS as INPUTS
from fusionrank.core.search.runtime import OnnxFeedbackHead
from fusionrank.export.search.feedback_head import OUTPUTS, export_feedback_head
from fusionrank.training.search.feedback import (
    FeedbackConfig,
    PairSet,
    blend,
    float32_thresholds,
    rmse,
    train_feedback_model,
)

DIM, FEATURES = 8, 5


def synthetic_pairs(n: int, seed: int) -> PairSet:
    """Grades that follow the features (a step and a slope) plus rater noise."""
    rng = np.random.default_rng(seed)
    features = rng.uniform(-1, 1, size=(n, FEATURES)).astype(np.float32)
    signal = 2.0 + 0.5 * np.sign(features[:, 0]) + 0.3 * features[:, 1]
    grade = np.clip(signal + rng.normal(0, 0.2, size=n), 1, 3).astype(np.float32)
    vectors = rng.normal(size=(2, n, DIM)).astype(np.float32)
    return PairSet(vectors[0], vectors[1], features, grade)


def test_feedback_model_learns_blends_on_dev_and_exports_every_output(tmp_path):
    train, dev = synthetic_pairs(1500, 0), synthetic_pairs(400, 1)
    config = FeedbackConfig(max_epochs=6, ensemble=2, tree_rounds=60)
    model, fitted = train_feedback_model(train, dev, config)

    mean = rmse(np.full_like(dev.grade, train.grade.mean()), dev.grade)
    assert fitted["dev_rmse"]["trees"] < 0.5 * mean  # the trees find the step
    assert fitted["dev_rmse"]["network"] < mean
    # The share is the best of its grid on dev, so the blend is no worse than either part.
    assert fitted["dev_rmse"]["grade"] <= min(fitted["dev_rmse"]["network"],
                                              fitted["dev_rmse"]["trees"]) + 1e-6
    assert 0.0 <= model.tree_share <= 1.0 and 1 <= fitted["tree_rounds"] <= 60
    assert model.trees.n_iter_ == fitted["tree_rounds"]
    assert len(fitted["network_histories"]) == 2
    parts = model.predict_parts(dev.query, dev.product, dev.features)
    np.testing.assert_allclose(parts["grade"], blend(parts["network"], parts["trees"],
                                                     model.tree_share), atol=1e-6)
    assert abs(rmse(parts["grade"], dev.grade) - fitted["dev_rmse"]["grade"]) < 1e-5

    path = tmp_path / "feedback_head.onnx"
    check = (dev.query[:64], dev.product[:64], dev.features[:64])
    assert export_feedback_head(model, path, check) < 1e-4
    graph = onnx.load(path)
    assert [i.name for i in graph.graph.input] == list(INPUTS)
    assert [o.name for o in graph.graph.output] == list(OUTPUTS)
    # Served as the server calls it: 8 queries with 8 candidates each, every query's vector
    # given once; equal to the trained model fed one query row per pair.
    owner = np.repeat(np.arange(8), 8)
    inputs = HeadInputs(dev.query[:8], owner, dev.product[:64], dev.features[:64])
    expected = model.predict_parts(dev.query[:8][owner], dev.product[:64], dev.features[:64])
    head = OnnxFeedbackHead(path, threads=1)
    for name in OUTPUTS:
        np.testing.assert_allclose(head(inputs, name), expected[name], atol=1e-4)


def test_tree_thresholds_split_float32_features_as_onnx_does():
    # Two adjacent float32 values with different grades: scikit-learn splits between them at
    # their float64 midpoint, which rounds (half to even) up to the larger one for this pair.
    low = next(v for v in np.arange(0.3, 0.31, 1e-7, dtype=np.float32)
               if np.float32((float(v) + float(np.nextafter(v, np.float32(1)))) / 2)
               == np.nextafter(v, np.float32(1)))
    high = np.nextafter(low, np.float32(1))
    features = np.repeat(np.array([[low], [high]], dtype=np.float32), 20, axis=0)
    grades = np.repeat([1.0, 3.0], 20)
    trees = HistGradientBoostingRegressor(max_iter=1, learning_rate=1.0, min_samples_leaf=1)
    trees.fit(features, grades)
    before = trees.predict(features)
    assert np.ptp(before) > 1.0  # the split separates them

    def onnx_predict(model):
        graph = to_onnx(model, features[:1], target_opset={"": 17, "ai.onnx.ml": 3})
        session = onnxruntime.InferenceSession(graph.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
        return session.run(None, {graph.graph.input[0].name: features})[0].ravel()

    assert np.abs(onnx_predict(trees) - before).max() > 1.0  # float32 rounding flips `high`
    float32_thresholds(trees)
    np.testing.assert_array_equal(trees.predict(features), before)
    np.testing.assert_allclose(onnx_predict(trees), before, atol=1e-6)
