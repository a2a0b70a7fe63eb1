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


def test_an_explanation_after_a_cached_search_of_the_same_query_is_complete(triton_server):
    # The cache answers a repeat with the outputs the first request asked for: the SDK asks
    # for all of them on every search, so an `explain` after a `search` still gets its parts.
    with FusionRankClient(triton_server.grpc_url) as client:
        hits = client.search("red wool scarf gift", k=4)
        before = cache_hits(triton_server.grpc_url)
        answer = client.explain("red wool scarf gift", k=4)
        assert cache_hits(triton_server.grpc_url) == before + 1  # answered from the cache
    assert [h.product_id for h in answer.hits] == [h.product_id for h in hits]
    assert all(len(hit.parts) == 3 and hit.parts_total() == hit.score for hit in answer.hits)
