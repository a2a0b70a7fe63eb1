"""docs/observability.md names the Prometheus metrics to watch: the running server exposes
every one of them, with the per-model labels the page's queries use."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from fusionrank.client import FusionRankClient

pytestmark = pytest.mark.server

PAGE = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def test_every_metric_the_page_names_is_exposed_with_its_model_labels(triton_server):
    with FusionRankClient(triton_server.grpc_url) as client:
        client.search("ceiling fan", k=2)
    url = f"http://127.0.0.1:{triton_server.ports.metrics}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode("utf-8")
    exposed = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
               if line and not line.startswith("#")}
    named = set(re.findall(r"\bnv_[a-z_]+", PAGE.read_text(encoding="utf-8")))
    assert len(named) >= 10
    assert named <= exposed, sorted(named - exposed)
    served = re.search(r'^nv_inference_request_success\{model="search",version="\d+"\} (\d+)',
                       text, re.MULTILINE)
    assert served and int(served.group(1)) >= 1
    assert re.search(r'^nv_inference_queue_duration_us\{model="ranker"', text, re.MULTILINE)
