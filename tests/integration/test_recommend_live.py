"""A product added to a live catalogue while serving is recommended by its title before anyone
buys it, through a real Triton server and through the in-process ensemble (the CLI's
`--repository` path): the recommender folder ships its encoder, both recommend steps embed the
new title with it, the served ranking is the one computed from first principles with the new
product as a cold one, and a delete takes it out again."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from fusionrank.core.live.segments import LiveFolder
from fusionrank.core.recommend.live import folder_encoder
from tests.support import shop
from tests.support.catalogue import running_server
from tests.support.shop import PRODUCTS_BY_THEME as THEMES  # theme → its product ids
from tests.support.shop import publish, upsert


@pytest.fixture(scope="module")
def worded(search_repository, tmp_path_factory) -> Path:
    """The analytic recommender over worded titles, embedded by the bundled encoder the
    pretrained search build exported, which the folder ships."""
    encoder = search_repository.parent / "artefacts" / "encoder"
    return shop.analytic_artefacts(tmp_path_factory.mktemp("worded"), encoder)


@contextlib.contextmanager
def client_of(kind: str, repository: Path, log: Path):
    from fusionrank.app.clients import LocalClient
    from fusionrank.client import FusionRankClient

    if kind == "in process":
        with LocalClient(repository) as client:
            yield client
        return
    with running_server(repository, log) as server, \
            FusionRankClient(server.grpc_url) as client:
        client.wait_ready("recommend", timeout_s=60)
        yield client


@pytest.mark.parametrize("kind", [pytest.param("triton", marks=pytest.mark.server),
                                  "in process"])
def test_a_product_added_live_is_served_by_its_title_before_anyone_buys_it(worded, kind,
                                                                          tmp_path):
    from fusionrank.model_repository.recommend.ensemble import recommend_ensemble

    repository = tmp_path / "out" / "model_repository"
    recommend_ensemble(worded).export(repository)
    for step in ("recommend_history", "recommend_ranker"):
        (version,) = (repository / step).glob("[0-9]*")
        assert (version / "encoder.onnx").is_file() and (version / "tokenizer.json").is_file()
    live = LiveFolder(tmp_path / "out" / "live")
    now = json.loads((worded / "recommender.json").read_text())["reference_time"]
    bunting = [(pid, now - 86_400 * (2 + 9 * i)) for i, pid in enumerate(THEMES[3][:3])]
    k = len(shop.product_ids(launches=True)) + 1
    title = "gold paper party bunting garland"
    vector = folder_encoder(worded)([title])[0]

    with client_of(kind, repository, tmp_path / "tritonserver.log") as client:
        before = [i.product_id for i in client.recommend(bunting, k=k).items]
        assert "NEW-1" not in before
        publish(live, 1, upsert("NEW-1", title, price=4.25))
        after = client.recommend(bunting, k=k)
        assert [(i.product_id, pytest.approx(i.score, abs=1e-5)) for i in after.items] == [
            (pid, pytest.approx(score, abs=1e-5))
            for pid, score in shop.expected_ranking(worded, bunting, k, added={"NEW-1": vector})]
        new = next(i for i in after.items if i.product_id == "NEW-1")
        assert new.product.price == 4.25 and new.product.title == title
        # Its title alone puts it among the bunting shopper's first ten.
        assert [i.product_id for i in after.items].index("NEW-1") < 10
        # A shopper who bought it since: a known product of their history.
        assert client.recommend([THEMES[3][0], "NEW-1"], k=3).unknown_ids == 0
        publish(live, 2, {"op": "delete", "product_id": "NEW-1"})
        gone = [i.product_id for i in client.recommend(bunting, k=k).items]
        assert "NEW-1" not in gone and gone == before
