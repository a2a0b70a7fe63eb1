"""A trained run served by Triton: fine-tuned encoder, BM25 candidates, feedback head and fused
weights. The served ranking equals the one the offline path computes (the search runtime, as
`fusionrank evaluate` and the training pipeline run it), from the very files served."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusionrank.client import FusionRankClient
from fusionrank.core import artefacts
from fusionrank.core.encoding import MAX_QUERY_TOKENS, OnnxEncoder, TextEncoder, TextTokenizer
from fusionrank.core.fusion import FusionWeights
from fusionrank.core.search.contract import search_request
from fusionrank.core.search.runtime import SearchRuntime
from fusionrank.model_repository.config import served_version
from fusionrank.model_repository.runner import InProcessEnsemble, read_config
from fusionrank.model_repository.search.ensemble import SEARCH_STEPS
from tests.support.catalogue import ANCHORS

pytestmark = pytest.mark.server


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
                                               tiny_catalogue):
    queries = [*ANCHORS, *trained_run.queries[:14]]
    # The offline path, from the files the steps serve: encode, then the search runtime.
    folder = served_version(served_repository, SEARCH_STEPS)

    encoder = TextEncoder(
        TextTokenizer(folder / artefacts.TOKENIZER, MAX_QUERY_TOKENS),
        OnnxEncoder(folder / artefacts.ENCODER, threads=1))
    runtime = SearchRuntime.load(folder, threads=1)
    runtime.weights = FusionWeights.load(folder / artefacts.FUSION_WEIGHTS)
    rows, scores = runtime.search(queries, encoder.encode(queries), k=10)
    offline = [[tiny_catalogue.ids[r] for r in query_rows] for query_rows in rows]

    in_process = InProcessEnsemble(served_repository, "search")(search_request(queries, 10))
    with FusionRankClient(triton_server.grpc_url, timeout_s=30) as client:
        served = client.search_batch(queries, k=10)
        one_by_one = [client.search(q, k=10) for q in queries[:6]]
    for i, hits in enumerate(served):
        assert [h.product_id for h in hits] == offline[i]
        assert [p.decode() for p in in_process["PRODUCT_IDS"][i]] == offline[i]
        np.testing.assert_allclose([h.score for h in hits], scores[i], atol=1e-4)
    for i, hits in enumerate(one_by_one):  # alone or in a batch: the same answer
        assert [h.product_id for h in hits] == offline[i]


def test_explained_scores_add_up_to_the_served_ones_and_show_the_correction(triton_server):
    with FusionRankClient(triton_server.grpc_url, timeout_s=30) as client:
        misspelt = client.explain("gardn hose", k=5)
        plain = client.search("gardn hose", k=5)
        spelt = client.explain("garden hose", k=5)
    assert misspelt.corrected == "garden hose" and spelt.corrected is None
    assert [h.product_id for h in misspelt.hits] == [h.product_id for h in plain]
    assert misspelt.hits[0].product_id == "A-HOSE"
    for hit, served in zip(misspelt.hits, plain, strict=True):
        assert [p.signal for p in hit.parts] == ["similarity", "feedback", "lexical"]
        assert hit.score == served.score
        assert hit.parts_total() == hit.score  # exactly: the server sums these very parts
        for part in hit.parts:
            assert part.contribution == part.weight * part.value
    feedback = [p.value for h in misspelt.hits for p in h.parts if p.signal == "feedback"]
    assert all(1.0 <= f <= 3.0 for f in feedback)  # a predicted grade
