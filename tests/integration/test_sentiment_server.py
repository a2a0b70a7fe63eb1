"""The `sentiment` ensemble through the shared real Triton server and real gRPC, on the tiny
exported classifier: served probabilities equal PyTorch's, bad input gets INVALID_ARGUMENT with
the message naming the row and the problem, and the server keeps serving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fusionrank.client import FusionRankClient
from fusionrank.client.errors import InvalidRequestError
from fusionrank.core.encoding import TextTokenizer
from fusionrank.core.sentiment.contract import MAX_REVIEW_BATCH, MAX_REVIEW_CHARS
from fusionrank.export.sentiment.classifier import ProbabilityModel
from fusionrank.training.sentiment.model import load_classifier
from tests.support.reviews import TEXTS

pytestmark = pytest.mark.server


def raw_sentiment(url: str, rows: list[bytes]):
    client = grpcclient.InferenceServerClient(url)
    text = grpcclient.InferInput("TEXT", [len(rows), 1], "BYTES")
    text.set_data_from_numpy(np.array(rows, dtype=object).reshape(-1, 1))
    try:
        return client.infer("sentiment", [text])
    finally:
        client.close()


def test_served_probabilities_equal_pytorch(triton_server, sentiment_export):
    out, record = sentiment_export
    with FusionRankClient(triton_server.grpc_url) as client:
        served = client.sentiment(TEXTS)
    assert [r.text for r in served] == TEXTS
    got = np.array([[r.probabilities[c] for c in record.classes] for r in served])
    model, _ = load_classifier(out / "checkpoint")
    tokenizer = TextTokenizer(out / "onnx" / "tokenizer.json", record.max_tokens)
    with torch.no_grad():  # one text at a time: no padding at all
        expected = np.concatenate([
            ProbabilityModel(model)(*(torch.from_numpy(a) for a in (b.input_ids,
                                                                    b.attention_mask))).numpy()
            for b in (tokenizer([text]) for text in TEXTS)])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # The label is the decision with the export's dev-chosen offsets, computed here anew.
    offsets = np.asarray(record.decision_offsets)
    decided = np.argmax(np.log(np.maximum(expected, 1e-12)) + offsets, axis=1)
    assert [r.label for r in served] == [record.classes[i] for i in decided]


BAD = {
    "empty": ([b"good", b""], "TEXT[1] is empty or only whitespace"),
    "whitespace": ([b" \n "], "TEXT[0] is empty or only whitespace"),
    "not UTF-8": ([b"caf\xe9"], "TEXT[0] is not valid UTF-8 (byte 0xe9 at offset 3)"),
    "too long": ([b"x" * (MAX_REVIEW_CHARS + 1)],
                 f"TEXT[0] is {MAX_REVIEW_CHARS + 1} characters long; the limit is "
                 f"{MAX_REVIEW_CHARS}"),
    # Triton itself refuses a batch above the model's max_batch_size, before the model runs.
    "batch over the limit": ([b"ok"] * (MAX_REVIEW_BATCH + 1),
                             f"must be <= {MAX_REVIEW_BATCH}"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_invalid_argument_and_server_keeps_serving(triton_server, case):
    rows, message = BAD[case]
    with pytest.raises(InferenceServerException) as raised:
        raw_sentiment(triton_server.grpc_url, rows)
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in raised.value.message()
    assert raw_sentiment(triton_server.grpc_url, [b"still serving"]).as_numpy(
        "PROBABILITIES").shape == (1, 3)


def test_client_rejects_locally_with_the_same_message(triton_server):
    with FusionRankClient(triton_server.grpc_url) as client, \
            pytest.raises(InvalidRequestError, match=r"TEXT\[0\] is empty"):
        client.sentiment(["  "])
