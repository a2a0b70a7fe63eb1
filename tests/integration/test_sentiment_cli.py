"""`train-sentiment` end to end on the tiny fixtures: train, export, evaluate against TF-IDF +
logistic regression, report, product feature; and `fusionrank sentiment` where no sentiment
model is served, which says how to get one."""

from __future__ import annotations

import json

import pytest
import torch

from fusionrank.app.cli import main
from tests.support.catalogue import running_server

HOW = ("serves no 'sentiment' model: train one with `fusionrank train-sentiment` (it goes to "
       "runs/sentiment, where `fusionrank build` looks for it), then rebuild the repository")


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


@pytest.mark.server
def test_sentiment_from_a_server_without_the_model_says_how_to_get_one(search_repository,
                                                                      tmp_path, capsys):
    with running_server(search_repository, tmp_path / "tritonserver.log") as server:
        status = main(["sentiment", "Lovely dress", "--url", server.grpc_url])
    error = capsys.readouterr().err
    assert status == 2
    assert f"fusionrank sentiment: the server at {server.grpc_url} {HOW}" in error
    assert "NOT_FOUND" not in error


def test_sentiment_in_process_from_a_repository_without_the_model_says_so(search_repository,
                                                                         capsys):
    status = main(["sentiment", "Lovely dress", "--repository", str(search_repository)])
    error = capsys.readouterr().err
    assert status == 2
    assert f"fusionrank sentiment: the repository {search_repository} {HOW}" in error
