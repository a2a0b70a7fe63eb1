"""Overload is refused cleanly: each search model holds a bounded queue, and a request beyond it
is answered at once with UNAVAILABLE "Exceeds maximum queue size", which the SDK raises as
ServerOverloadedError, while the requests that are served are answered correctly."""

from __future__ import annotations

import asyncio
import time

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from fusionrank.client import (
    AsyncFusionRankClient,
    FusionRankClient,
    RetryPolicy,
    ServerOverloadedError,
)
from fusionrank.model_repository.search.ensemble import (
    SEARCH_STEPS,
    SearchArtefacts,
    ServingOptions,
    search_ensemble,
)
from tests.support.catalogue import running_server

pytestmark = pytest.mark.server

CALLERS = 64


@pytest.fixture(scope="module")
def tight_repository(search_repository, tmp_path_factory):
    """The pretrained search build's own artefacts, served with a queue of one request."""
    artefacts = search_repository.parent / "artefacts"
    options = ServingOptions(max_queue_size=1, queue_timeout_ms=2000, response_cache=False)
    repository = tmp_path_factory.mktemp("tight") / "model_repository"
    search_ensemble(SearchArtefacts(artefacts / "encoder", artefacts / "index"),
                    options).export(repository)
    return repository


def test_the_queue_policy_is_in_every_search_model(tight_repository):
    for name in (SEARCH_STEPS,):
        config = text_format.Parse((tight_repository / name / "config.pbtxt").read_text(),
                                   mc.ModelConfig())
        policy = config.dynamic_batching.default_queue_policy
        assert (policy.max_queue_size, policy.default_timeout_microseconds,
                policy.timeout_action) == (1, 2_000_000, mc.ModelQueuePolicy.REJECT)


def test_requests_beyond_the_queue_are_refused_at_once_and_the_rest_served(tight_repository,
                                                                          tmp_path):
    with running_server(tight_repository, tmp_path / "triton.log") as server:
        async def burst() -> list:
            # No retries: the server's own answer to each caller, as it gave it.
            async with AsyncFusionRankClient(server.grpc_url, timeout_s=30,
                                             retry=RetryPolicy(attempts=1)) as client:
                return await asyncio.gather(
                    *(client.search("ceiling fan", k=3) for _ in range(CALLERS)),
                    return_exceptions=True)

        started = time.monotonic()
        answers = asyncio.run(burst())
        elapsed = time.monotonic() - started
        served = [a for a in answers if not isinstance(a, BaseException)]
        refused = [a for a in answers if isinstance(a, ServerOverloadedError)]
        assert len(served) + len(refused) == CALLERS, [a for a in answers if a not in served
                                                       and a not in refused]
        assert served and refused
        assert all(hits[0].product_id == "A-FAN" for hits in served)
        assert "Exceeds maximum queue size" in str(refused[0])
        assert elapsed < 20  # refusals are immediate: nothing waits for a slot
        with FusionRankClient(server.grpc_url, timeout_s=30) as client:  # and it recovers
            assert client.search("teapot", k=1)[0].product_id == "A-TEAPOT"
