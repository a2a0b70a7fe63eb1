"""The sentiment classifier's serving steps, on a tiny briefly trained model: input validation
(RequestError naming row and problem), batching, the ensemble's configuration, the client's
local checks (tests/export/test_sentiment_classifier.py checks the export against PyTorch)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fusionrank.client.errors import InvalidRequestError
from fusionrank.client.sentiment import parse_results, sentiment_inputs
from fusionrank.core import artefacts
from fusionrank.core.contract import RequestError
from fusionrank.core.sentiment.contract import (
    MAX_REVIEW_BATCH,
    MAX_REVIEW_CHARS,
)
from fusionrank.core.sentiment.runtime import SentimentRecord, SentimentRuntime
from fusionrank.model_repository.sentiment.ensemble import sentiment_ensemble
from fusionrank.model_repository.sentiment.steps import ClassifyReviews, TokenizeReviews
from tests.support.reviews import TEXTS

pytestmark = pytest.mark.slow  # the session's tiny classifier is trained for them


@pytest.fixture(scope="module")
def exported(sentiment_export):
    return sentiment_export


def request(*texts) -> dict[str, np.ndarray]:
    rows = [t if isinstance(t, bytes) else t.encode("utf-8") for t in texts]
    return {"TEXT": np.array([[r] for r in rows], dtype=object)}


def test_steps_return_probabilities_per_request(exported):
    out, record = exported
    tokenize = TokenizeReviews(out / "onnx", {"max_tokens": str(record.max_tokens)})
    classify = ClassifyReviews(out / "onnx", {"threads": "1"})
    tokens = tokenize([request(*TEXTS[:3]), request(TEXTS[3])])
    assert tokens[1]["INPUT_IDS"].shape == (1, record.max_tokens)  # truncated, not rejected
    results = classify(tokens)
    assert [r["PROBABILITIES"].shape for r in results] == [(3, 3), (1, 3)]
    assert [r["LABEL"].shape for r in results] == [(3, 1), (1, 1)]
    probabilities = np.concatenate([r["PROBABILITIES"] for r in results])
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)

    # The same texts through PyTorch, one at a time (no padding): batching changes nothing.
    import torch

    from fusionrank.export.sentiment.classifier import ProbabilityModel
    from fusionrank.training.sentiment.model import load_classifier

    model, _ = load_classifier(out / "checkpoint")
    with torch.no_grad():
        for text, row in zip(TEXTS, probabilities, strict=True):
            ids = tokenize.tokenizer([text])
            expected = ProbabilityModel(model)(torch.from_numpy(ids.input_ids),
                                               torch.from_numpy(ids.attention_mask))
            np.testing.assert_allclose(row, expected.numpy()[0], atol=1e-4)


@pytest.mark.parametrize(("texts", "message"), [
    (["fine", ""], r"TEXT\[1\] is empty or only whitespace"),
    ([" \t\n "], r"TEXT\[0\] is empty or only whitespace"),
    (["ok", b"caf\xe9"], r"TEXT\[1\] is not valid UTF-8 \(byte 0xe9 at offset 3\)"),
    (["x" * (MAX_REVIEW_CHARS + 1)],
     rf"TEXT\[0\] is {MAX_REVIEW_CHARS + 1} characters long; the limit is {MAX_REVIEW_CHARS}"),
    (["ok"] * (MAX_REVIEW_BATCH + 1),
     rf"carries {MAX_REVIEW_BATCH + 1} reviews; it must carry 1 to {MAX_REVIEW_BATCH}"),
])
def test_bad_text_is_rejected_with_its_row(exported, texts, message):
    out, _ = exported
    tokenize = TokenizeReviews(out / "onnx", {})
    results = tokenize([request(*texts), request("a good one")])
    assert isinstance(results[0], RequestError)
    assert re.search(message, str(results[0])), str(results[0])
    assert "INPUT_IDS" in results[1]  # the other request in the batch is served


def test_missing_or_empty_input(exported):
    out, _ = exported
    tokenize = TokenizeReviews(out / "onnx", {})
    missing, empty = tokenize([{}, {"TEXT": np.empty((0, 1), dtype=object)}])
    assert "TEXT is missing" in str(missing)
    assert "carries 0 reviews" in str(empty)


def test_the_runtime_classifies_in_length_sorted_batches_as_the_steps_do(exported):
    out, record = exported
    pipeline = SentimentRuntime(out / "onnx", threads=1)
    tokenize = TokenizeReviews(out / "onnx", {"max_tokens": str(record.max_tokens)})
    classify = ClassifyReviews(out / "onnx", {"threads": "1"})
    (served,) = classify(tokenize([request(*TEXTS)]))
    np.testing.assert_allclose(pipeline(TEXTS), served["PROBABILITIES"], atol=1e-5)
    names = [b"negative", b"neutral", b"positive"]
    assert [names[i] for i in pipeline.labels(pipeline(TEXTS))] == list(served["LABEL"][:, 0])
    probabilities = pipeline(TEXTS, batch_size=2)  # length-sorted chunks, original order back
    one_by_one = np.concatenate([pipeline([t]) for t in TEXTS])
    np.testing.assert_allclose(probabilities, one_by_one, atol=1e-5)
    with pytest.raises(RequestError, match="empty"):
        pipeline(["fine", "  "])


def test_ensemble_configuration(exported, tmp_path):
    out, record = exported
    ensemble = sentiment_ensemble(out / "onnx")
    config = ensemble.config()
    assert config.name == "sentiment"
    assert [i.name for i in config.input] == ["TEXT"]
    assert [(o.name, list(o.dims)) for o in config.output] == [("PROBABILITIES", [3]),
                                                               ("LABEL", [1])]
    assert [s.model_name for s in config.ensemble_scheduling.step] == [
        "review_tokenizer", "sentiment_classifier"]
    ensemble.export(tmp_path)
    for name in ("sentiment", "review_tokenizer", "sentiment_classifier"):
        assert (tmp_path / name / "config.pbtxt").is_file()
    assert (tmp_path / "sentiment_classifier" / "1" / artefacts.SENTIMENT_MODEL).is_file()
    assert SentimentRecord.load(tmp_path / "sentiment_classifier" / "1") == record
    assert (tmp_path / "review_tokenizer" / "1" / "tokenizer.json").is_file()
    tokenizer_config = (tmp_path / "review_tokenizer" / "config.pbtxt").read_text()
    assert f'string_value: "{record.max_tokens}"' in tokenizer_config


def test_ensemble_needs_an_export(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sentiment\.json"):
        sentiment_ensemble(tmp_path)


def test_client_checks_before_sending():
    with pytest.raises(InvalidRequestError, match=r"TEXT\[1\] is empty"):
        sentiment_inputs(["good", " "])
    with pytest.raises(InvalidRequestError, match="carries 0 reviews"):
        sentiment_inputs([])
    (tensor,) = sentiment_inputs(["good", "bad"])
    assert tensor.shape() == [2, 1] and tensor.datatype() == "BYTES"
    answer = Answer(PROBABILITIES=np.array([[0.2, 0.3, 0.5]], dtype=np.float32),
                    LABEL=np.array([[b"neutral"]], dtype=object))
    (result,) = parse_results(["meh"], answer)
    assert result.label == "neutral"  # the server's decision, not the arg-max
    assert result.score == pytest.approx(0.3)


class Answer:
    """A server answer's `as_numpy`, from arrays."""

    def __init__(self, **arrays: np.ndarray):
        self.arrays = arrays

    def as_numpy(self, name: str) -> np.ndarray:
        return self.arrays[name]
