"""End to end on a tiny slice of the real judgements, through the command line: the session's
tiny `train` run (mining, two fine-tuning steps, ONNX export, feedback head, fusion fit), then
`evaluate`; then the serving artefacts, ranked in process by the search runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusionrank.app.cli import main
from fusionrank.core import artefacts


@pytest.mark.slow
def test_a_tiny_run_trains_evaluates_and_serves(trained_run, tmp_path, capsys):
    run = trained_run.run
    manifest = json.loads((run / artefacts.RUN_MANIFEST).read_text())
    assert manifest["data_sha256"] and manifest["config"]["split"]["seed"] == 13
    for name in (*artefacts.SEARCH_RUN_FILES, "encoder/best/checkpoint.json",
                 "encoder/training_curve.png"):
        assert (run / name).is_file(), name
    weights = json.loads((run / artefacts.FUSION_WEIGHTS).read_text())
    assert set(weights["weights"]) == {"similarity", "feedback", "lexical"}
    assert "grid search" in weights["provenance"]
    # The last stage tunes the ranking cascade, whose depth `build` serves by default.
    cascade = json.loads((run / "cascade.json").read_text())
    assert manifest["stages"]["cascade"]["chosen"] == cascade["chosen"]
    assert cascade["chosen"] in [row["depth"] for row in cascade["depths"]]

    assert main(["evaluate", "--run", str(run), "--out", str(tmp_path / "report"),
                 "--cache", str(trained_run.cache), "--threads", "1"]) == 0
    report = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    systems = set(report["retrieval"]["test"]) - {"queries"}
    assert {"bm25", "pretrained", "finetuned", "hybrid", "fused"} <= systems
    assert f"fused, cascade {cascade['chosen']}" in systems
    assert 0 < report["retrieval"]["test"]["fused"]["ndcg@10"] <= 1
    assert report["feedback"]["test"]["rmse"] > 0
    assert "| fused |" in capsys.readouterr().out
    assert (tmp_path / "report" / "evaluation.png").stat().st_size > 0

    from fusionrank.core.datasets import homedepot_catalogue
    from fusionrank.core.search.runtime import SearchRuntime
    from fusionrank.training.embeddings import Embedder, texts_digest, weights_digest
    from fusionrank.training.search.serving import search_artefacts

    catalogue, _ = homedepot_catalogue(trained_run.data)
    serving = tmp_path / "serving"
    paths = search_artefacts(run, catalogue, serving)
    assert sorted(paths) == sorted(artefacts.SEARCH_RUN_FILES)
    assert all(p.is_file() for p in paths.values())

    # The search runtime ranks from exactly these files and the catalogue index.
    key = f"{weights_digest(run / 'encoder' / 'best')}-{texts_digest(catalogue.titles)}"
    cached = trained_run.cache / "embeddings" / key
    np.save(serving / artefacts.EMBEDDINGS, np.load(cached / "catalogue.npy"))
    catalogue.write_jsonl(serving / artefacts.PRODUCTS)
    runtime = SearchRuntime.load(serving, extra=20)
    queries = ["cordless drill", "Cordless  Drill"]
    vectors = Embedder(cached / "onnx").encode_queries(queries)
    rows, scores = runtime.search(queries, vectors, k=10, dense=20)
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
