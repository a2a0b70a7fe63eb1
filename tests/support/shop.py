"""A tiny synthetic shop for the recommendation tests, built in code (no dataset, no network).

24 products in 4 themes; each product's "embedding" is its theme's direction plus noise, as
title embeddings of alike products would be. 48 customers each favour one theme and buy from
it every few days over 20 weeks, with the odd dirty line (cancellation, return, postage, guest
order, free sample) that the cleaning must drop.
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


def product_ids() -> list[str]:
    return [f"{10000 + i}" for i in range(THEMES * PER_THEME)]


def theme_of(product_id: str) -> int:
    return (int(product_id) - 10000) // PER_THEME


def embeddings(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    directions = np.eye(DIM)[:THEMES]
    rows = np.repeat(directions, PER_THEME, axis=0) + 0.3 * rng.normal(size=(THEMES * PER_THEME,
                                                                                DIM))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def product_json() -> list[str]:
    return [json.dumps({"product_id": pid, "title": f"Theme {theme_of(pid)} item {pid}",
                        "description": "", "category": "gift-ware", "brand": "", "price": 1.0})
            for pid in product_ids()]


def transactions(customers: int = 48, seed: int = 0) -> pd.DataFrame:
    """Raw invoice lines with the columns of the Online Retail file."""
    rng = np.random.default_rng(seed)
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


def catalogue():
    from fusionrank.training.recommend.evaluate import Catalogue

    return Catalogue(product_json(), embeddings())


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
# so every served score can be computed here from first principles (`expected_ranking`).
WEIGHTS = {"feedback": 1.0, "similarity": 0.5}
HALF_LIFE_DAYS = 30.0


def analytic_head(path: Path) -> Path:
    """An ONNX graph with the head's inputs whose logit is features[:, 0] (bought_log_count)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fusionrank.core.recommend.runtime import FEATURE_NAMES, HEAD_INPUTS

    pick = np.zeros((len(FEATURE_NAMES), 1), np.float32)
    pick[FEATURE_NAMES.index("bought_log_count"), 0] = 1.0
    inputs = [helper.make_tensor_value_info(HEAD_INPUTS[0], TensorProto.FLOAT,
                                            ["n", len(FEATURE_NAMES)])]
    inputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", DIM])
               for name in HEAD_INPUTS[1:]]
    graph = helper.make_graph(
        [helper.make_node("MatMul", [HEAD_INPUTS[0], "pick"], ["logit"])], "analytic_head",
        inputs, [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["n", 1])],
        [numpy_helper.from_array(pick, "pick")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def analytic_artefacts(out: Path) -> Path:
    """The served folder of a recommender with the analytic head, statistics as of the last
    two weeks' cut of the tiny shop's (cleaned) purchases."""
    from fusionrank.core.recommend.runtime import OnnxRecommendHead
    from fusionrank.training.recommend.evaluate import recommender_at
    from fusionrank.training.recommend.purchases import clean_purchases, last_window

    out.mkdir(parents=True, exist_ok=True)
    purchases, _ = clean_purchases(transactions())
    head = analytic_head(out / "analytic_head.onnx")
    served = recommender_at(purchases, last_window(purchases, days=14).cut, catalogue(),
                            OnnxRecommendHead(head), FusionWeights(WEIGHTS),
                            half_life_days=HALF_LIFE_DAYS)
    return serving_folder(out, served, head)


def serving_folder(out: Path, recommender: Recommender, head: Path) -> Path:
    from fusionrank.training.recommend.evaluate import write_serving

    index = out / "index"
    index.mkdir(parents=True, exist_ok=True)
    np.save(index / "embeddings.npy", recommender.embeddings)
    (index / "products.jsonl").write_text("\n".join(recommender.product_json) + "\n")
    write_serving(out / "serving", recommender, index, head)
    return out / "serving"


def expected_ranking(folder: Path, history: list[str | tuple[str, int]], k: int,
                     exclude_purchased: bool = False) -> list[tuple[str, float]]:
    """What the analytic recommender in `folder` must answer, computed here in plain numpy from
    its embeddings, ids and reference time: S = log(1 + purchases of p) + 0.5 · cos(shopper, p),
    the shopper being the recency-weighted (2^(-days / 30)) mean of their products' embeddings;
    every product of the tiny catalogue is a candidate; ties go to the lower catalogue row.
    (A history with nothing known is answered by popularity, checked elsewhere.)"""
    ids = [json.loads(line)["product_id"]
           for line in (folder / "products.jsonl").read_text().splitlines()]
    embeddings = np.load(folder / "embeddings.npy").astype(np.float64)
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
    scores = {row: np.log1p(bought.count(row)) + 0.5 * float(embeddings[row] @ vector)
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
