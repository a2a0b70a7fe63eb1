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

from fusionrank.ranking import FusionWeights
from fusionrank.recommender import Recommender

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
    from fusionrank.training.recommend_eval import Catalogue

    return Catalogue(product_json(), embeddings())


def trained_artefacts(out: Path, epochs: int = 3) -> Path:
    """Clean, train a head on one window, export it, fit nothing (feedback weight 1, similarity
    0.5), and write the served artefact folder as of the last window's cut."""
    import torch

    from fusionrank.export.recommend_head import export_head
    from fusionrank.recommender import FeedbackHead
    from fusionrank.training.purchases import clean_purchases, last_window
    from fusionrank.training.recommend_eval import recommender_at, write_serving
    from fusionrank.training.recommend_head import train_head, window_examples

    torch.set_num_threads(1)
    purchases, _ = clean_purchases(transactions())
    shop = catalogue()
    test = last_window(purchases, days=14)
    train = test.shifted(14)
    examples = window_examples(recommender_at(purchases, train.cut, shop), purchases, train)
    model, _ = train_head(examples, shop.embeddings, epochs=epochs, batch_size=256)
    exported = export_head(model, out / "head.onnx", (
        examples.features, examples.shoppers[examples.shopper], shop.embeddings[examples.row]))
    served = recommender_at(purchases, test.cut, shop, FeedbackHead(exported.path),
                            FusionWeights({"feedback": 1.0, "similarity": 0.5}))
    index = out / "index"
    index.mkdir(parents=True, exist_ok=True)
    np.save(index / "embeddings.npy", shop.embeddings)
    (index / "products.jsonl").write_text("\n".join(shop.product_json) + "\n")
    write_serving(out / "serving", served, index, exported.path)
    return out / "serving"


def load(folder: Path) -> Recommender:
    return Recommender.load(folder)
