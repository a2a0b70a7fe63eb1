"""A trained run served by Triton: fine-tuned encoder, BM25 candidates, feedback head and fused
weights. The served ranking must equal the one `fusionrank evaluate` measures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fusionrank.client import FusionRankClient
from fusionrank.pipeline import SearchPipeline, read_config
from tests.fixtures import running_server
from tests.training_fixtures import sample_judgements

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run (a few fine-tuning steps) on real judgements, and its catalogue."""
    from fusionrank.datasets import homedepot_catalogue
    from fusionrank.training.cli import main

    folder = tmp_path_factory.mktemp("trained")
    data = sample_judgements(folder / "tiny.csv", queries=60)
    run = folder / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--cache",
                 str(folder / "cache"), "--max-steps", "2", "--batch-size", "8",
                 "--dev-queries", "8", "--threads", "1"]) == 0
    catalogue, _ = homedepot_catalogue(data)
    queries = sorted({q.strip() for q in pd.read_csv(data).search_term})
    return run, catalogue, queries


@pytest.fixture(scope="module")
def fused_build(trained, tmp_path_factory):
    from fusionrank.model_repository.build import ServingOptions, build_search_repository

    run, catalogue, _ = trained
    out = tmp_path_factory.mktemp("fused")
    build_search_repository(catalogue, run / "encoder" / "best", out,
                            ServingOptions(onnx_threads=1), run_dir=run)
    return out


@pytest.fixture(scope="module")
def fused_server(fused_build, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    with running_server(fused_build / "model_repository", log_path) as server:
        yield server


def offline_ranker(build):
    from fusionrank.training.offline import OfflineRanker, ServedFiles

    artefacts = build / "artefacts"
    ranking = artefacts / "ranking"
    return OfflineRanker(ServedFiles(
        encoder_dir=artefacts / "encoder", embeddings=artefacts / "index" / "embeddings.npy",
        products=artefacts / "index" / "products.jsonl", lexical=ranking / "lexical.npz",
        priors=ranking / "priors.npy", memory=ranking / "memory.npz",
        feedback_head=ranking / "feedback_head.onnx",
        weights=ranking / "ranking.json"), dense=100, extra=100, threads=1)


def test_repository_serves_the_trained_run(fused_build, trained):
    repository = fused_build / "model_repository"
    manifest = json.loads((repository / "fusionrank.json").read_text())
    assert manifest["training_run"]["run"] == str(trained[0].resolve())
    assert manifest["training_run"]["data_sha256"]
    assert set(manifest["ranking"]["weights"]) == {"similarity", "feedback", "lexical"}
    steps = [s.model_name for s in read_config(repository, "search").ensemble_scheduling.step]
    assert steps == ["tokenizer", "query_encoder", "retrieval", "lexical", "feedback", "ranker"]


def test_served_ranking_equals_the_evaluators(fused_server, fused_build, trained):
    _, catalogue, queries = trained
    queries = queries[:20]
    rows, scores = offline_ranker(fused_build).search(queries, k=10)
    in_process = SearchPipeline(fused_build / "model_repository").search(queries, k=10)
    with FusionRankClient(fused_server.grpc_url, timeout_s=30) as client:
        served = client.search_batch(queries, k=10)
    ids = catalogue.ids
    for query_rows, query_scores, pipeline_hits, hits in zip(rows, scores, in_process, served,
                                                            strict=True):
        assert [h.product_id for h in hits] == [ids[r] for r in query_rows]
        assert [pid for pid, _ in pipeline_hits] == [ids[r] for r in query_rows]
        np.testing.assert_allclose([h.score for h in hits], query_scores, atol=1e-4)
