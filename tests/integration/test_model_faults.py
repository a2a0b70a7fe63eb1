"""Faults in a model, against a real server of its own (a copy of the shared repository):
the model processes (Python-backend stubs) of the ranker killed under load are replaced by the
server's watch while the SDK's retries hide the failures from callers; an artefact changed since
the build stops the model's load with a message naming the file."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pytest
import tritonclient.grpc as grpcclient

from fusionrank.app.stub_watch import RELOAD_PARAMETER, StubWatch, live_stubs
from fusionrank.client import FusionRankClient, FusionRankError, ModelProcessError, RetryPolicy
from fusionrank.core import artefacts
from fusionrank.model_repository.config import served_version
from fusionrank.model_repository.search.ensemble import SEARCH_STEPS
from tests.support.catalogue import running_server

pytestmark = pytest.mark.server

QUERIES = ["ceiling fan", "teapot", "wool scarf", "cordless drill"]


# Room for the outage: each try meeting a dead process fails after 1 s, the reload takes a few.
RETRY = RetryPolicy(attempts=10)


def wait_for_answers(answered: list, more: int, when: str, timeout_s: float = 30) -> None:
    """Until `more` answers beyond those already in `answered` arrive: a count, not a sleep,
    so a slow machine waits longer instead of asserting less."""
    target, deadline = len(answered) + more, time.monotonic() + timeout_s
    while len(answered) < target:
        assert time.monotonic() < deadline, f"fewer than {more} answers {when} in {timeout_s} s"
        time.sleep(0.05)


def test_a_killed_model_process_is_replaced_and_callers_see_no_failure(served_repository,
                                                                       tmp_path):
    repository = shutil.copytree(served_repository, tmp_path / "repository")
    said: list[str] = []
    errors: list[FusionRankError] = []
    answered = []
    stop = threading.Event()

    def caller(offset: int) -> None:  # light load, retries within the SDK's default deadline
        with FusionRankClient(server.grpc_url, retry=RETRY) as client:
            n = offset
            while not stop.is_set():
                query = QUERIES[n % len(QUERIES)]
                try:  # (this server has no response cache)
                    hits = client.search(query, k=1)
                    answered.append((query, hits[0].product_id))
                except FusionRankError as error:
                    errors.append(error)
                n += 2

    with running_server(repository, tmp_path / "tritonserver.log") as server, \
            StubWatch(server, say=said.append) as watch:
        before = live_stubs(server.process.pid, SEARCH_STEPS)
        assert len(before) == 2  # the pipeline model's two instances
        callers = [threading.Thread(target=caller, args=(i,)) for i in range(2)]
        for thread in callers:
            thread.start()
        wait_for_answers(answered, 10, "before the kill")
        for victim in before:
            os.kill(victim, signal.SIGKILL)
        with FusionRankClient(server.grpc_url, retry=RetryPolicy(attempts=1)) as client, \
                pytest.raises(ModelProcessError, match="is not healthy"):
            client.search("teapot", k=1)  # the failure the retries hide
        deadline = time.monotonic() + 60
        while not watch.reloads and time.monotonic() < deadline:
            time.sleep(0.2)
        wait_for_answers(answered, 10, "from the reloaded model")  # callers go on
        stop.set()
        for thread in callers:
            thread.join()
        assert errors == []
        # One reload, whether the watch saw both deaths in one look or the second after it.
        (reload,) = watch.reloads
        assert reload.model == SEARCH_STEPS and reload.error is None, said
        assert set(reload.dead_pids) <= set(before) and reload.dead_pids, said
        # New processes serve it.
        assert set(live_stubs(server.process.pid, SEARCH_STEPS)) - set(before)
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            config = client.get_model_config(SEARCH_STEPS, as_json=True)["config"]
        assert RELOAD_PARAMETER in config["parameters"]
        with FusionRankClient(server.grpc_url, timeout_s=10) as client:
            assert client.search("ceiling fan", k=1)[0].product_id == "A-FAN"
    expected = {"ceiling fan": "A-FAN", "teapot": "A-TEAPOT", "wool scarf": "A-SCARF",
                "cordless drill": "A-DRILL"}
    assert all(expected[q] == p for q, p in answered)


def test_an_artefact_changed_since_the_build_stops_the_load(served_repository, tmp_path):
    repository = tmp_path / "repository"
    for model in ("recommend", "recommend_history", "recommend_ranker"):
        shutil.copytree(served_repository / model, repository / model)
    head = served_version(repository, "recommend_ranker") / artefacts.RECOMMEND_HEAD
    data = bytearray(head.read_bytes())  # a copy, not the shared build's hard link
    data[len(data) // 2] ^= 0xFF
    head.write_bytes(bytes(data))
    log = tmp_path / "tritonserver.log"
    with pytest.raises(RuntimeError, match="before it was ready"), \
            running_server(repository, log):
        pass
    text = log.read_text()
    assert f"{head} does not match its SHA-256" in text
    assert "recommend_ranker" in text
