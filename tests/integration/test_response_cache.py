"""Triton's response cache on the `search` ensemble: a repeated request is answered from the
cache with the very same answer, errors are never cached, and each build serves its models
under a version of its own, so a new build's answers can never come from an older one's cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fusionrank.client import FusionRankClient
from fusionrank.core import artefacts
from fusionrank.model_repository.config import served_version
from fusionrank.model_repository.runner import read_config

pytestmark = pytest.mark.server


def cache_hits(url: str) -> int:
    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics("search", as_json=True)
    finally:
        client.close()
    return int(stats["model_stats"][0]["inference_stats"].get("cache_hit", {}).get("count", 0))


def test_a_repeated_request_is_answered_from_the_cache(triton_server, served_repository):
    assert read_config(served_repository, "search").response_cache.enable
    with FusionRankClient(triton_server.grpc_url) as client:
        before = cache_hits(triton_server.grpc_url)
        first = client.search_batch(["blue glass vase", "wool scarf"], k=17)
        assert cache_hits(triton_server.grpc_url) == before  # new: computed
        again = client.search_batch(["blue glass vase", "wool scarf"], k=17)
        assert cache_hits(triton_server.grpc_url) == before + 1
        assert again == first
        other_k = client.search_batch(["blue glass vase", "wool scarf"], k=16)
        assert cache_hits(triton_server.grpc_url) == before + 1  # K is part of the request
        assert [h.product_id for h in other_k[0]] == [h.product_id for h in first[0]][:16]


def test_errors_are_not_cached(triton_server):
    query = grpcclient.InferInput("QUERY", [1, 1], "BYTES")
    query.set_data_from_numpy(np.array([[b"drill"]], dtype=object))
    k = grpcclient.InferInput("K", [1, 1], "INT32")
    k.set_data_from_numpy(np.array([[0]], dtype=np.int32))
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        before = cache_hits(triton_server.grpc_url)
        for _ in range(2):
            with pytest.raises(InferenceServerException, match="K = 0 is out of range"):
                client.infer("search", [query, k])
        assert cache_hits(triton_server.grpc_url) == before
    finally:
        client.close()


def test_every_model_of_a_build_is_served_under_the_builds_version(served_repository):
    manifest = json.loads((served_repository / artefacts.REPOSITORY_MANIFEST).read_text())
    version = manifest["version"]
    assert version > 1
    for config in served_repository.glob("*/config.pbtxt"):
        assert served_version(served_repository, config.parent.name).name == str(version)


def test_each_detail_level_is_cached_apart_and_gets_its_own_outputs(triton_server):
    # The cache keys an answer on the request's inputs alone and answers a repeat with the
    # outputs the first request asked for. DETAIL is an input: a light search and an explain
    # of the same query are two entries, each answered with its own level's outputs, in
    # either order.
    url = triton_server.grpc_url
    with FusionRankClient(url) as client:
        for query, order in (("red wool scarf gift", ("search", "explain")),
                             ("blue ceramic teapot gift", ("explain", "search"))):
            calls = {"search": lambda q=query: client.search(q, k=4),
                     "explain": lambda q=query: client.explain(q, k=4)}
            answers, hits = {}, []
            for name in order:
                before = cache_hits(url)
                answers[name] = calls[name]()
                hits.append(cache_hits(url) - before)
            assert hits == [0, 0], order  # the second level is computed, not the first's
            for name in order:  # each repeat comes from the cache, with its level's outputs
                before = cache_hits(url)
                assert calls[name]() == answers[name]
                assert cache_hits(url) == before + 1
            light, explained = answers["search"], answers["explain"]
            assert all(hit.product is None for hit in light)
            assert [(h.product_id, h.score) for h in light] == [
                (h.product_id, h.score) for h in explained.hits]
            assert all(hit.product.title for hit in explained.hits)
            assert all(len(hit.parts) == 3 and hit.parts_total() == hit.score
                       for hit in explained.hits)
            products = client.search(query, k=4, products=True)  # a third entry
            assert [(h.product_id, h.score) for h in products] == [
                (h.product_id, h.score) for h in light]
            assert [h.product for h in products] == [h.product for h in explained.hits]


def test_a_request_without_detail_is_cached_apart_from_each_level(triton_server):
    """Callers that predate DETAIL get the whole answer, never a light one from the cache."""
    url = triton_server.grpc_url
    with FusionRankClient(url) as client:
        light = client.search("green glass vase", k=3)
    raw = grpcclient.InferenceServerClient(url)
    try:
        query = grpcclient.InferInput("QUERY", [1, 1], "BYTES")
        query.set_data_from_numpy(np.array([[b"green glass vase"]], dtype=object))
        k = grpcclient.InferInput("K", [1, 1], "INT32")
        k.set_data_from_numpy(np.array([[3]], dtype=np.int32))
        before = cache_hits(url)
        whole = raw.infer("search", [query, k])  # no outputs named: every output
        assert cache_hits(url) == before
    finally:
        raw.close()
    assert whole.as_numpy("PRODUCTS").shape == (1, 3)
    assert whole.as_numpy("SIGNALS").shape[:2] == (1, 3)
    assert [pid.decode() for pid in whole.as_numpy("PRODUCT_IDS")[0]] == [
        h.product_id for h in light]
