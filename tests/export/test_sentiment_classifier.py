"""The exported sentiment classifier against PyTorch, on the session's tiny briefly trained
model."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from fusionrank.core import artefacts
from fusionrank.core.encoding import TextTokenizer, onnx_session
from fusionrank.core.sentiment.contract import SENTIMENT_CLASSES
from fusionrank.core.sentiment.runtime import SentimentRecord
from fusionrank.export.sentiment.classifier import ProbabilityModel
from fusionrank.training.sentiment.model import load_classifier
from tests.support.reviews import TEXTS

pytestmark = pytest.mark.slow  # the session's tiny classifier is trained for them


@pytest.fixture(scope="module")
def exported(sentiment_export):
    return sentiment_export


def test_onnx_matches_pytorch(exported):
    """The exported graph, run here by ONNX Runtime on one padded batch, against PyTorch on each
    text alone: a check of our own, on inputs the export's parity check did not see."""
    out, record = exported
    graph = out / "onnx" / artefacts.SENTIMENT_MODEL
    assert record.classes == list(SENTIMENT_CLASSES)
    assert SentimentRecord.load(out / "onnx") == record
    assert record.onnx_sha256 == hashlib.sha256(graph.read_bytes()).hexdigest()
    tokenizer = TextTokenizer(out / "onnx" / artefacts.TOKENIZER, record.max_tokens)
    texts = [*TEXTS, "Runs small, order a size up", "meh"]
    batch = tokenizer(texts)  # padded to the longest
    (served,) = onnx_session(graph).run(None, {"input_ids": batch.input_ids,
                                               "attention_mask": batch.attention_mask})
    model, _ = load_classifier(out / "checkpoint")
    with torch.no_grad():
        alone = np.concatenate([ProbabilityModel(model.eval())(
            torch.from_numpy(ids.input_ids), torch.from_numpy(ids.attention_mask)).numpy()
            for ids in (tokenizer([text]) for text in texts)])
    assert served.shape == (len(texts), len(SENTIMENT_CLASSES))
    np.testing.assert_allclose(served, alone, atol=1e-4)
