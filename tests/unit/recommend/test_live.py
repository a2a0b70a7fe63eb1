"""The recommender follows a live catalogue (core/recommend/live.py): the grown recommender
ranks as one rebuilt from scratch over the changed catalogue (statistics and co-purchases
counted again from the purchases): a product added live is recommended by its title's
similarity before anyone buys it, a retitle moves its product's vector, a price change shows, a
delete is never recommended. tests/integration/test_recommend_live.py serves it."""

from __future__ import annotations

import json

import numpy as np

from fusionrank.core.live.segments import CatalogueChanges, LiveFolder
from fusionrank.core.recommend.live import LiveProducts, grown
from fusionrank.core.recommend.runtime import Recommender
from tests.support import shop
from tests.support.shop import PRODUCTS_BY_THEME as THEMES  # theme → its product ids
from tests.support.shop import publish, upsert


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
