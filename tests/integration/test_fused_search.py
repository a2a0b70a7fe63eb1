"""A trained run served by Triton: fine-tuned encoder, BM25 candidates, feedback head and fused
weights. The served ranking equals the one the offline path computes (the search runtime, as
`fusionrank evaluate` and the training pipeline run it), from the very files served, and so do
the served explanations: the build's weights, each signal, and S their weighted sum."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusionrank.client import FusionRankClient
from fusionrank.core import artefacts
from fusionrank.core.encoding import MAX_QUERY_TOKENS, OnnxEncoder, TextEncoder, TextTokenizer
from fusionrank.core.fusion import FusionWeights
from fusionrank.core.search.contract import search_request
from fusionrank.core.search.runtime import (
    DENSE_CANDIDATES,
    CandidatePool,
    SearchRuntime,
    dense_candidates,
)
from fusionrank.model_repository.config import served_version
from fusionrank.model_repository.runner import InProcessEnsemble, read_config
from fusionrank.model_repository.search.ensemble import SEARCH_STEPS
from tests.support.catalogue import ANCHORS

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def offline(served_repository) -> tuple[TextEncoder, SearchRuntime]:
    """The offline path, from the files the steps serve: the query encoder and the search
    runtime (with the build's fusion weights)."""
    folder = served_version(served_repository, SEARCH_STEPS)
    encoder = TextEncoder(
        TextTokenizer(folder / artefacts.TOKENIZER, MAX_QUERY_TOKENS),
        OnnxEncoder(folder / artefacts.ENCODER, threads=1))
    runtime = SearchRuntime.load(folder, threads=1)
    runtime.weights = FusionWeights.load(folder / artefacts.FUSION_WEIGHTS)
    return encoder, runtime


def offline_pool(offline, queries: list[str]) -> CandidatePool:
    """Every query's candidates and their signals, computed in process (`SearchRuntime.search`
    before the fusion)."""
    encoder, runtime = offline
    vectors = encoder.encode(queries)
    pool = runtime.candidates(queries, vectors,
                              *dense_candidates(runtime.sources.embeddings, vectors,
                                               DENSE_CANDIDATES))
    pool.feedback = runtime.feedback(pool, vectors)
    return pool


def test_repository_serves_the_trained_run(served_repository, trained_run):
    manifest = json.loads((served_repository / artefacts.REPOSITORY_MANIFEST).read_text())
    assert manifest["training_run"]["run"] == str(trained_run.run.resolve())
    assert manifest["training_run"]["data_sha256"]
    assert set(manifest["ranking"]["weights"]) == {"similarity", "feedback", "lexical"}
    assert set(manifest["ensembles"]) == {"recommend", "sentiment"}
    steps = [s.model_name for s in read_config(served_repository,
                                               "search").ensemble_scheduling.step]
    assert steps == [SEARCH_STEPS]
    model = read_config(served_repository, SEARCH_STEPS)
    assert [link["step"].rpartition(":")[2] for link in json.loads(
        model.parameters["chain"].string_value)] == [
        "Tokenize", "EncodeQueries", "Retrieve", "ScoreCandidates", "Rank"]
    # The title structures were computed at build, for the ranker to read at load.
    assert (served_version(served_repository, SEARCH_STEPS) / artefacts.TITLE_FEATURES).is_file()


def test_served_ranking_equals_the_offline_one(triton_server, served_repository, trained_run,
                                               tiny_catalogue, offline):
    queries = [*ANCHORS, *trained_run.queries[:14]]
    encoder, runtime = offline
    rows, scores = runtime.search(queries, encoder.encode(queries), k=10)
    offline = [[tiny_catalogue.ids[r] for r in query_rows] for query_rows in rows]

    in_process = InProcessEnsemble(served_repository, "search")(search_request(queries, 10))
    with FusionRankClient(triton_server.grpc_url, timeout_s=30) as client:
        served = client.search_batch(queries, k=10)  # light: ids and scores alone
        one_by_one = [client.search(q, k=10) for q in queries[:6]]
        with_products = client.search_batch(queries, k=10, products=True)
        explained = client.explain_batch(queries, k=10)
    for i, hits in enumerate(served):
        assert [h.product_id for h in hits] == offline[i]
        assert [p.decode() for p in in_process["PRODUCT_IDS"][i]] == offline[i]
        np.testing.assert_allclose([h.score for h in hits], scores[i], atol=1e-4)
    for i, hits in enumerate(one_by_one):  # alone or in a batch: the same answer
        assert [h.product_id for h in hits] == offline[i]
    for light, products, answer in zip(served, with_products, explained, strict=True):
        # One ranking at every DETAIL level: ids and scores bit for bit.
        assert [(h.product_id, h.score) for h in products] == [
            (h.product_id, h.score) for h in light]
        assert [(h.product_id, h.score) for h in answer.hits] == [
            (h.product_id, h.score) for h in light]
        assert all(h.product is None for h in light)
        assert [h.product for h in products] == [h.product for h in answer.hits]


def test_explained_scores_add_up_to_the_served_ones_and_show_the_correction(
        triton_server, served_repository, tiny_catalogue, offline):
    with FusionRankClient(triton_server.grpc_url, timeout_s=30) as client:
        misspelt = client.explain("gardn hose", k=5)
        plain = client.search("gardn hose", k=5)
        spelt = client.explain("garden hose", k=5)
    assert misspelt.corrected == "garden hose" and spelt.corrected is None
    assert [h.product_id for h in misspelt.hits] == [h.product_id for h in plain]
    assert misspelt.hits[0].product_id == "A-HOSE"
    # Each part against an independent account: the weights the build wrote (ranking.json,
    # read as plain JSON) and each product's signals recomputed in process.
    ranking = served_version(served_repository, SEARCH_STEPS) / artefacts.FUSION_WEIGHTS
    weights = json.loads(ranking.read_text(encoding="utf-8"))["weights"]
    pool = offline_pool(offline, ["gardn hose"])
    signals = {"similarity": pool.similarity[0], "feedback": pool.feedback[0],
               "lexical": pool.lexical[0]}
    position = {tiny_catalogue.ids[row]: at for at, row in enumerate(pool.rows[0])}
    for hit, served in zip(misspelt.hits, plain, strict=True):
        assert [p.signal for p in hit.parts] == ["similarity", "feedback", "lexical"]
        assert hit.score == served.score
        assert hit.parts_total() == hit.score  # exactly: the server sums these very parts
        assert {p.signal: p.weight for p in hit.parts} == weights
        expected = {name: float(signals[name][position[hit.product_id]]) for name in weights}
        assert [p.value for p in hit.parts] == pytest.approx(
            [expected[p.signal] for p in hit.parts], abs=1e-5)
        assert hit.score == pytest.approx(
            sum(weight * expected[name] for name, weight in weights.items()), abs=1e-4)
    feedback = [p.value for h in misspelt.hits for p in h.parts if p.signal == "feedback"]
    assert all(1.0 <= f <= 3.0 for f in feedback)  # a predicted grade
