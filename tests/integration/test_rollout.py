"""`fusionrank deploy` on a real Triton server: a rollout under load at concurrency 8 fails no
request and never answers with a mix of two builds, recommend and sentiment answer throughout,
a rollout whose artefacts fail to load is refused with the old version still serving, and
`fusionrank status` shows what serves since when."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fusionrank.app.cli import main
from fusionrank.app.control import control_headers, key_for
from fusionrank.app.deploy import ROLLOUT_LOG, deploy
from fusionrank.client import (
    AsyncFusionRankClient,
    FusionRankClient,
    ModelNotServedError,
    RetryPolicy,
)
from fusionrank.model_repository.config import read_config, versions, write_config
from fusionrank.model_repository.search.ensemble import SEARCH_STEPS
from tests.support.catalogue import ANCHORS, running_server

pytestmark = pytest.mark.server

QUERIES = [*ANCHORS, "blue glass vase", "red candle holder", "garden tools", "gift box"]
NO_RETRY = RetryPolicy(attempts=1)  # a failure is counted, never hidden by a retry
CONCURRENCY = 8


@pytest.fixture(scope="module")
def live(served_repository, tmp_path_factory):
    """A server of its own on a copy of served_repository (a rollout changes it in place)."""
    folder = tmp_path_factory.mktemp("live")
    repository = folder / "model_repository"
    shutil.copytree(served_repository, repository)
    with running_server(repository, folder / "tritonserver.log", cache_mib=16) as server:
        yield server, repository


def answer(client: FusionRankClient, query: str, k: int = 10, beside: str = "") -> list[tuple]:
    """The query's ranking; `beside`: sent in one batch with that query (its answer dropped)."""
    hits = client.search_batch([query, beside] if beside else [query], k=k, products=True)[0]
    return [(h.product_id, h.score, h.product.price) for h in hits]


def same(a: list[tuple], b: list[tuple]) -> bool:
    """The same ranking, prices and scores (to 1e-5: dynamic batching may move the last bits)."""
    return len(a) == len(b) and all(x[0] == y[0] and x[2] == y[2] and abs(x[1] - y[1]) < 1e-5
                                    for x, y in zip(a, b, strict=True))


def serving_versions(repository: Path) -> dict[str, list[int]]:
    return {p.parent.name: versions(p.parent) for p in repository.glob("*/config.pbtxt")}


def test_a_rollout_whose_artefacts_fail_to_load_is_refused_and_the_old_version_serves(
        live, next_build, tmp_path):
    server, repository = live
    broken = tmp_path / "broken"
    shutil.copytree(next_build, broken, copy_function=shutil.copy)
    (embeddings,) = broken.glob(f"{SEARCH_STEPS}/*/embeddings.npy")
    embeddings.write_bytes(b"\x93NUMPY truncated")
    before_files = serving_versions(repository)
    with FusionRankClient(server.grpc_url, retry=NO_RETRY) as client:
        before = answer(client, "cordless drill")
        record = deploy(server.grpc_url, repository, broken, drain_s=0.5)
        assert record.outcome == "refused"
        assert record.reason.startswith(f"{SEARCH_STEPS} version ")
        assert "failed to load" in record.reason
        # It names the damaged source file and what to do, not the staged copy it loaded.
        assert str(embeddings) in record.reason and str(repository) not in record.reason
        assert f"rebuild the source (`fusionrank build --out {tmp_path}`)" in record.reason
        assert answer(client, "cordless drill") == before
        assert client.recommend([], k=3).items and client.sentiment(["great"])
    assert serving_versions(repository) == before_files  # the staged versions are gone
    assert not list(repository.glob("*_rollout_probe"))
    triton = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        assert triton.is_server_ready()
    finally:
        triton.close()
    logged = json.loads((repository / ROLLOUT_LOG).read_text().splitlines()[-1])
    assert logged["outcome"] == "refused" and logged["reason"] == record.reason


def test_a_rollout_under_load_fails_no_request_and_mixes_no_versions(live, next_build):
    server, repository = live
    old_versions = serving_versions(repository)
    with FusionRankClient(server.grpc_url, retry=NO_RETRY) as client:
        old = {q: answer(client, q) for q in QUERIES}
    # Each call asks for a K of its own (the same ranking, cut at K) and is batched with a query
    # of its own, so that none is answered from the response cache: each runs the models.
    seen: list[tuple[str, int, list[tuple]]] = []
    failures: list[str] = []
    other_calls = {"recommend": 0, "sentiment": 0}
    stop = threading.Event()

    def search_caller(offset: int) -> None:
        with FusionRankClient(server.grpc_url, retry=NO_RETRY) as client:
            i = offset
            while not stop.is_set():
                query, k = QUERIES[i % len(QUERIES)], 1 + i // len(QUERIES) % 10
                try:
                    seen.append((query, k, answer(client, query, k, beside=f"gift {i}")))
                except Exception as error:
                    failures.append(f"search {query!r}: {error}")
                i += CONCURRENCY - 1

    def other_caller() -> None:  # recommend and sentiment keep answering during the rollout
        with FusionRankClient(server.grpc_url, retry=NO_RETRY) as client:
            while not stop.is_set():
                try:
                    assert len(client.recommend([], k=5).items) == 5
                    other_calls["recommend"] += 1
                    assert client.sentiment(["Lovely, works well"])[0].label
                    other_calls["sentiment"] += 1
                except Exception as error:
                    failures.append(f"recommend/sentiment: {error}")

    callers = [threading.Thread(target=search_caller, args=(i,)) for i in range(CONCURRENCY - 1)]
    callers.append(threading.Thread(target=other_caller))
    for caller in callers:
        caller.start()
    # The new build's time differs from the serving one's: status must keep the latter for
    # the models the rollout leaves alone.
    first_built = json.loads((repository / "fusionrank.json").read_text())["built_at"]
    manifest = json.loads((next_build / "fusionrank.json").read_text())
    (next_build / "fusionrank.json").write_text(json.dumps(manifest | {"built_at": "2001"}))
    try:
        time.sleep(1.0)
        record = deploy(server.grpc_url, repository, next_build, drain_s=1.0)
        time.sleep(1.0)
    finally:
        stop.set()
        for caller in callers:
            caller.join(timeout=30)
    assert record.outcome == "switched", record.reason
    assert failures == []
    with FusionRankClient(server.grpc_url, retry=NO_RETRY) as client:
        new = {q: answer(client, q) for q in QUERIES}
    prices = {product: price for product, _, price in new["cordless drill"]}
    assert prices["A-DRILL"] == ANCHORS["cordless drill"].price + 1.0  # re-priced
    assert prices["N-DRILL"] == 59.0  # added
    differ = [q for q in QUERIES if not same(old[q], new[q])]
    assert len(differ) >= len(QUERIES) // 2
    mixed = [(q, got) for q, k, got in seen if not (same(got, old[q][:k])
                                                   or same(got, new[q][:k]))]
    assert mixed == []
    assert any(same(got, old[q][:k]) for q, k, got in seen if q in differ)
    assert any(same(got, new[q][:k]) for q, k, got in seen if q in differ)
    assert set(record.models) == {SEARCH_STEPS, "search"}  # recommend untouched
    assert other_calls["recommend"] > 0 and other_calls["sentiment"] > 0

    after = serving_versions(repository)
    for model in (SEARCH_STEPS, "search"):
        assert after[model] == [record.version] != old_versions[model]
    assert after["recommend"] == old_versions["recommend"]
    assert after["recommend_history"] == old_versions["recommend_history"]
    assert json.loads((repository / "fusionrank.json").read_text())["version"] == record.version

    status = status_json(server.grpc_url, repository)
    serving = {(r["model"], r["version"]): r for r in status["models"]}
    assert serving[("search", record.version)]["since"] == record.switched_at
    assert serving[("search", record.version)]["state"] == "READY"
    assert ("search", old_versions["search"][0]) not in serving
    assert serving[("recommend", old_versions["recommend"][0])]["since"] == f"build {first_built}"
    assert status["last_rollout"]["outcome"] == "switched"


def status_json(url: str, repository: Path) -> dict:
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["status", "--url", url, "--repository", str(repository), "--json"]) == 0
    return json.loads(out.getvalue())


def test_status_lists_every_served_model_and_its_version(live, capsys):
    server, repository = live
    assert main(["status", "--url", server.grpc_url, "--repository", str(repository)]) == 0
    table = capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0].split() == ["MODEL", "VERSION", "STATE", "SINCE"]
    for model, found in serving_versions(repository).items():
        assert any(line.split()[:3] == [model, str(found[0]), "READY"] for line in lines), model


def test_deploy_refuses_a_repository_the_server_does_not_serve(live, next_build, tmp_path,
                                                               capsys):
    server, _ = live
    elsewhere = tmp_path / "model_repository"
    shutil.copytree(next_build, elsewhere)
    code = main(["deploy", "--url", server.grpc_url, "--repository", str(elsewhere),
                 "--source", str(next_build)])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"fusionrank deploy: no running `fusionrank serve` serves "
                            f"{elsewhere}")
    assert not (elsewhere / ROLLOUT_LOG).exists()  # nothing written into the wrong folder
    assert not (elsewhere / ".rollout.lock").exists()


def test_model_control_refuses_a_wrong_key(live, next_build, monkeypatch, capsys, tmp_path):
    server, repository = live
    monkeypatch.setenv("FUSIONRANK_CONTROL_KEY", "not-the-key")
    assert main(["status", "--url", server.grpc_url]) == 2
    assert "restricted" in capsys.readouterr().err
    lines = (repository / ROLLOUT_LOG).read_text().splitlines() if (
        repository / ROLLOUT_LOG).exists() else []
    wrong = tmp_path / "key"
    wrong.write_text("not-the-key\n")
    assert main(["deploy", "--url", server.grpc_url, "--repository", str(repository),
                 "--source", str(next_build), "--control-key-file", str(wrong)]) == 2
    assert "refused model control" in capsys.readouterr().err
    assert ((repository / ROLLOUT_LOG).read_text().splitlines() if (
        repository / ROLLOUT_LOG).exists() else []) == lines


def test_the_sdk_sends_a_feature_s_calls_to_the_model_its_models_option_names(live):
    """`models=` (sync and async alike): a copy of the search ensemble under another name
    answers as search does, and Triton counts the calls on the copy; a name the server lacks
    is the name the error gives, for each feature."""
    server, repository = live
    copy = read_config(repository, "search")
    copy.name = "search_elsewhere"
    copy.response_cache.enable = False  # each call runs the copy, so its count is the calls
    write_config(copy, repository, 1)
    triton = grpcclient.InferenceServerClient(server.grpc_url)
    control = control_headers(key_for(server.grpc_url, repository))
    elsewhere = {"search": "search_elsewhere"}

    async def routed_async(query: str) -> list[tuple]:
        async with AsyncFusionRankClient(server.grpc_url, retry=NO_RETRY,
                                         models=elsewhere) as client:
            hits = (await client.search_batch([query], k=10, products=True))[0]
            return [(h.product_id, h.score, h.product.price) for h in hits]

    def calls() -> int:
        (stats,) = triton.get_inference_statistics("search_elsewhere").model_stats
        return stats.inference_stats.success.count

    try:
        triton.load_model("search_elsewhere", headers=control)
        with (FusionRankClient(server.grpc_url, retry=NO_RETRY) as default,
              FusionRankClient(server.grpc_url, retry=NO_RETRY, models=elsewhere) as routed):
            assert routed.models.search == "search_elsewhere"
            assert routed.models.recommend == default.models.recommend == "recommend"
            before = calls()
            for query in QUERIES[:3]:
                assert same(answer(routed, query), answer(default, query)), query
            assert routed.explain("cordless drill", k=3).hits
            assert calls() == before + 4
            assert same(asyncio.run(routed_async("cordless drill")),
                        answer(default, "cordless drill"))
            assert calls() == before + 5
            assert routed.recommend([], k=3).items  # recommend keeps its own model
        for feature, call in (("search", lambda c: c.search("gift")),
                              ("recommend", lambda c: c.recommend([], k=3)),
                              ("sentiment", lambda c: c.sentiment(["great"]))):
            with FusionRankClient(server.grpc_url, retry=NO_RETRY,
                                  models={feature: "no_such_model"}) as client:
                with pytest.raises(ModelNotServedError) as caught:
                    call(client)
                assert caught.value.model == "no_such_model", feature
    finally:
        with contextlib.suppress(InferenceServerException):
            triton.unload_model("search_elsewhere", headers=control)
        triton.close()
        shutil.rmtree(repository / "search_elsewhere")
