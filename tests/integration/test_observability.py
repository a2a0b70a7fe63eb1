"""docs/observability.md names the Prometheus metrics to watch: the running server exposes
every one of them, with the per-model labels the page's queries use."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from fusionrank.client import FusionRankClient

pytestmark = pytest.mark.server

PAGE = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def metrics(url: str) -> dict[str, Metric]:
    """{metric name: its family} as the server's Prometheus endpoint exposes them, parsed by
    prometheus_client (which names a counter's samples NAME_total, the family keeps NAME)."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode("utf-8")
    return {family.name: family for family in text_string_to_metric_families(text)}


def model_samples(exposed: dict[str, Metric], name: str, model: str) -> list[float]:
    family = exposed.get(name)
    return [sample.value for sample in family.samples
            if sample.labels.get("model") == model] if family else []


def searches_served(exposed: dict[str, Metric]) -> int:
    """All `search` series summed: Triton 2.51 counts the ensemble's requests under version
    "1" beside an idle series for the served version."""
    found = model_samples(exposed, "nv_inference_request_success", "search")
    assert found, "no search success counter"
    return int(sum(found))


def test_every_metric_the_page_names_is_exposed_with_its_model_labels(triton_server):
    url = f"http://127.0.0.1:{triton_server.ports.metrics}/metrics"
    before = searches_served(metrics(url))
    with FusionRankClient(triton_server.grpc_url) as client:
        client.search(f"ceiling fan {time.time_ns()}", k=2)  # never in the response cache
    deadline = time.monotonic() + 10  # Triton refreshes some series on an interval
    while searches_served(now := metrics(url)) <= before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert searches_served(now) > before
    named = set(re.findall(r"\bnv_[a-z_]+", PAGE.read_text(encoding="utf-8")))
    assert len(named) >= 10
    assert named <= set(now), sorted(named - set(now))
    assert model_samples(now, "nv_inference_queue_duration_us", "search_steps")
