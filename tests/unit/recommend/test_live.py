"""The recommender follows a live catalogue (core/recommend/live.py): a product added live is
recommended by its title's similarity before anyone buys it, a retitle moves its product's
vector, a price change shows, a delete is never recommended; and the grown recommender ranks as
one rebuilt from scratch over the changed catalogue (statistics and co-purchases counted again
from the purchases)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fusionrank.core.live.changes import parse_changes
from fusionrank.core.live.segments import CatalogueChanges, LiveFolder, LiveState
from fusionrank.core.recommend.live import LiveProducts, folder_encoder, grown
from fusionrank.core.recommend.runtime import Recommender
from tests.support import shop

THEMES = {t: [pid for pid in shop.product_ids() if shop.theme_of(pid) == t]
          for t in range(shop.THEMES)}


def upsert(product_id: str, title: str, price: float = 1.0) -> dict:
    return {"op": "upsert", "product": {"product_id": product_id, "title": title,
                                        "category": "gift-ware", "price": price}}


def publish(live: LiveFolder, sequence: int, *lines: dict) -> None:
    """One change set as the catalogue model leaves it (the search's vectors do not matter
    here: the recommender embeds with its own encoder)."""
    changes = parse_changes("\n".join(json.dumps(line) for line in lines))
    live.write_segment(sequence, changes, np.zeros((len(changes.upserts), 4), np.float32))
    live.publish(LiveState("1", tuple(range(1, sequence + 1))))


def theme_vector(theme: int, seed: int) -> np.ndarray:
    """A product of `theme` as the tiny shop draws one (its direction plus noise)."""
    vector = np.eye(shop.DIM)[theme] + 0.3 * np.random.default_rng(seed).normal(size=shop.DIM)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def test_a_grown_recommender_ranks_as_one_rebuilt_over_the_changed_catalogue(recommender,
                                                                             tmp_path):
    from fusionrank.training.recommend.evaluate import Catalogue

    base = Recommender.load(recommender)
    retitled, repriced = THEMES[0][0], THEMES[2][0]
    # The tiny shop's "encoder": each title's vector (its products are vectors, not text).
    vectors = {"Theme 3 newcomer": theme_vector(3, 1), "Theme 1 newcomer": theme_vector(1, 2),
               "Theme 3 restyled": theme_vector(3, 3)}
    embedded: list[str] = []

    def embed(titles: list[str]) -> np.ndarray:
        embedded.extend(titles)
        return np.stack([vectors[t] for t in titles])

    live = LiveFolder(tmp_path / "live")
    publish(live, 1, upsert("NEW-3", "Theme 3 newcomer"), upsert("NEW-1", "Theme 1 newcomer"),
            upsert(retitled, "Theme 3 restyled"),
            upsert(repriced, shop.title(repriced), price=9.5))
    publish(live, 2, {"op": "delete", "product_id": "NEW-1"})
    products = LiveProducts(base.embeddings, base.product_json, embed)
    rows = products.rows(CatalogueChanges(live).update(live.state()))
    served = grown(base, rows)
    assert sorted(embedded) == sorted(vectors)  # each new or changed title, once

    # Rebuilt: the changed catalogue from scratch, the new products after the old rows.
    lines = [json.loads(line) for line in base.product_json]
    by_id = {row["product_id"]: row for row in lines}
    by_id[retitled]["title"] = "Theme 3 restyled"
    by_id[repriced]["price"] = 9.5
    lines += [upsert("NEW-3", "Theme 3 newcomer")["product"] | {"brand": "", "description": ""},
              upsert("NEW-1", "Theme 1 newcomer")["product"] | {"brand": "", "description": ""}]
    embeddings = np.concatenate([base.embeddings, [vectors["Theme 3 newcomer"],
                                                   vectors["Theme 1 newcomer"]]])
    embeddings[base.row_of[retitled]] = vectors["Theme 3 restyled"]
    rebuilt, _, _ = shop.analytic_recommender(
        tmp_path / "rebuilt", Catalogue([json.dumps(row) for row in lines], embeddings))
    withdrawn = np.array([row["product_id"] == "NEW-1" for row in lines])
    np.testing.assert_array_equal(rows.withdrawn, withdrawn)
    assert rebuilt.stats.buyers_all[-2:].tolist() == [0, 0] and rebuilt.cold[-2:].all()

    now = base.config.reference_time
    for history in (THEMES[3][:2], THEMES[1][:3], [THEMES[3][0], "NEW-3"], [retitled]):
        times = np.array([now - 86_400 * (3 + 5 * i) for i in range(len(history))])
        for exclude in (False, True):
            got = served.recommend(served.shopper(history, times), len(lines), exclude,
                                   rows.withdrawn)
            want = rebuilt.recommend(rebuilt.shopper(history, times), len(lines), exclude,
                                     withdrawn)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-6)
            assert "NEW-1" not in {served.product_ids[r] for r in got[0]}
    assert served.shopper([THEMES[3][0], "NEW-3"], np.zeros(2)).unknown == 0
    # The new theme-3 product is found by its title alone, by a theme-3 shopper.
    ranked = served.recommend(served.shopper(THEMES[3][:2], np.zeros(2)), 10)[0]
    assert "NEW-3" in {served.product_ids[r] for r in ranked}
    assert json.loads(served.product_json[base.row_of[repriced]])["price"] == 9.5


@pytest.fixture(scope="module")
def worded(search_repository, tmp_path_factory) -> Path:
    """The analytic recommender over worded titles, embedded by the bundled encoder the
    pretrained search build exported, which the folder ships."""
    encoder = search_repository.parent / "artefacts" / "encoder"
    return shop.analytic_artefacts(tmp_path_factory.mktemp("worded"), encoder)


def test_a_product_added_live_is_served_by_its_title_before_anyone_buys_it(worded, tmp_path):
    """Through the recommend ensemble run in process (each step in its version folder, as
    Triton loads them): the shipped encoder embeds the new title in both steps, the served
    ranking is the one computed from first principles with the new product as a cold one, and
    a delete takes it out again."""
    from fusionrank.app.clients import LocalClient
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

    with LocalClient(repository) as client:
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
