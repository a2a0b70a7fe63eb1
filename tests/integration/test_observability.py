"""docs/observability.md names the Prometheus metrics to watch: the running server exposes
every one of them, with the per-model labels the page's queries use."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest

from fusionrank.client import FusionRankClient

pytestmark = pytest.mark.server

PAGE = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode("utf-8")


def searches_served(text: str) -> int:
    """All `search` series summed: Triton 2.51 counts the ensemble's requests under version
    "1" beside an idle series for the served version."""
    found = re.findall(r'^nv_inference_request_success\{model="search",version="\d+"\} (\d+)',
                       text, re.MULTILINE)
    assert found, "no search success counter"
    return sum(int(n) for n in found)


def test_every_metric_the_page_names_is_exposed_with_its_model_labels(triton_server):
    url = f"http://127.0.0.1:{triton_server.ports.metrics}/metrics"
    before = searches_served(metrics(url))
    with FusionRankClient(triton_server.grpc_url) as client:
        client.search(f"ceiling fan {time.time_ns()}", k=2)  # never in the response cache
    deadline = time.monotonic() + 10  # Triton refreshes some series on an interval
    while searches_served(text := metrics(url)) <= before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert searches_served(text) > before
    exposed = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
               if line and not line.startswith("#")}
    named = set(re.findall(r"\bnv_[a-z_]+", PAGE.read_text(encoding="utf-8")))
    assert len(named) >= 10
    assert named <= exposed, sorted(named - exposed)
    assert re.search(r'^nv_inference_queue_duration_us\{model="search_steps"', text, re.MULTILINE)
