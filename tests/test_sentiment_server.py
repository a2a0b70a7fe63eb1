"""The served `sentiment` ensemble through a real Triton server and real gRPC, on the tiny
exported classifier: served probabilities equal the in-process steps', bad input gets
INVALID_ARGUMENT naming the problem, and the server keeps serving."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fusionrank.client import FusionRankClient
from fusionrank.client.errors import InvalidRequestError
from fusionrank.model_repository.sentiment import (
    InProcessSentiment,
    SentimentServing,
    sentiment_ensemble,
)
from fusionrank.sentiment_contract import MAX_REVIEW_BATCH, MAX_REVIEW_CHARS
from tests.fixtures import running_server
from tests.sentiment_fixtures import reviews_file, tiny_model_dir  # noqa: F401 - fixtures
from tests.test_sentiment_serving import TEXTS, exported  # noqa: F401 - fixture

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):  # noqa: F811
    out, _ = exported
    repository = tmp_path_factory.mktemp("sentiment_build") / "model_repository"
    sentiment_ensemble(out / "onnx", SentimentServing(onnx_threads=1)).export(repository)
    with running_server(repository, repository.parent / "tritonserver.log") as triton:
        yield triton


def raw_sentiment(url: str, rows: list[bytes]):
    client = grpcclient.InferenceServerClient(url)
    text = grpcclient.InferInput("TEXT", [len(rows), 1], "BYTES")
    text.set_data_from_numpy(np.array(rows, dtype=object).reshape(-1, 1))
    try:
        return client.infer("sentiment", [text])
    finally:
        client.close()


def test_served_equals_in_process(server, exported):  # noqa: F811
    out, _ = exported
    with FusionRankClient(server.grpc_url) as client:
        served = client.sentiment(TEXTS)
    expected = InProcessSentiment(out / "onnx", threads=1)(TEXTS)
    got = np.array([[r.probabilities[c] for c in ("negative", "neutral", "positive")]
                    for r in served])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [r.text for r in served] == TEXTS


BAD = {
    "empty": ([b"good", b""], r"TEXT[1] is empty or only whitespace"),
    "whitespace": ([b" \n "], r"TEXT[0] is empty or only whitespace"),
    "not UTF-8": ([b"caf\xe9"], "TEXT[0] is not valid UTF-8"),
    "too long": ([b"x" * (MAX_REVIEW_CHARS + 1)], f"the limit is {MAX_REVIEW_CHARS}"),
    "batch over the limit": ([b"ok"] * (MAX_REVIEW_BATCH + 1), f"must be <= {MAX_REVIEW_BATCH}"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_invalid_argument_and_server_keeps_serving(server, case):
    rows, message = BAD[case]
    with pytest.raises(InferenceServerException) as raised:
        raw_sentiment(server.grpc_url, rows)
    assert "INVALID_ARG" in str(raised.value.status()) or "INVALID_ARG" in str(raised.value)
    assert message in raised.value.message()
    assert raw_sentiment(server.grpc_url, [b"still serving"]).as_numpy(
        "PROBABILITIES").shape == (1, 3)


def test_client_rejects_locally_with_the_same_message(server):
    with pytest.raises(InvalidRequestError, match=r"TEXT\[0\] is empty"):
        FusionRankClient(server.grpc_url).sentiment(["  "])
