"""A trained run served with a cross-encoder reranker as the last stage (`fusionrank build
--reranker`): the server answers what the offline path ranks (the fused ranking of the build's
own files, its head scored by the reranker's graph and reordered by the evaluation's
`apply_rerank`), whatever K against N; the explained parts, the reranker's among them, add up
to each score exactly; a build refuses a depth below the cascade's head, a depth with no
weight fitted and a checkpoint whose tokenizer is not its model's."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fusionrank.client import FusionRankClient
from fusionrank.core import artefacts
from fusionrank.core.encoding import MAX_QUERY_TOKENS, OnnxEncoder, TextEncoder, TextTokenizer
from fusionrank.core.fusion import FusionWeights
from fusionrank.core.search.contract import search_request
from fusionrank.core.search.reranker import OnnxReranker, PairScorer, PairTokenizer, RerankerSpec
from fusionrank.core.search.runtime import SearchRuntime
from fusionrank.model_repository.config import served_version
from fusionrank.model_repository.runner import InProcessEnsemble, read_config
from fusionrank.model_repository.search.ensemble import SEARCH_STEPS, ServingOptions
from tests.support.catalogue import ANCHORS, running_server

pytestmark = pytest.mark.server
DEPTH = 5
# The weight these tests serve: the tiny reranker's dev fit may well be 0 (four training steps
# on 45 queries), under which the head would keep its fused order and the comparisons below
# would not see the reranking at all.
WEIGHT = 1.0


@pytest.fixture(scope="module")
def checkpoint(search_reranker, tmp_path_factory):
    """The tiny reranker's best checkpoint, its fitted weights set to WEIGHT."""
    if search_reranker is None:
        pytest.skip("shared datasets not found")
    folder = tmp_path_factory.mktemp("reranker_checkpoint") / "best"
    shutil.copytree(search_reranker / "best", folder)
    fits = json.loads((folder / "fits.json").read_text())
    for by_depth in fits["fits"].values():
        for fit in by_depth.values():
            fit["weight"] = WEIGHT
    (folder / "fits.json").write_text(json.dumps(fits))
    return folder


@pytest.fixture(scope="module")
def reranked_repository(tiny_catalogue, model_dir, search_run, checkpoint, tmp_path_factory):
    from fusionrank.app.build import RerankerChoice, build_search_repository

    out = tmp_path_factory.mktemp("reranked_build")
    return build_search_repository(
        tiny_catalogue, model_dir, out, ServingOptions(onnx_threads=1, max_queue_delay_us=100),
        run_dir=search_run.run, reranker=RerankerChoice(checkpoint, DEPTH, "int8"))


@pytest.fixture(scope="module")
def reranked_server(reranked_repository, tmp_path_factory):
    with running_server(reranked_repository, tmp_path_factory.mktemp("reranked_triton")
                        / "tritonserver.log") as server:
        yield server


def offline_ranking(repository, catalogue, queries: list[str], k: int,
                    weight: float | None = None):
    """Product ids [queries][k] and scores, computed in process from the served files: the
    fused ranking (SearchRuntime), its top N scored by the reranker's graph and reordered by
    the evaluation's own function."""
    from fusionrank.training.search.reranker import apply_rerank

    folder = served_version(repository, SEARCH_STEPS)
    encoder = TextEncoder(TextTokenizer(folder / artefacts.TOKENIZER, MAX_QUERY_TOKENS),
                          OnnxEncoder(folder / artefacts.ENCODER, threads=1))
    runtime = SearchRuntime.load(folder, threads=1)
    runtime.weights = FusionWeights.load(folder / artefacts.FUSION_WEIGHTS)
    rows, scores = runtime.search(queries, encoder.encode(queries), k=max(k, DEPTH))
    reranker = served_version(repository, "reranker")
    spec = RerankerSpec.load(reranker / artefacts.RERANKER_SPEC)
    scorer = PairScorer(PairTokenizer(reranker / artefacts.TOKENIZER, spec.max_query_tokens,
                                      spec.max_tokens),
                        OnnxReranker(reranker / artefacts.RERANKER, threads=1))
    head = rows[:, :DEPTH]
    logits = scorer([q for q in queries for _ in range(head.shape[1])],
                    [catalogue.titles[r] for r in head.reshape(-1)]).reshape(head.shape)
    weight = spec.weight if weight is None else weight
    order = apply_rerank(rows, scores, logits, weight)[:, :k]
    final = np.concatenate([scores[:, :DEPTH] + weight * logits, scores[:, DEPTH:]], axis=1)
    position = [{int(r): i for i, r in enumerate(row)} for row in rows]
    return ([[catalogue.ids[r] for r in row] for row in order],
            [[final[q, position[q][int(r)]] for r in row] for q, row in enumerate(order)])


def test_the_build_serves_the_reranker_as_its_own_last_model(reranked_repository):
    steps = [s.model_name for s in read_config(reranked_repository,
                                               "search").ensemble_scheduling.step]
    assert steps == [SEARCH_STEPS, "reranker"]
    manifest = json.loads((reranked_repository / artefacts.REPOSITORY_MANIFEST).read_text())
    assert manifest["reranker"]["depth"] == DEPTH
    assert manifest["reranker"]["weight"] == WEIGHT
    assert manifest["reranker"]["precision"] == "int8"
    assert manifest["reranker"]["int8_spearman"] >= 0.98


@pytest.mark.parametrize("k", [3, 10])
def test_served_ranking_is_the_offline_one(reranked_server, reranked_repository, trained_run,
                                           tiny_catalogue, k):
    queries = [*ANCHORS, *trained_run.queries[:10]]
    ids, scores = offline_ranking(reranked_repository, tiny_catalogue, queries, k)
    fused, _ = offline_ranking(reranked_repository, tiny_catalogue, queries, k, weight=0.0)
    assert ids != fused  # the reranker moved some query's products
    in_process = InProcessEnsemble(reranked_repository, "search")(search_request(queries, k))
    with FusionRankClient(reranked_server.grpc_url, timeout_s=30) as client:
        served = client.search_batch(queries, k=k)
        alone = [client.search(q, k=k) for q in queries[:4]]
    for i, hits in enumerate(served):
        assert [h.product_id for h in hits] == ids[i]
        assert [p.decode() for p in in_process["PRODUCT_IDS"][i]] == ids[i]
        np.testing.assert_allclose([h.score for h in hits], scores[i], atol=1e-4)
    for i, hits in enumerate(alone):  # alone or batched: the same answer
        assert [h.product_id for h in hits] == ids[i]


def test_explained_parts_include_the_reranker_and_add_up(reranked_server, reranked_repository,
                                                         trained_run):
    spec = RerankerSpec.load(served_version(reranked_repository, "reranker")
                             / artefacts.RERANKER_SPEC)
    with FusionRankClient(reranked_server.grpc_url, timeout_s=30) as client:
        answer = client.explain(trained_run.queries[0], k=8)
        plain = client.search(trained_run.queries[0], k=8)
    assert [h.product_id for h in answer.hits] == [h.product_id for h in plain]
    for rank, hit in enumerate(answer.hits):
        assert hit.parts[-1].signal == "reranker"
        assert hit.parts_total() == hit.score  # exactly: the server sums these very parts
        assert hit.score == plain[rank].score
    # The head's products carry the reranker's weight, those below it none.
    weights = sorted(h.parts[-1].weight for h in answer.hits)
    assert weights[-DEPTH:] == [spec.weight] * DEPTH and set(weights[:-DEPTH]) <= {0.0}


def test_over_long_queries_are_truncated_not_refused(reranked_server):
    query = " ".join(["cordless drill with battery charger and case"] * 5)[:256]
    with FusionRankClient(reranked_server.grpc_url, timeout_s=30) as client:
        hits = client.search(query, k=5)
    assert len(hits) == 5


def test_build_refuses_what_it_cannot_serve(tiny_catalogue, model_dir, trained_run,
                                            checkpoint, tmp_path):
    from fusionrank.app.build import BuildError, RerankerChoice, build_search_repository

    def build(choice: RerankerChoice, name: str):
        return build_search_repository(tiny_catalogue, model_dir, tmp_path / name,
                                       ServingOptions(onnx_threads=1), run_dir=trained_run.run,
                                       reranker=choice)

    head = json.loads((trained_run.run / "cascade.json").read_text())["chosen"]
    with pytest.raises(BuildError, match=f"between 1 and {head}"):
        build(RerankerChoice(checkpoint, head + 1), "deep")
    with pytest.raises(BuildError, match=r"no weight fitted for int8 at depth 4.*"
                                         r"fusionrank evaluate"):
        build(RerankerChoice(checkpoint, 4), "unfitted")
    # A checkpoint whose tokenizer has another vocabulary than its model's embeddings.
    other = tmp_path / "other"
    shutil.copytree(checkpoint, other)
    tokenizer = json.loads((other / artefacts.TOKENIZER).read_text())
    vocabulary = tokenizer["model"]["vocab"]
    tokenizer["model"]["vocab"] = dict(list(vocabulary.items())[:20000])
    (other / artefacts.TOKENIZER).write_text(json.dumps(tokenizer))
    with pytest.raises(BuildError, match=f"{other}.*does not match tokenizer .*"
                                         f"{other / artefacts.TOKENIZER}"):
        build(RerankerChoice(other, DEPTH), "mismatch")


def test_the_shop_page_shows_the_rerankers_part(reranked_server, trained_run):
    """"Why this result" in a real browser: the reranker's row among the parts, which still
    add up to the served score."""
    import httpx

    from fusionrank.app.web.app import WebSettings
    from fusionrank.app.web.server import WebServer
    from tests.support.browser import chromium, wait_for

    query = trained_run.queries[0]
    with WebServer(WebSettings(reranked_server.grpc_url, timeout_s=30), port=0) as web, \
            chromium() as page:
        expected = httpx.get(f"{web.url}/api/search", params={"q": query, "k": 10},
                             timeout=30).json()["hits"]
        page.get(web.url)
        page.find_element("id", "q").send_keys(query)
        first = f'#results .card[data-product-id="{expected[0]["product_id"]}"]'
        wait_for(page, lambda d: d.find_elements("css selector", first), "the first result")
        card = page.find_element("css selector", first)
        card.find_element("css selector", ".why").click()
        table = card.find_element("css selector", ".why-table")
        wait_for(page, lambda d: table.is_displayed(), "the score's parts")
        rows = table.find_elements("css selector", "tbody tr")
        assert [r.get_attribute("data-signal") for r in rows] == [
            p["signal"] for p in expected[0]["parts"]]
        assert rows[-1].get_attribute("data-signal") == "reranker"
        assert rows[-1].find_element("css selector", "th").text == "cross-encoder reranker"
        assert table.find_element("css selector", ".adds-up").text == \
            "✓ The parts add up to the served score exactly."


def test_the_cli_explains_the_rerankers_part(reranked_server, reranked_repository, trained_run):
    import subprocess
    import sys

    spec = RerankerSpec.load(served_version(reranked_repository, "reranker")
                             / artefacts.RERANKER_SPEC)
    done = subprocess.run([sys.executable, "-m", "fusionrank.app.cli", "search",
                           trained_run.queries[0], "-k", "3", "--explain", "--url",
                           reranked_server.grpc_url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    explained = [line for line in done.stdout.splitlines() if line.strip().startswith("= ")]
    assert len(explained) == 3
    assert all(f"+ {spec.weight:.3f} × reranker " in line for line in explained)


def test_a_gpu_repository_reranks_as_the_cpu_one(tiny_catalogue, model_dir, trained_run,
                                                 checkpoint, tmp_path):
    """The GPU repository's reranker is a native model over the grouped graph (TensorRT FP16
    in the GPU container); here ONNX Runtime runs it on the CPU, in process: its wiring and
    fixed padding answer what the CPU repository (FP32) answers."""
    from fusionrank.app.build import RerankerChoice, build_search_repository

    def built(name: str, options: ServingOptions):
        return build_search_repository(tiny_catalogue, model_dir, tmp_path / name, options,
                                       run_dir=trained_run.run,
                                       reranker=RerankerChoice(checkpoint, DEPTH, "fp32"))

    gpu = built("gpu", ServingOptions(device="gpu"))
    cpu = built("cpu", ServingOptions(precision="fp32", onnx_threads=1))
    steps = [s.model_name for s in read_config(gpu, "search").ensemble_scheduling.step]
    assert steps[-3:] == ["pair_tokenizer", "reranker", "rerank"]
    assert read_config(gpu, "reranker").backend == "onnxruntime"
    request = search_request([*ANCHORS, *trained_run.queries[:6]], 8)
    on_gpu = InProcessEnsemble(gpu, "search")(request)
    on_cpu = InProcessEnsemble(cpu, "search")(request)
    np.testing.assert_array_equal(on_gpu["PRODUCT_IDS"], on_cpu["PRODUCT_IDS"])
    np.testing.assert_allclose(on_gpu["SCORES"], on_cpu["SCORES"], atol=1e-4)
