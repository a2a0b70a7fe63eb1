"""`train-sentiment` end to end on the tiny fixtures: train, export, evaluate against TF-IDF +
logistic regression, report, product feature."""

from __future__ import annotations

import json

import pytest
import torch

from fusionrank.app.cli import main


@pytest.mark.slow
def test_train_sentiment_writes_report_and_feature(reviews_file, tiny_model_dir, tmp_path):
    torch.set_num_threads(1)
    status = main(["train-sentiment", "--reviews", str(reviews_file),
                   "--model", str(tiny_model_dir), "--freeze-layers", "1", "--max-steps", "3",
                   "--max-tokens", "32", "--out", str(tmp_path / "build"),
                   "--report-dir", str(tmp_path / "reports"), "--threads", "1",
                   "--product-sentiment", "--quiet"])
    assert status == 0
    report = json.loads((tmp_path / "reports" / "sentiment.json").read_text())
    evaluation = report["evaluation"]
    for model in ("classifier", "tfidf_logreg", "majority_class"):
        assert set(evaluation[model]) == {"macro_f1", "accuracy", "per_class_f1", "confusion"}
        assert sum(map(sum, evaluation[model]["confusion"])) == evaluation["test_reviews"]
    assert report["export"]["parity_max_abs_diff"] <= 1e-4
    assert "train-sentiment" in report["command"]
    markdown = (tmp_path / "reports" / "sentiment.md").read_text()
    assert "TF-IDF + logistic regression" in markdown and "sentiment_confusion.png" in markdown
    assert (tmp_path / "reports" / "sentiment_confusion.png").stat().st_size > 1000
    assert (tmp_path / "build" / "features" / "product_sentiment.csv").is_file()


def test_missing_reviews_file_is_a_clear_error(tmp_path, capsys):
    status = main(["train-sentiment", "--reviews", str(tmp_path / "nope.csv")])
    assert status == 2
    assert "nope.csv not found" in capsys.readouterr().err
