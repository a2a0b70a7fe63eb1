"""The SDK's retries and fail-over against a real server: an unreachable address is skipped
for the next, back-off is bounded by the call's deadline, a call made while no server listens
is answered by one that comes up within its deadline, and bad input is never retried."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from fusionrank.app.serve import Ports, TritonServer, free_port
from fusionrank.client import (
    AsyncFusionRankClient,
    FusionRankClient,
    InvalidRequestError,
    RetryPolicy,
    ServerUnavailableError,
)
from fusionrank.client.search import SEARCH_RESPONSE

pytestmark = pytest.mark.server


def nowhere() -> str:
    """A loopback address nothing listens on."""
    return f"127.0.0.1:{free_port()}"


def failures(url: str, model: str = "search") -> int:
    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    finally:
        client.close()
    return int(stats["inference_stats"].get("fail", {}).get("count", 0))


def test_a_call_fails_over_to_the_next_address_and_stays_there(triton_server):
    with FusionRankClient([nowhere(), triton_server.grpc_url], timeout_s=10) as client:
        assert client.search("ceiling fan", k=1)[0].product_id == "A-FAN"
        assert client.active_url == triton_server.grpc_url
        assert client.search("teapot", k=1)[0].product_id == "A-TEAPOT"

    async def twin() -> str:
        async with AsyncFusionRankClient([nowhere(), triton_server.grpc_url]) as client:
            hits = await client.search("wool scarf", k=1)
            assert client.active_url == triton_server.grpc_url
            return hits[0].product_id

    assert asyncio.run(twin()) == "A-SCARF"


def test_unreachable_servers_are_retried_with_backoff_then_reported():
    policy = RetryPolicy(attempts=4, first_backoff_s=0.1, jitter=0.5)
    started = time.monotonic()
    with FusionRankClient([nowhere(), nowhere()], timeout_s=5, retry=policy) as client, \
            pytest.raises(ServerUnavailableError, match="cannot reach a Triton server"):
        client.search("drill")
    elapsed = time.monotonic() - started
    # Three back-offs of at least half of 0.1, 0.2 and 0.4 s, and no more than their sum.
    assert 0.35 <= elapsed < 2.0


def test_retries_stop_at_the_call_s_deadline():
    policy = RetryPolicy(attempts=100, first_backoff_s=0.2, max_backoff_s=0.2, jitter=0.0)
    started = time.monotonic()
    with FusionRankClient(nowhere(), timeout_s=1.0, retry=policy) as client, \
            pytest.raises(ServerUnavailableError):
        client.search("drill")
    assert time.monotonic() - started < 1.5  # not 100 × 0.2 s


def test_bad_input_the_server_rejects_is_never_retried(triton_server):
    query = grpcclient.InferInput("QUERY", [1, 1], "BYTES")
    query.set_data_from_numpy(np.array([[b"drill"]], dtype=object))
    k = grpcclient.InferInput("K", [1, 1], "INT32")
    k.set_data_from_numpy(np.array([[0]], dtype=np.int32))  # the SDK's own check skipped
    counted = []
    for attempts in (1, 4):  # without retries, then with: the server must see the same
        with FusionRankClient(triton_server.grpc_url, retry=RetryPolicy(attempts)) as client:
            before = failures(triton_server.grpc_url)
            with pytest.raises(InvalidRequestError, match="K = 0 is out of range"):
                client._infer("search", [query, k], SEARCH_RESPONSE)
            counted.append(failures(triton_server.grpc_url) - before)
    assert counted[0] >= 1 and counted[1] == counted[0]


def test_a_call_waits_for_a_server_that_comes_up_within_its_deadline(search_repository,
                                                                     tmp_path):
    """The default policy (no retry settings given): the call starts with nothing listening
    and is answered once Triton is up on that address, as after `fusionrank serve` restarted
    it, instead of failing after a few hundred milliseconds."""
    ports = Ports.free()
    answers: list[str | Exception] = []

    def call() -> None:
        with FusionRankClient(f"127.0.0.1:{ports.grpc}", timeout_s=120) as client:
            try:
                answers.append(client.search("kitchen sink", k=1)[0].product_id)
            except Exception as error:  # reported by the assertion below
                answers.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(1.5)
    assert caller.is_alive() and not answers  # still retrying, not failed
    with (tmp_path / "tritonserver.log").open("w") as log:
        server = TritonServer(search_repository, ports=ports, log=log)
        server.start()
        try:
            ready = time.monotonic()
            caller.join(60)
            # Found back within a capped back-off, not after gRPC's own reconnection back-off
            # (up to 120 s) had it been left at its default.
            assert time.monotonic() - ready < 5.0
        finally:
            server.stop()
    assert answers == ["A-SINK"]
