"""The `recommend` ensemble through the shared real Triton server and real gRPC, on the tiny
shop's analytic recommender: every served ranking equals the one tests/support/shop.py computes
independently, and bad input gets INVALID_ARGUMENT while the server keeps serving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fusionrank.client import FusionRankClient, InvalidRequestError
from fusionrank.core.recommend.contract import MAX_HISTORY
from tests.support import shop

pytestmark = pytest.mark.server

THEME_3 = [pid for pid in shop.product_ids() if shop.theme_of(pid) == 3]


def test_served_recommendations_are_the_independently_computed_ones(triton_server, recommender):
    now = json.loads((recommender / "recommender.json").read_text())["reference_time"]
    histories = [[(THEME_3[0], now - 86_400 * 40), (THEME_3[1], now - 86_400 * 2)],
                 [THEME_3[2], "UNKNOWN-ID", THEME_3[2]]]
    with FusionRankClient(triton_server.grpc_url) as client:
        for history in histories:
            for exclude in (False, True):
                result = client.recommend(history, k=6, exclude_purchased=exclude)
                expected = shop.expected_ranking(recommender, history, 6, exclude)
                assert [i.product_id for i in result.items] == [pid for pid, _ in expected]
                np.testing.assert_allclose([i.score for i in result.items],
                                           [s for _, s in expected], atol=1e-5)
                assert result.unknown_ids == history.count("UNKNOWN-ID")
                assert not result.cold_start
        for nothing_known in ([], ["UNKNOWN-ID", "ANOTHER"]):
            cold = client.recommend(nothing_known, k=4)
            assert cold.cold_start  # the popular products, and the answer says so
            assert [(i.product_id, pytest.approx(i.score)) for i in cold.items] == \
                shop.expected_popular(recommender, 4)


def test_bad_input_is_invalid_argument_and_the_server_keeps_serving(triton_server):
    tensors = [("HISTORY", np.array([[b"x"] * (MAX_HISTORY + 1)], dtype=object), "BYTES"),
               ("HISTORY_TIMES", np.zeros((1, MAX_HISTORY + 1), np.int64), "INT64"),
               ("K", np.array([[5]], np.int32), "INT32"),
               ("EXCLUDE_PURCHASED", np.array([[0]], np.int32), "INT32")]
    inputs = []
    for name, array, dtype in tensors:
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        with pytest.raises(InferenceServerException) as error:
            client.infer("recommend", inputs)
    finally:
        client.close()
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"HISTORY[0] has {MAX_HISTORY + 1} purchases; the limit is {MAX_HISTORY}" in \
        error.value.message()

    with FusionRankClient(triton_server.grpc_url) as sdk:
        with pytest.raises(InvalidRequestError, match="K = 0"):
            sdk.recommend([THEME_3[0]], k=0)
        assert len(sdk.recommend([THEME_3[0]], k=3).items) == 3
