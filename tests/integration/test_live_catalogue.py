"""The live catalogue (issue 24): change sets applied to a built repository serve what a full
rebuild of the final catalogue serves, and a running server takes them while it serves."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fusionrank.core.catalogue import Catalogue, Product
from fusionrank.model_repository.search.ensemble import ServingOptions

K = 20
LIVE = ServingOptions(onnx_threads=1, max_queue_delay_us=100, response_cache=False,
                      live_catalogue=True)


@dataclass
class Shop:
    """The catalogue a sequence of change sets leaves: ids in the order a rebuild of it serves
    them (a product keeps its place until it changes; a changed or new one goes last), kept
    here by plain list operations, independently of the code under test."""

    products: list[Product]

    def apply(self, upserts: list[Product], deletes: list[str]) -> None:
        touched = {p.product_id for p in upserts} | set(deletes)
        self.products = [p for p in self.products if p.product_id not in touched] + upserts

    def ids(self) -> set[str]:
        return {p.product_id for p in self.products}


def change_sets(base: list[Product], rng: random.Random) -> list[tuple[list[Product], list[str]]]:
    """Four sets of upserts (new products, changed titles and prices) and deletes, judged
    products among them; a product deleted then added again; an unknown id deleted."""
    words = sorted({w for p in base for w in p.title.split()})
    shop = Shop(list(base))
    sets = []
    for step in range(4):
        held = sorted(shop.ids())
        changed = [replace(p, title=f"{p.title} {rng.choice(words)}", price=float(step + 1))
                   for p in base if p.product_id in rng.sample(held, 12)]
        new = [Product(f"NEW-{step}-{i}", " ".join(rng.sample(words, 5)), price=9.5 + i)
               for i in range(8)]
        deletes = [i for i in rng.sample(held, 10)
                   if i not in {p.product_id for p in changed}]
        if step == 2:  # one of the first set's deletes comes back, with its old title
            back = next(p for p in base if p.product_id in sets[0][1])
            new.append(back)
            deletes.append("NOT-A-PRODUCT")
        sets.append((changed + new, deletes))
        shop.apply(changed + new, [d for d in deletes if d in shop.ids()])
    return sets


def change_lines(upserts: list[Product], deletes: list[str]) -> bytes:
    rows = [{"op": "upsert", "product": {k: v for k, v in p.to_dict().items()
                                         if k not in ("review_count", "review_sentiment")}}
            for p in upserts] + [{"op": "delete", "product_id": d} for d in deletes]
    return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")


def build(catalogue: Catalogue, model_dir: Path, out: Path, run: Path, cache: Path,
          options: ServingOptions) -> Path:
    from fusionrank.app.build import build_search_repository

    return build_search_repository(catalogue, model_dir, out, options, run_dir=run,
                                   embedding_cache=cache)


def search(repository: Path, queries: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from fusionrank.model_repository.runner import InProcessEnsemble

    answer = InProcessEnsemble(repository, "search")({
        "QUERY": np.array([[q.encode()] for q in queries], dtype=object),
        "K": np.full((len(queries), 1), K, dtype=np.int32),
        "DETAIL": np.array([[b"ids"]] * len(queries), dtype=object)})
    return answer["PRODUCT_IDS"], answer["SCORES"]


def test_after_change_sets_the_served_ranking_equals_a_rebuild_of_the_final_catalogue(
        trained_run, model_dir, tmp_path):
    from fusionrank.core.datasets import homedepot_catalogue
    from fusionrank.model_repository.runner import load_step

    base, _ = homedepot_catalogue(trained_run.data)
    sets = change_sets(base.products, random.Random(11))
    cache = tmp_path / "embedding_cache"
    repository = build(base, model_dir, tmp_path / "live", trained_run.run, cache, LIVE)
    apply = load_step(repository, "catalogue")
    shop = Shop(list(base.products))
    for upserts, deletes in sets:
        (answer,) = apply([{"CHANGES": np.array([[change_lines(upserts, deletes)]],
                                                dtype=object)}])
        report = json.loads(answer["REPORT"].reshape(-1)[0])
        known = [d for d in deletes if d in shop.ids()]
        assert report["applied"]["deleted"] == known
        assert report["applied"]["unknown_deletes"] == [d for d in deletes if d not in known]
        shop.apply(upserts, known)
        assert report["status"]["products"] == len(shop.products)
    queries = trained_run.queries[:40] + [p.title for p in sets[1][0][-3:]]
    live_ids, live_scores = search(repository, queries)

    rebuilt = build(Catalogue(shop.products, source="final"), model_dir, tmp_path / "rebuilt",
                    trained_run.run, cache, replace(LIVE, live_catalogue=False))
    ids, scores = search(rebuilt, queries)

    np.testing.assert_allclose(live_scores, scores, atol=1e-5)
    for q in range(len(queries)):
        for i in np.flatnonzero(live_ids[q] != ids[q]):  # only near-ties may swap places
            neighbours = live_scores[q][max(i - 1, 0):i + 2]
            assert np.ptp(neighbours) < 2e-5, (queries[q], i, live_ids[q], ids[q])
    served = {i.decode() for i in live_ids.ravel()}
    assert not served - shop.ids()  # nothing deleted or unknown is served
    for title, row in zip(queries[-3:], live_ids[-3:], strict=True):  # new products are found
        assert next(p.product_id for p in sets[1][0] if p.title == title).encode() in row
