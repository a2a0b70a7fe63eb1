"""Fine-tuning mechanics on a tiny random BERT and a tiny reviews file: loss falls, the cached
bottom + trained top equal the whole model, imbalance handling, checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from fusionrank.core.encoding import TextTokenizer
from fusionrank.training.sentiment.data import load_reviews
from fusionrank.training.sentiment.model import (
    SentimentConfig,
    bottom_states,
    load_classifier,
    macro_f1,
    new_classifier,
    predict_logits,
    predict_logits_from_states,
    train_sentiment,
    tune_logit_offsets,
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


def test_imbalance_handling_is_recorded(trained, reviews_file):
    """The manifest's class weights, offsets and dev scores, recomputed here: the weights from
    the train split's class counts, both scores by scikit-learn from the saved model's dev
    logits with and without the offsets folded into its bias."""
    manifest = trained.manifest
    reviews = load_reviews(reviews_file)
    counts = np.bincount(reviews.split("train").label, minlength=3)
    assert counts.all()  # every class present: (1 / frequency) ** 0.5, scaled to mean 1
    weights = (counts.sum() / counts) ** 0.5
    np.testing.assert_allclose(manifest.class_weights, weights / weights.mean(), atol=5e-5)
    assert len(manifest.logit_offsets) == 3 and manifest.logit_offsets[0] == 0.0

    model, _ = load_classifier(trained.checkpoint)
    tokenizer = TextTokenizer(trained.checkpoint / "encoder" / "tokenizer.json",
                              manifest.max_tokens)
    dev = reviews.split("dev")
    tuned = predict_logits(model, tokenizer.token_ids(dev.text.tolist()))
    untuned = tuned - np.asarray(manifest.logit_offsets)
    for logits, recorded in ((tuned, manifest.dev_macro_f1),
                             (untuned, manifest.dev_macro_f1_untuned)):
        assert f1_score(dev.label, logits.argmax(1), labels=[0, 1, 2], average="macro",
                        zero_division=0.0) == pytest.approx(recorded, abs=1e-4)


def test_checkpoint_round_trip(trained, reviews_file):
    model, manifest = load_classifier(trained.checkpoint)
    assert manifest == trained.manifest
    tokenizer = TextTokenizer(trained.checkpoint / "encoder" / "tokenizer.json",
                              manifest.max_tokens)
    dev = load_reviews(reviews_file).split("dev")
    logits = predict_logits(model, tokenizer.token_ids(dev.text.tolist()))
    # The saved model (offsets folded into its bias) scores dev as training reported.
    assert macro_f1(dev.label.to_numpy(), logits.argmax(1)) == pytest.approx(
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
