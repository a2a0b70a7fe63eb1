"""The `recommend` ensemble through a real Triton server and real gRPC, on the tiny synthetic
shop: the served ranking equals the offline evaluator's, and bad input gets INVALID_ARGUMENT
while the server keeps serving."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrank.client import FusionRankClient, InvalidRequestError
from fusionrank.recommend_contract import MAX_HISTORY
from tests import recommend_fixtures as shop
from tests.fixtures import running_server

pytestmark = pytest.mark.server

THEME_3 = [pid for pid in shop.product_ids() if shop.theme_of(pid) == 3]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return shop.trained_artefacts(tmp_path_factory.mktemp("recommender"))


@pytest.fixture(scope="module")
def server(served, tmp_path_factory):
    from fusionrank.model_repository.recommend import recommend_ensemble
    repository = tmp_path_factory.mktemp("build") / "model_repository"
    repository.mkdir()
    recommend_ensemble(served).export(repository)
    with running_server(repository, repository.parent / "tritonserver.log") as triton:
        yield triton


def test_served_recommendations_equal_the_offline_evaluator(server, served):
    recommender = shop.load(served)
    now = recommender.config.reference_time
    histories = [[(THEME_3[0], now - 86_400 * 40), (THEME_3[1], now - 86_400 * 2)],
                 [THEME_3[2], "UNKNOWN-ID", THEME_3[2]],
                 []]
    client = FusionRankClient(server.grpc_url)
    for history in histories:
        ids = [h if isinstance(h, str) else h[0] for h in history]
        times = np.array([0 if isinstance(h, str) else h[1] for h in history], np.int64)
        for exclude in (False, True):
            result = client.recommend(history, k=6, exclude_purchased=exclude)
            rows, scores = recommender.recommend(recommender.shopper(ids, times), 6, exclude)
            assert [i.product_id for i in result.items] == [recommender.product_ids[r]
                                                            for r in rows]
            np.testing.assert_allclose([i.score for i in result.items], scores, atol=1e-6)
            assert result.unknown_ids == ids.count("UNKNOWN-ID")
    client.close()


def test_bad_input_is_invalid_argument_and_the_server_keeps_serving(server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensors = [("HISTORY", np.array([[b"x"] * (MAX_HISTORY + 1)], dtype=object), "BYTES"),
               ("HISTORY_TIMES", np.zeros((1, MAX_HISTORY + 1), np.int64), "INT64"),
               ("K", np.array([[5]], np.int32), "INT32"),
               ("EXCLUDE_PURCHASED", np.array([[0]], np.int32), "INT32")]
    inputs = []
    for name, array, dtype in tensors:
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    with pytest.raises(InferenceServerException, match=str(MAX_HISTORY)) as error:
        client.infer("recommend", inputs)
    assert "INVALID_ARGUMENT" in str(error.value.status())
    client.close()

    with FusionRankClient(server.grpc_url) as sdk:
        with pytest.raises(InvalidRequestError):
            sdk.recommend([THEME_3[0]], k=0)
        assert len(sdk.recommend([THEME_3[0]], k=3).items) == 3
