"""Fine-tuning mechanics on a tiny random BERT and a tiny reviews file: loss falls, the cached
bottom + trained top equal the whole model, the star targets, calibration and the dev-chosen
decision, checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from fusionrank.core.encoding import TextTokenizer
from fusionrank.core.sentiment.runtime import decide
from fusionrank.training.sentiment.data import load_reviews
from fusionrank.training.sentiment.model import (
    SentimentConfig,
    bottom_states,
    class_probabilities,
    fit_temperature,
    load_classifier,
    log_loss,
    macro_f1,
    new_classifier,
    predict_logits,
    predict_logits_from_states,
    star_targets,
    train_sentiment,
    tune_logit_offsets,
    weighted_soft_cross_entropy,
)


@pytest.fixture(scope="module")
def trained(reviews_file, tiny_model_dir, tmp_path_factory):
    torch.set_num_threads(1)
    config = SentimentConfig(model_dir=str(tiny_model_dir), freeze_layers=1, epochs=30,
                             batch_size=16, encoder_lr=3e-3, head_lr=5e-2, max_steps=60,
                             evals_per_epoch=1, seed=7)
    out = tmp_path_factory.mktemp("sentiment") / "checkpoint"
    return train_sentiment(load_reviews(reviews_file), config, out, progress=False)


def test_loss_falls(trained):
    losses = trained.manifest.loss_history
    assert len(losses) == trained.manifest.steps == 60
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])


def test_imbalance_handling_and_calibration_are_recorded(trained, reviews_file):
    """The manifest's class weights, temperature, offsets and dev scores, recomputed here: the
    weights from the train split's class counts, both scores by scikit-learn from the saved
    model's dev logits (temperature folded into its head) with and without the offsets, and
    the log-loss the temperature lowered."""
    manifest = trained.manifest
    reviews = load_reviews(reviews_file)
    counts = np.bincount(reviews.split("train").label, minlength=3)
    assert counts.all()  # every class present: (1 / frequency) ** 0.5, scaled to mean 1
    weights = (counts.sum() / counts) ** 0.5
    np.testing.assert_allclose(manifest.class_weights, weights / weights.mean(), atol=5e-5)
    assert len(manifest.decision_offsets) == 3 and manifest.decision_offsets[0] == 0.0

    model, _ = load_classifier(trained.checkpoint)
    tokenizer = TextTokenizer(trained.checkpoint / "encoder" / "tokenizer.json",
                              manifest.max_tokens)
    dev = reviews.split("dev")
    calibrated = predict_logits(model, tokenizer.token_ids(dev.text.tolist()))
    assert calibrated.shape == (len(dev), 5)
    raw = calibrated * manifest.temperature
    probabilities = class_probabilities(calibrated)
    for predictions, recorded in (
            (decide(probabilities, manifest.decision_offsets), manifest.dev_macro_f1),
            (class_probabilities(raw).argmax(1), manifest.dev_macro_f1_untuned)):
        assert f1_score(dev.label, predictions, labels=[0, 1, 2], average="macro",
                        zero_division=0.0) == pytest.approx(recorded, abs=1e-4)
    assert log_loss(probabilities, dev.label.to_numpy()) == pytest.approx(
        manifest.dev_log_loss["after"], abs=1e-4)
    assert manifest.dev_log_loss["after"] <= manifest.dev_log_loss["before"]


def test_checkpoint_round_trip(trained, reviews_file):
    model, manifest = load_classifier(trained.checkpoint)
    assert manifest == trained.manifest
    tokenizer = TextTokenizer(trained.checkpoint / "encoder" / "tokenizer.json",
                              manifest.max_tokens)
    dev = load_reviews(reviews_file).split("dev")
    logits = predict_logits(model, tokenizer.token_ids(dev.text.tolist()))
    # The saved model with the recorded decision scores dev as training reported.
    predictions = decide(class_probabilities(logits), manifest.decision_offsets)
    assert macro_f1(dev.label.to_numpy(), predictions) == pytest.approx(
        manifest.dev_macro_f1, abs=1e-4)


def test_bottom_then_top_equals_the_whole_model(tiny_model_dir):
    model = new_classifier(tiny_model_dir).eval()
    tokenizer = TextTokenizer(tiny_model_dir / "tokenizer.json", 32)
    ids = tokenizer.token_ids(["short", "a much longer review about a dress that fits well",
                               "okay"])
    for frozen in (0, 1, 2):
        states = bottom_states(model, ids, frozen)
        np.testing.assert_allclose(predict_logits_from_states(model, states, frozen),
                                   predict_logits(model, ids), atol=1e-5)


def test_offsets_raise_macro_f1_of_a_biased_model():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 80)
    logits = np.zeros((100, 3))
    logits[np.arange(100), labels] = 1.0
    logits[:, 2] += 1.5  # a model that over-predicts the majority class
    assert macro_f1(labels, logits.argmax(1)) < 0.5
    offsets, score = tune_logit_offsets(logits, labels)
    assert score == pytest.approx(1.0)
    assert offsets[0] == 0.0 and offsets[2] <= -0.5


def test_freeze_layers_out_of_range(tiny_model_dir, reviews_file):
    config = SentimentConfig(model_dir=str(tiny_model_dir), freeze_layers=3, max_steps=1)
    with pytest.raises(ValueError, match=r"freeze_layers must be 0\.\.2"):
        train_sentiment(load_reviews(reviews_file), config, "/nonexistent", progress=False)


def test_star_targets_share_the_smoothing_with_the_neighbours():
    targets = star_targets(np.array([1, 3, 5]), smoothing=0.2)
    np.testing.assert_allclose(targets, [[0.8, 0.2, 0, 0, 0],
                                         [0, 0.1, 0.8, 0.1, 0],
                                         [0, 0, 0, 0.2, 0.8]], atol=1e-7)


def test_soft_cross_entropy_with_one_hot_targets_is_torchs_weighted_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 5, generator=generator)
    stars = torch.randint(0, 5, (12,), generator=generator)
    class_weight = torch.tensor([2.0, 0.5, 1.0, 3.0, 1.5])
    expected = torch.nn.CrossEntropyLoss(weight=class_weight)(logits, stars)
    actual = weighted_soft_cross_entropy(logits, torch.eye(5)[stars], class_weight[stars])
    assert float(actual) == pytest.approx(float(expected), rel=1e-6)


def test_class_probabilities_sum_each_class_s_stars():
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.15, 0.25]]))
    np.testing.assert_allclose(class_probabilities(logits), [[0.3, 0.3, 0.4]], atol=1e-9)


def test_fit_temperature_recovers_the_temperature_of_over_confident_logits():
    """Labels drawn from softmax(z); the model reports 3·z. The fitted temperature is near 3."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20_000, 5))
    stars = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    drawn = (stars.cumsum(1) > rng.random((len(z), 1))).argmax(1)
    labels = np.array([0, 0, 1, 2, 2])[drawn]
    temperature = fit_temperature(3.0 * z, labels)
    assert 2.7 < temperature < 3.3
    assert log_loss(class_probabilities(3.0 * z, temperature), labels) < log_loss(
        class_probabilities(3.0 * z), labels)


def test_decide_adds_the_offsets_to_log_probabilities():
    probabilities = np.array([[0.2, 0.35, 0.45], [0.6, 0.3, 0.1]])
    np.testing.assert_array_equal(decide(probabilities, [0.0, 0.0, 0.0]), [2, 0])
    np.testing.assert_array_equal(decide(probabilities, [0.0, np.log(0.45 / 0.35) + 0.01, 0.0]),
                                  [1, 0])
