"""A tiny synthetic shop for the recommendation tests, built in code (no dataset, no network).

24 products in 4 themes; each product's "embedding" is its theme's direction plus noise, as
title embeddings of alike products would be. 48 customers each favour one theme and buy from
it every few days over 20 weeks, with the odd dirty line (cancellation, return, postage, guest
order, free sample) that the cleaning must drop.

With `launches=True` the shop also launches a new product per theme every few weeks (24 more,
the last after the final cut, so never sold before it): its theme's customers add the newest
one to some invoices, so every window holds purchases of products hardly anyone had bought
before its cut, which only their text (the theme direction) can find.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrank.core.fusion import FusionWeights
from fusionrank.core.recommend.runtime import Recommender

THEMES = 4
PER_THEME = 6
DIM = 16
START = pd.Timestamp("2011-01-03")
DAYS = 200  # enough for the evaluation's six 4-week windows
# Launch days (with `launches=True`): one new product per theme on each, inside every window
# of the evaluation and once after the last cut (200 − 28 = 172).
LAUNCH_DAYS = (40, 68, 96, 124, 152, 180, 190)
LAUNCH_SHARE = 0.4  # the share of a theme's invoices that add its newest product


def product_ids(launches: bool = False) -> list[str]:
    count = THEMES * PER_THEME + (THEMES * len(LAUNCH_DAYS) if launches else 0)
    return [f"{10000 + i}" for i in range(count)]


def theme_of(product_id: str) -> int:
    index = int(product_id) - 10000
    return index // PER_THEME if index < THEMES * PER_THEME else index % THEMES


def launched(theme: int, day: int) -> str | None:
    """The theme's newest product launched on or before `day` (None before the first)."""
    done = [i for i, launch in enumerate(LAUNCH_DAYS) if launch <= day]
    return f"{10000 + THEMES * PER_THEME + THEMES * done[-1] + theme}" if done else None


def embeddings(seed: int = 0, launches: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    directions = np.eye(DIM)[:THEMES]
    rows = np.repeat(directions, PER_THEME, axis=0) + 0.3 * rng.normal(size=(THEMES * PER_THEME,
                                                                                DIM))
    if launches:
        extra = np.tile(directions, (len(LAUNCH_DAYS), 1))
        rows = np.concatenate([rows, extra + 0.3 * rng.normal(size=extra.shape)])
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


# With `worded=True` a product's title names its theme in words, so that a real encoder's
# vectors of the titles group by theme as the themes' directions do (the live catalogue's tests
# embed new products' titles with one).
THEME_WORDS = ("heart candle holder", "ceramic tea cup", "wooden christmas star",
               "paper party bunting")
COLOURS = ("red", "blue", "green", "white", "pink", "gold", "silver", "black", "ivory")


def title(product_id: str, worded: bool = False) -> str:
    if not worded:
        return f"Theme {theme_of(product_id)} item {product_id}"
    return f"{COLOURS[int(product_id) % len(COLOURS)]} {THEME_WORDS[theme_of(product_id)]}"


def product_json(launches: bool = False, worded: bool = False) -> list[str]:
    return [json.dumps({"product_id": pid, "title": title(pid, worded),
                        "description": "", "category": "gift-ware", "brand": "", "price": 1.0})
            for pid in product_ids(launches)]


def transactions(customers: int = 48, seed: int = 0, launches: bool = False) -> pd.DataFrame:
    """Raw invoice lines with the columns of the Online Retail file. The lines without
    `launches` are the same with it (launch purchases draw from their own generator)."""
    rng = np.random.default_rng(seed)
    launch_rng = np.random.default_rng(seed + 1)
    ids = product_ids()
    lines = []
    invoice = 500000
    for customer in range(customers):
        theme = customer % THEMES
        favourites = ids[theme * PER_THEME:(theme + 1) * PER_THEME]
        day = int(rng.integers(0, 7))
        while day < DAYS:
            invoice += 1
            time = START + pd.Timedelta(days=day, hours=10)
            for product in rng.choice(favourites, size=3, replace=False):
                lines.append((str(invoice), product, 6, time, 2.0, 12000.0 + customer))
            newest = launched(theme, day) if launches else None
            if newest and launch_rng.random() < LAUNCH_SHARE:
                lines.append((str(invoice), newest, 2, time, 3.0, 12000.0 + customer))
            day += int(rng.integers(3, 9))
    dirty = [("C900001", ids[0], -6, START + pd.Timedelta(days=5), 2.0, 12000.0),  # cancellation
             ("900002", ids[1], -2, START + pd.Timedelta(days=6), 2.0, 12001.0),  # return
             ("900003", "POST", 1, START + pd.Timedelta(days=7), 18.0, 12002.0),  # postage
             ("900004", ids[2], 3, START + pd.Timedelta(days=8), 2.0, np.nan),  # guest order
             ("900005", ids[3], 1, START + pd.Timedelta(days=9), 0.0, 12003.0)]  # free sample
    frame = pd.DataFrame(lines + dirty, columns=["InvoiceNo", "StockCode", "Quantity",
                                                 "InvoiceDate", "UnitPrice", "CustomerID"])
    frame["Description"] = frame.StockCode.map(lambda code: f"ITEM {code}")
    frame["Country"] = "United Kingdom"
    return frame


def catalogue(launches: bool = False):
    from fusionrank.training.recommend.evaluate import Catalogue

    return Catalogue(product_json(launches), embeddings(launches=launches))


def trained_artefacts(out: Path, epochs: int = 3) -> Path:
    """Clean, train a head on one window, export it, fit nothing (feedback weight 1, similarity
    0.5), and write the served artefact folder as of the last window's cut."""
    import torch

    from fusionrank.core.recommend.runtime import OnnxRecommendHead
    from fusionrank.export.recommend.head import export_head
    from fusionrank.training.recommend.evaluate import recommender_at
    from fusionrank.training.recommend.head import train_head, window_examples
    from fusionrank.training.recommend.purchases import clean_purchases, last_window

    torch.set_num_threads(1)
    purchases, _ = clean_purchases(transactions())
    shop = catalogue()
    test = last_window(purchases, days=14)
    train = test.shifted(14)
    examples = window_examples(recommender_at(purchases, train.cut, shop), purchases, train)
    model, _ = train_head(examples, shop.embeddings, epochs=epochs, batch_size=256)
    exported = export_head(model, out / "head.onnx", (
        examples.features, examples.shoppers[examples.shopper], shop.embeddings[examples.row]))
    served = recommender_at(purchases, test.cut, shop, OnnxRecommendHead(exported.path),
                            FusionWeights(WEIGHTS))
    return serving_folder(out, served, exported.path)


# The analytic recommender: its head's logit is log(1 + times the shopper bought the product),
# its cold head's the cosine similarity, so every served score can be computed here from first
# principles (`expected_ranking`). It serves the shop with launches: the newest launches are
# cold products (fewer than 5 buyers before the cut).
WEIGHTS = {"feedback": 1.0, "similarity": 0.5}
COLD_START = (2.0, -0.25)  # a cold product scores 2 · cosine − 0.25
HALF_LIFE_DAYS = 30.0


def analytic_head(path: Path, feature: str = "bought_log_count", dim: int = DIM) -> Path:
    """An ONNX graph with the head's inputs (embeddings of `dim`) whose logit is one feature's
    column."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fusionrank.core.recommend.runtime import FEATURE_NAMES, HEAD_INPUTS

    pick = np.zeros((len(FEATURE_NAMES), 1), np.float32)
    pick[FEATURE_NAMES.index(feature), 0] = 1.0
    inputs = [helper.make_tensor_value_info(HEAD_INPUTS[0], TensorProto.FLOAT,
                                            ["n", len(FEATURE_NAMES)])]
    inputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", dim])
               for name in HEAD_INPUTS[1:]]
    graph = helper.make_graph(
        [helper.make_node("MatMul", [HEAD_INPUTS[0], "pick"], ["logit"])], "analytic_head",
        inputs, [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["n", 1])],
        [numpy_helper.from_array(pick, "pick")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def analytic_recommender(out: Path, shop=None):
    """The analytic recommender over `shop` (a training Catalogue; default: the tiny shop with
    launches), its statistics as of the last two weeks' cut of the tiny shop's (cleaned)
    purchases, its heads written into `out`."""
    from fusionrank.core.recommend.runtime import ColdStart, OnnxRecommendHead
    from fusionrank.training.recommend.evaluate import recommender_at
    from fusionrank.training.recommend.purchases import clean_purchases, last_window

    out.mkdir(parents=True, exist_ok=True)
    shop = shop or catalogue(launches=True)
    purchases, _ = clean_purchases(transactions(launches=True))
    dim = shop.embeddings.shape[1]
    head = analytic_head(out / "analytic_head.onnx", dim=dim)
    cold_head = analytic_head(out / "analytic_cold_head.onnx", "similarity", dim)
    return recommender_at(purchases, last_window(purchases, days=14).cut, shop,
                          OnnxRecommendHead(head), FusionWeights(WEIGHTS),
                          OnnxRecommendHead(cold_head),
                          ColdStart(*COLD_START, provenance="analytic: set by the tests"),
                          half_life_days=HALF_LIFE_DAYS), head, cold_head


def analytic_artefacts(out: Path, encoder: Path | None = None) -> Path:
    """The served folder of the analytic recommender, launches included. With `encoder` (an
    exported encoder's folder) the titles are worded, their embeddings that encoder's, and the
    folder ships it, as `fusionrank train-recommender` ships its own."""
    shop = None
    if encoder is not None:
        from fusionrank.core.recommend.live import folder_encoder
        from fusionrank.training.recommend.evaluate import Catalogue

        lines = product_json(launches=True, worded=True)
        vectors = folder_encoder(encoder)([json.loads(line)["title"] for line in lines])
        shop = Catalogue(lines, vectors, encoder=encoder)
    served, head, cold_head = analytic_recommender(out, shop)
    return serving_folder(out, served, head, cold_head, encoder)


def serving_folder(out: Path, recommender: Recommender, head: Path,
                   cold_head: Path | None = None, encoder: Path | None = None) -> Path:
    from fusionrank.training.recommend.evaluate import write_serving

    index = out / "index"
    index.mkdir(parents=True, exist_ok=True)
    np.save(index / "embeddings.npy", recommender.embeddings)
    (index / "products.jsonl").write_text("\n".join(recommender.product_json) + "\n")
    write_serving(out / "serving", recommender, index, head, cold_head, encoder)
    return out / "serving"


def expected_ranking(folder: Path, history: list[str | tuple[str, int]], k: int,
                     exclude_purchased: bool = False,
                     added: dict[str, np.ndarray] | None = None) -> list[tuple[str, float]]:
    """What the analytic recommender in `folder` must answer, computed here in plain numpy from
    its embeddings, ids, buyer counts and reference time: S = log(1 + purchases of p) +
    0.5 · cos(shopper, p), or 2 · cos(shopper, p) − 0.25 for a product fewer than 5 shoppers
    had bought (cold), the shopper being the recency-weighted (2^(-days / 30)) mean of their
    products' embeddings; every product of the tiny catalogue is a candidate; ties go to the
    lower catalogue row. `added`: products a live catalogue added (id → title vector), after
    the catalogue's rows, bought by nobody yet. (A history with nothing known is answered by
    popularity, checked elsewhere.)"""
    added = added or {}
    ids = [json.loads(line)["product_id"]
           for line in (folder / "products.jsonl").read_text().splitlines()] + list(added)
    embeddings = np.load(folder / "embeddings.npy").astype(np.float64)
    if added:
        embeddings = np.concatenate([embeddings, np.stack(list(added.values()))])
    now = json.loads((folder / "recommender.json").read_text())["reference_time"]
    purchases = [(h, 0) if isinstance(h, str) else h for h in history]
    known = [(ids.index(pid), when) for pid, when in purchases if pid in ids]
    assert known, "a history with nothing known is answered by popularity"
    vector = np.zeros(embeddings.shape[1])
    for row, when in known:
        days = max((now - when) / 86_400, 0.0) if when > 0 else 0.0
        vector += 2.0 ** (-days / HALF_LIFE_DAYS) * embeddings[row]
    vector /= np.linalg.norm(vector)
    bought = [row for row, _ in known]
    with np.load(folder / "product_stats.npz") as stats:
        cold = np.concatenate([stats["buyers_all"] < 5, np.ones(len(added), bool)])
    scale, offset = COLD_START
    scores = {row: (scale * float(embeddings[row] @ vector) + offset if cold[row] else
                    np.log1p(bought.count(row)) + 0.5 * float(embeddings[row] @ vector))
              for row in range(len(ids)) if not (exclude_purchased and row in bought)}
    order = sorted(scores, key=lambda row: (-round(scores[row] / 1e-6), row))[:k]
    return [(ids[row], scores[row]) for row in order]


def expected_popular(folder: Path, k: int) -> list[tuple[str, float]]:
    """A history with nothing known: the products with most distinct buyers in the last four
    weeks (then of all time, then the lower row), scored log(1 + those buyers)."""
    ids = [json.loads(line)["product_id"]
           for line in (folder / "products.jsonl").read_text().splitlines()]
    with np.load(folder / "product_stats.npz") as stats:
        recent, ever = stats["buyers_4w"], stats["buyers_all"]
    order = sorted(range(len(ids)), key=lambda r: (-recent[r], -ever[r], r))[:k]
    return [(ids[r], float(np.log1p(recent[r]))) for r in order]


def load(folder: Path) -> Recommender:
    return Recommender.load(folder)


# --- a live catalogue over the shop (the recommender follows it: core/recommend/live.py) ------

PRODUCTS_BY_THEME = {t: [pid for pid in product_ids() if theme_of(pid) == t] for t in range(THEMES)}


def upsert(product_id: str, title: str, price: float = 1.0) -> dict:
    return {"op": "upsert", "product": {"product_id": product_id, "title": title,
                                        "category": "gift-ware", "price": price}}


def publish(live, sequence: int, *lines: dict) -> None:
    """One change set into the LiveFolder `live` as the catalogue model leaves it (the
    search's vectors do not matter here: the recommender embeds with its own encoder)."""
    from fusionrank.core.live.changes import parse_changes
    from fusionrank.core.live.segments import LiveState

    changes = parse_changes("\n".join(json.dumps(line) for line in lines))
    live.write_segment(sequence, changes, np.zeros((len(changes.upserts), 4), np.float32))
    live.publish(LiveState("1", tuple(range(1, sequence + 1))))

