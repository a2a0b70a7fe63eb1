"""The reranker's last step on hand-made tensors: the head reordered by S + w · logit, the rest
kept below in the fused order, the answer cut to K, and the explanation's parts (the
reranker's appended) still summing to each score."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrank.core import artefacts
from fusionrank.core.contract import RequestError
from fusionrank.core.search.reranker import RerankerSpec
from fusionrank.model_repository.search.rerank_steps import FUSED, RERANK_LOGITS, Rerank
from fusionrank.model_repository.search.steps import HEAD_SCORES, K

WEIGHT = 0.5


@pytest.fixture
def rerank(tmp_path) -> Rerank:
    RerankerSpec(16, 48, 3, WEIGHT, 3, "int8", "test").save(tmp_path / artefacts.RERANKER_SPEC)
    return Rerank(tmp_path, {})


def request(k: int, explain: bool = True) -> dict[str, np.ndarray]:
    """One query, five ranked products, a head of three: S 0.9, 0.8, 0.7 (then 0.5, 0.4)."""
    weights = np.array([[[0.6, 0.4]] * 5])
    signals = np.array([[[1.0, 0.75], [0.8, 1.0], [0.7, 0.7], [0.5, 0.5], [0.4, 0.4]]],
                       dtype=np.float32)
    fused = (weights * signals.astype(np.float64)).sum(axis=2)
    tensors = {FUSED["PRODUCT_IDS"].name: np.array([[b"a", b"b", b"c", b"d", b"e"]],
                                                   dtype=object),
               FUSED["SCORES"].name: fused.astype(np.float32),
               HEAD_SCORES.name: fused[:, :3],
               RERANK_LOGITS.name: np.array([[-1.0, 0.0, 1.0]], dtype=np.float32),
               K.name: np.array([[k]], dtype=np.int32)}
    if explain:
        tensors |= {FUSED["PRODUCTS"].name: np.array([[b"{}"] * 5], dtype=object),
                    FUSED["SIGNAL_NAMES"].name: np.array([[b"similarity", b"lexical"]],
                                                         dtype=object),
                    FUSED["SIGNAL_WEIGHTS"].name: weights, FUSED["SIGNALS"].name: signals,
                    FUSED["CORRECTED"].name: np.array([[b""]], dtype=object)}
    return tensors


def test_the_head_is_reordered_and_the_rest_kept_below(rerank):
    (answer,) = rerank([request(5)])
    # S + 0.5 · logit: a 0.9 − 0.5 = 0.4, b 0.88, c 0.7 + 0.5 = 1.2; then d 0.5, e 0.4.
    assert answer["PRODUCT_IDS"].tolist() == [[b"c", b"b", b"a", b"d", b"e"]]
    np.testing.assert_allclose(answer["SCORES"], [[1.2, 0.88, 0.4, 0.5, 0.4]], atol=1e-6)
    assert answer["SIGNAL_NAMES"].tolist() == [[b"similarity", b"lexical", b"reranker"]]
    assert answer["SIGNAL_WEIGHTS"][0, :, 2].tolist() == [WEIGHT] * 3 + [0.0] * 2
    assert answer["SIGNALS"][0, :, 2].tolist() == [1.0, 0.0, -1.0, 0.0, 0.0]
    for row in range(5):  # the parts, summed in float64 in order, are the score
        parts = answer["SIGNAL_WEIGHTS"][0, row] * answer["SIGNALS"][0, row].astype(np.float64)
        assert np.float32(sum(parts.tolist())) == answer["SCORES"][0, row]


def test_the_answer_is_cut_to_k_and_follows_the_detail(rerank):
    (two,) = rerank([request(2, explain=False)])
    assert two["PRODUCT_IDS"].tolist() == [[b"c", b"b"]]
    assert set(two) == {"PRODUCT_IDS", "SCORES"}
    (bad,) = rerank([request(0)])
    assert isinstance(bad, RequestError) and "K" in str(bad)
