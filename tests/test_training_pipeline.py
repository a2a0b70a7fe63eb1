"""End to end on a tiny slice of the real judgements, through the command line: `train`
(mining, a few fine-tuning steps, ONNX export, feedback head, fusion fit) then `evaluate`;
then the serving artefacts for a model repository."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusionrank.training.cli import main
from tests.training_fixtures import sample_judgements


def test_train_then_evaluate_on_a_tiny_slice(tmp_path, capsys):
    data = sample_judgements(tmp_path / "tiny.csv", queries=80)
    run, cache = tmp_path / "run", tmp_path / "cache"
    assert main(["train", "--data", str(data), "--out", str(run), "--cache", str(cache),
                 "--max-steps", "2", "--batch-size", "8", "--dev-queries", "8",
                 "--threads", "1"]) == 0
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["data_sha256"] and manifest["config"]["split"]["seed"] == 13
    for name in ("lexical.npz", "feedback_head.onnx", "priors.npy", "memory.npz", "ranking.json",
                 "encoder/best/checkpoint.json", "encoder/training_curve.png"):
        assert (run / name).is_file(), name
    weights = json.loads((run / "ranking.json").read_text())
    assert set(weights["weights"]) == {"similarity", "feedback", "lexical"}
    assert "grid search" in weights["provenance"]

    assert main(["evaluate", "--run", str(run), "--out", str(tmp_path / "report"),
                 "--cache", str(cache), "--threads", "1"]) == 0
    report = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    systems = set(report["retrieval"]["test"]) - {"queries"}
    assert {"bm25", "pretrained", "finetuned", "hybrid", "fused"} <= systems
    assert 0 < report["retrieval"]["test"]["fused"]["ndcg@10"] <= 1
    assert report["feedback"]["test"]["rmse"] > 0
    assert "| fused |" in capsys.readouterr().out
    assert (tmp_path / "report" / "evaluation.png").stat().st_size > 0

    from fusionrank.datasets import homedepot_catalogue
    from fusionrank.training.artefacts import search_artefacts

    catalogue, _ = homedepot_catalogue(data)
    paths = search_artefacts(run, catalogue, tmp_path / "serving")
    assert all(p.is_file() for p in paths.values())

    # The in-process copy of the served search ranks from exactly these files.
    from fusionrank.training.embeddings import texts_digest, weights_digest
    from fusionrank.training.offline import OfflineRanker, ServedFiles

    key = f"{weights_digest(run / 'encoder' / 'best')}-{texts_digest(catalogue.titles)}"
    catalogue.write_jsonl(tmp_path / "products.jsonl")
    ranker = OfflineRanker(ServedFiles(
        encoder_dir=cache / "embeddings" / key / "onnx",
        embeddings=cache / "embeddings" / key / "catalogue.npy",
        products=tmp_path / "products.jsonl", lexical=paths["lexical"], priors=paths["priors"],
        memory=paths["memory"], feedback_head=paths["feedback_head"],
        weights=paths["weights"]), dense=20, extra=20)
    rows, scores = ranker.search(["cordless drill", "Cordless  Drill"], k=10)
    assert rows.shape == (2, 10) and (np.diff(scores, axis=1) <= 1e-6).all()
    np.testing.assert_array_equal(rows[0], rows[1])  # case and spacing do not matter


@pytest.mark.parametrize(("option", "message"), [
    (["--epochs", "0"], "--epochs must be a positive number"),
    (["--batch-size", "1"], "--batch-size must be a positive number of at least 2"),
    (["--positive-threshold", "1.0"], "--positive-threshold must be above 1"),
    (["--max-steps", "0"], "--max-steps must be at least 1"),
])
def test_train_refuses_bad_options_before_any_work(tmp_path, capsys, option, message):
    assert main(["train", "--out", str(tmp_path / "run"), *option]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
