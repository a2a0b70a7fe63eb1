"""The web app's bounds on what a visitor sends and sees: body limits that admit the contract's
largest request, and messages with no address of the backend in them."""

from __future__ import annotations

import json

import pytest

from fusionrank.app.web.bodies import BODY_LIMITS, OTHER_BODY_LIMIT, body_limit, declared_length
from fusionrank.app.web.errors import without_addresses
from fusionrank.core.recommend.contract import MAX_HISTORY, MAX_PRODUCT_ID_CHARS
from fusionrank.core.sentiment.contract import MAX_REVIEW_BATCH, MAX_REVIEW_CHARS


def test_the_contracts_largest_requests_fit_their_limits_even_fully_escaped():
    # Every character escaped as \uXXXX (json.dumps' default for non-ASCII text).
    reviews = json.dumps({"texts": ["é" * MAX_REVIEW_CHARS] * MAX_REVIEW_BATCH})
    history = json.dumps({"history": [{"product_id": "é" * MAX_PRODUCT_ID_CHARS,
                                       "time": -2**63}] * MAX_HISTORY,
                          "k": 100, "exclude_purchased": False})
    assert len(reviews) <= body_limit("/api/sentiment") < 2 * len(reviews)
    assert len(history) <= body_limit("/api/recommend") < 2 * len(history)


def test_paths_without_a_body_of_their_own_get_the_small_limit():
    assert body_limit("/api/recommend/") == BODY_LIMITS["/api/recommend"]
    assert body_limit("/api/search") == body_limit("/") == OTHER_BODY_LIMIT


@pytest.mark.parametrize(("headers", "length"), [
    ([(b"content-length", b"100000000")], 100_000_000),
    ([(b"transfer-encoding", b"chunked")], None),
    ([(b"content-length", b"-1")], None),
])
def test_the_declared_length_is_read_from_the_headers(headers, length):
    assert declared_length({"headers": headers}) == length


@pytest.mark.parametrize("message", [
    "cannot reach a Triton server at triton.internal:8001: failed to connect to all "
    "addresses; last error: UNKNOWN: ipv4:10.1.2.3:8001: Connection refused",
    "no answer from triton.internal:8001 in time",
    "tried [fd00::5]:8001 and dns:///triton.internal:8001, then unix:/run/triton.sock",
    "the server at 10.1.2.3:8001 serves no 'sentiment' model",
])
def test_messages_shown_to_visitors_name_no_address(message):
    shown = without_addresses(message, "triton.internal:8001")
    for secret in ("triton.internal", "10.1.2.3", "fd00::5", "/run/triton.sock"):
        assert secret not in shown
    assert shown.split()[0] == message.split()[0]  # the sentence itself is kept


def test_messages_name_none_of_the_replicas_addresses():
    replicas = ("triton-a.internal:8001", "triton-b.internal:8011")
    shown = without_addresses("cannot reach a Triton server at triton-b.internal:8011: "
                              "failed to connect", replicas)
    assert "internal" not in shown and shown.startswith("cannot reach a Triton server")
