"""The served `search` ensemble through the shared real Triton server and real gRPC: the
documented contract, bad input, batching, and the client's errors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fusionrank.app.serve import free_port
from fusionrank.client import (
    AsyncFusionRankClient,
    FusionRankClient,
    InvalidRequestError,
    RequestTimeoutError,
    ServerUnavailableError,
)
from fusionrank.client.search import search_inputs
from fusionrank.core.contract import MAX_BATCH, MAX_K
from fusionrank.core.search.contract import MAX_QUERY_CHARS, search_request
from fusionrank.model_repository.runner import InProcessEnsemble
from tests.support.catalogue import ANCHORS

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def client(triton_server):
    with FusionRankClient(triton_server.grpc_url) as client:
        yield client


def raw_search(url: str, queries: list, k: int | list[int], detail: list[bytes] | None = None):
    """A call with plain tritonclient, as docs/grpc_contract.md describes it; `detail`, the
    DETAIL input's rows (None: no DETAIL input)."""
    client = grpcclient.InferenceServerClient(url)
    query = grpcclient.InferInput("QUERY", [len(queries), 1], "BYTES")
    query.set_data_from_numpy(np.array(queries, dtype=object).reshape(-1, 1))
    ks = np.broadcast_to(np.asarray(k, dtype=np.int32).reshape(-1, 1), (len(queries), 1)).copy()
    top_k = grpcclient.InferInput("K", list(ks.shape), "INT32")
    top_k.set_data_from_numpy(ks)
    inputs = [query, top_k]
    if detail is not None:
        inputs.append(grpcclient.InferInput("DETAIL", [len(detail), 1], "BYTES"))
        inputs[-1].set_data_from_numpy(np.array(detail, dtype=object).reshape(-1, 1))
    try:
        return client.infer("search", inputs)
    finally:
        client.close()


@pytest.mark.parametrize(("query", "expected"), [(q, p.product_id) for q, p in ANCHORS.items()])
def test_unambiguous_queries_find_their_product_first(client, query, expected):
    hits = client.search(query, k=5, products=True)
    assert len(hits) == 5
    assert hits[0].product_id == expected
    assert hits[0].product.title == ANCHORS[query].title
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_plain_tritonclient_follows_the_documented_contract(triton_server):
    result = raw_search(triton_server.grpc_url, [b"cordless drill", b"wool scarf"], 3)
    ids = result.as_numpy("PRODUCT_IDS")
    scores = result.as_numpy("SCORES")
    products = result.as_numpy("PRODUCTS")
    assert ids.shape == scores.shape == products.shape == (2, 3)
    assert scores.dtype == np.float32
    assert ids[0, 0] == b"A-DRILL" and ids[1, 0] == b"A-SCARF"
    assert b'"title": "Red wool winter scarf"' in products[1, 0]
    # No DETAIL input: the whole answer, the explanation included (as before DETAIL existed).
    assert result.as_numpy("SIGNALS").shape[:2] == (2, 3)


@pytest.mark.parametrize(("detail", "outputs"), [
    (b"ids", {"PRODUCT_IDS", "SCORES"}),
    (b"products", {"PRODUCT_IDS", "SCORES", "PRODUCTS"}),
    (b"explain", {"PRODUCT_IDS", "SCORES", "PRODUCTS", "SIGNAL_NAMES", "SIGNAL_WEIGHTS",
                  "SIGNALS", "CORRECTED"})])
def test_detail_names_the_outputs_an_answer_carries(triton_server, detail, outputs):
    queries = [b"cordless drill", b"wool scarf"]
    whole = raw_search(triton_server.grpc_url, queries, 3)
    # No outputs named: the server answers every output it has for this level, no more.
    answer = raw_search(triton_server.grpc_url, queries, 3, [detail] * 2)
    carried = {o.name for o in answer.get_response().outputs}
    assert carried == outputs
    for name in outputs:  # the same ranking and values as the whole answer's
        assert answer.as_numpy(name).tolist() == whole.as_numpy(name).tolist(), name


BAD_DETAILS = {
    "unknown level": ([b"everything"], "DETAIL = 'everything' is not one of ids, products, "
                                       "explain"),
    "differing by row": ([b"ids", b"explain"], "DETAIL must be the same for every row"),
}


@pytest.mark.parametrize("case", BAD_DETAILS, ids=list(BAD_DETAILS))
def test_a_bad_detail_is_invalid_argument_naming_the_input(triton_server, case):
    detail, message = BAD_DETAILS[case]
    queries = [b"garden hose"] * len(detail)
    with pytest.raises(InferenceServerException) as caught:
        raw_search(triton_server.grpc_url, queries, 2, detail)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in caught.value.message()
    with pytest.raises(InvalidRequestError, match="DETAIL = 'everything'"):  # before sending
        search_inputs(["garden hose"], 2, "everything")


BAD_REQUESTS = {
    "empty query": ([b""], 5, "empty"),
    "whitespace only": ([b"   \t "], 5, "empty"),
    "invalid UTF-8": ([b"drill \xff\xfe"], 5, "not valid UTF-8"),
    "over the length limit": ([b"drill " * 1000], 5, f"the limit is {MAX_QUERY_CHARS}"),
    "k = 0": ([b"drill"], 0, "K = 0 is out of range"),
    "negative k": ([b"drill"], -3, "K = -3 is out of range"),
    "k above the maximum": ([b"drill"], MAX_K + 1, f"K = {MAX_K + 1} is out of range"),
    "k differing by row": ([b"drill", b"sink"], [3, 4], "same for every row"),
    "batch over the limit": ([b"drill"] * (MAX_BATCH + 1), 5, f"must be <= {MAX_BATCH}"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_input_is_invalid_argument_and_the_server_keeps_serving(triton_server, case):
    queries, k, message = BAD_REQUESTS[case]
    with pytest.raises(InferenceServerException) as caught:
        raw_search(triton_server.grpc_url, queries, k)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in caught.value.message()
    good = raw_search(triton_server.grpc_url, [b"garden hose"], 1)
    assert good.as_numpy("PRODUCT_IDS")[0, 0] == b"A-HOSE"


def test_served_results_equal_the_in_process_runner(client, served_repository):
    queries = [*ANCHORS, "blue glass vase", "gift for a tea lover", "paper notebook",
               "something to keep plants watered", "warm clothes for winter"]
    expected = InProcessEnsemble(served_repository, "search")(search_request(queries, 20))
    served = client.search_batch(queries, k=20)  # light: ids and scores alone
    one_by_one = [client.search(q, k=20, products=True) for q in queries]
    for i, (batch_hits, single_hits) in enumerate(zip(served, one_by_one, strict=True)):
        for hits in (batch_hits, single_hits):
            assert [h.product_id.encode() for h in hits] == expected["PRODUCT_IDS"][i].tolist()
            np.testing.assert_allclose([h.score for h in hits], expected["SCORES"][i], atol=1e-4)


def test_concurrent_requests_are_batched_without_mixing_results(triton_server, client):
    # Every request differs (K is part of it), so none is answered from the response cache.
    requests = [(q, k) for k in (11, 12, 13, 14) for q in ANCHORS]

    async def many():
        async with AsyncFusionRankClient(triton_server.grpc_url) as aclient:
            return await asyncio.gather(*(aclient.search(q, k=k) for q, k in requests))

    results = asyncio.run(many())
    for (query, k), hits in zip(requests, results, strict=True):
        assert len(hits) == k and hits[0].product_id == ANCHORS[query].product_id


def test_client_rejects_bad_input_before_sending(client):
    with pytest.raises(InvalidRequestError, match="empty"):
        client.search("  ")
    with pytest.raises(InvalidRequestError, match="K = 0"):
        client.search("drill", k=0)
    with pytest.raises(InvalidRequestError, match="list of strings"):
        client.search_batch("drill")


def test_client_timeout_and_unreachable_server_are_named(triton_server):
    # A query no other test sends: a cached answer could come back within any deadline.
    with FusionRankClient(triton_server.grpc_url, timeout_s=1e-6) as hurried, \
            pytest.raises(RequestTimeoutError):
        hurried.search("a query only the timeout test sends")
    with FusionRankClient(f"127.0.0.1:{free_port()}", timeout_s=2) as nowhere, \
            pytest.raises(ServerUnavailableError, match="cannot reach"):
        nowhere.search("cordless drill")


def test_a_bad_query_fails_alone_when_batched_with_good_ones(triton_server):
    """Under concurrent load the dynamic batcher puts requests together; each bad one gets
    INVALID_ARGUMENT and every good one its normal answer."""
    import tritonclient.grpc.aio as grpcaio

    bad = [b"", b"x" * (MAX_QUERY_CHARS + 1), b"drill \xff"]
    good = [(q, k) for k in (21, 22, 23) for q in ANCHORS]

    async def send(client, text: bytes, k: int):
        query = grpcaio.InferInput("QUERY", [1, 1], "BYTES")
        query.set_data_from_numpy(np.array([[text]], dtype=object))
        top_k = grpcaio.InferInput("K", [1, 1], "INT32")
        top_k.set_data_from_numpy(np.array([[k]], dtype=np.int32))
        try:
            return await client.infer("search", [query, top_k])
        except InferenceServerException as error:
            return error

    async def load():
        client = grpcaio.InferenceServerClient(triton_server.grpc_url)
        try:
            requests = [(q.encode(), k) for q, k in good] + [(b, 24) for b in bad] * 3
            order = np.random.default_rng(0).permutation(len(requests))
            answers = await asyncio.gather(*(send(client, *requests[i]) for i in order))
            return [requests[i] for i in order], answers
        finally:
            await client.close()

    requests, answers = asyncio.run(load())
    for (text, k), answer in zip(requests, answers, strict=True):
        if text in bad:
            assert isinstance(answer, InferenceServerException), text
            assert answer.status() == "StatusCode.INVALID_ARGUMENT"
            assert "QUERY[0]" in answer.message()
        else:
            assert not isinstance(answer, Exception), answer
            ids = answer.as_numpy("PRODUCT_IDS")[0]
            assert len(ids) == k and ids[0].decode() == ANCHORS[text.decode()].product_id
