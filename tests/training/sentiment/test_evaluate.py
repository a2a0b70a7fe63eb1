"""The sentiment report's own numbers: the calibration measure, and a report that sets the
star-rating model beside the three-class one it replaced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fusionrank.training.sentiment.evaluate import (
    PREVIOUS_REPORT,
    SentimentEvaluation,
    calibration,
    scores,
    write_report,
)


def drawn(probabilities: np.ndarray, seed: int = 0) -> np.ndarray:
    """A label per row drawn from the row's probabilities."""
    rng = np.random.default_rng(seed)
    return (probabilities.cumsum(1) > rng.random((len(probabilities), 1))).argmax(1)


def test_calibrated_probabilities_have_a_small_calibration_error():
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet([1.0, 1.0, 1.0], size=50_000)
    labels = drawn(probabilities)
    fair = calibration(probabilities, labels)
    sharpened = probabilities ** 3 / (probabilities ** 3).sum(1, keepdims=True)
    over = calibration(sharpened, labels)  # over-confident: claims more than it delivers
    assert fair.expected_calibration_error < 0.01
    assert over.expected_calibration_error > 0.05
    assert over.log_loss > fair.log_loss
    assert sum(b["reviews"] for b in fair.bins) == len(labels)


def test_report_sets_the_model_beside_the_three_class_one(tmp_path):
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    ours = scores(labels, np.array([0, 0, 1, 2, 2, 2, 2, 2]))
    before = scores(labels, np.array([0, 1, 2, 2, 2, 2, 2, 2]))
    (tmp_path / PREVIOUS_REPORT).write_text(json.dumps(
        {"command": "the old command", "evaluation": {"classifier": before.__dict__}}))
    probabilities = np.eye(3)[[0, 0, 1, 2, 2, 2, 2, 2]] * 0.8 + 0.2 / 3
    evaluation = SentimentEvaluation(
        test_reviews=8, classifier=ours, tfidf_logreg=before, majority_class=before,
        classify_seconds=0.1, calibration=calibration(probabilities, labels),
        source="reviews.csv", majority_label="positive",
        class_counts={"test": {"negative": 2, "neutral": 2, "positive": 4}})
    lengths = {k: 1.0 for k in ("p50", "p75", "p90", "p95", "p99", "max", "mean")}
    source = Path.cwd() / "models" / "minilm"
    paths = write_report(tmp_path, evaluation, {"temperature": 1.3, "source_model": str(source)},
                         {}, "the command", 1.0, lengths)
    report = paths["markdown"].read_text()
    assert "three-class MiniLM (served before" in report and "the old command" in report
    assert f"| star-rating MiniLM (served ONNX, dev-chosen decision) | {ours.macro_f1:.3f}" \
        in report
    assert "| neutral | 0 | 1 | 1 |" in report  # our confusion row for the true neutrals
    record = json.loads(paths["json"].read_text())
    assert record["previous_model"]["scores"]["macro_f1"] == pytest.approx(before.macro_f1)
    assert record["evaluation"]["calibration"]["log_loss"] > 0
    assert record["training"]["source_model"] == "models/minilm"  # no path of this machine
