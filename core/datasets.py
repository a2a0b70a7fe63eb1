"""Adapters from the shared real datasets to product catalogues.

The datasets are read where they lie (`../shared/datasets` beside the project, or a path the
user gives, or `$FUSIONRANK_DATASETS`); they are never copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from fusionrank.core.catalogue import Catalogue, CatalogueError, LoadReport, catalogue_from_records

HOMEDEPOT_FILE = "homedepot/relevance.csv.gz"
ONLINE_RETAIL_FILE = "online_retail/transactions.parquet"
REVIEWS_FILE = "reviews/womens_clothing_reviews.csv.gz"

# Online Retail stock codes that are fees, postage or manual adjustments, not products.
NON_PRODUCT_STOCK_CODES = frozenset({
    "POST", "DOT", "M", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "B", "m",
})
NON_PRODUCT_PREFIXES = ("DCGS", "gift_")


def datasets_dir(explicit: str | Path | None = None) -> Path:
    """The shared datasets folder: the given path, `$FUSIONRANK_DATASETS`, or ../shared/datasets."""
    candidate = Path(explicit or os.environ.get("FUSIONRANK_DATASETS") or "../shared/datasets")
    if not candidate.is_dir():
        raise FileNotFoundError(
            f"datasets folder {candidate} not found: pass --datasets PATH or set "
            "FUSIONRANK_DATASETS to the folder holding homedepot/, online_retail/ and reviews/")
    return candidate


def dataset_file(relative: str, root: str | Path | None = None) -> Path:
    path = datasets_dir(root) / relative
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} not found")
    return path


def read_homedepot(path: str | Path | None = None) -> pd.DataFrame:
    """The Home Depot relevance judgements (columns id, product_uid, product_title,
    search_term, relevance), read from a file of those columns."""
    path = Path(path) if path else dataset_file(HOMEDEPOT_FILE)
    frame = pd.read_csv(path, encoding="utf-8", dtype={"product_uid": str})
    expected = {"product_uid", "product_title", "search_term", "relevance"}
    missing = sorted(expected - set(frame.columns))
    if missing:
        raise CatalogueError(path, 1, missing[0], "required column missing")
    return frame


def homedepot_catalogue(path: str | Path | None = None) -> tuple[Catalogue, LoadReport]:
    """Every distinct Home Depot product; where a product has two titles (a few do, differing
    in whitespace or punctuation), the most frequent one wins."""
    frame = read_homedepot(path)
    titles = (frame.groupby(["product_uid", "product_title"]).size().rename("n").reset_index()
              .sort_values(["product_uid", "n"], ascending=[True, False])
              .drop_duplicates("product_uid"))
    records = ({"product_id": uid, "title": title}
               for uid, title in zip(titles.product_uid, titles.product_title, strict=True))
    return catalogue_from_records(records, source=str(path or HOMEDEPOT_FILE))


def is_product_stock_code(code: str) -> bool:
    return code not in NON_PRODUCT_STOCK_CODES and not code.startswith(NON_PRODUCT_PREFIXES)


def read_online_retail(path: str | Path | None = None) -> pd.DataFrame:
    path = Path(path) if path else dataset_file(ONLINE_RETAIL_FILE)
    frame = pd.read_parquet(path)
    expected = {"InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate",
                "UnitPrice", "CustomerID"}
    missing = sorted(expected - set(frame.columns))
    if missing:
        raise CatalogueError(path, None, missing[0], "required column missing")
    frame["StockCode"] = frame["StockCode"].astype(str).str.strip()
    return frame


def online_retail_catalogue(path: str | Path | None = None) -> tuple[Catalogue, LoadReport]:
    """The shop's products: stock codes that were sold (not cancelled, positive quantity and
    price), without fees and postage. A product's title is its most frequent description, its
    price the median unit price it sold at."""
    frame = read_online_retail(path)
    sold = frame[~frame.InvoiceNo.astype(str).str.startswith("C")
                 & (frame.Quantity > 0) & (frame.UnitPrice > 0)
                 & frame.StockCode.map(is_product_stock_code)
                 & frame.Description.notna()]
    title = (sold.groupby(["StockCode", "Description"]).size().rename("n").reset_index()
             .sort_values(["StockCode", "n"], ascending=[True, False])
             .drop_duplicates("StockCode").set_index("StockCode").Description)
    price = sold.groupby("StockCode").UnitPrice.median()
    records = ({"product_id": code, "title": title[code].strip().capitalize(),
                "price": round(float(price[code]), 2), "category": "gift-ware"}
               for code in title.index)
    return catalogue_from_records(records, source=str(path or ONLINE_RETAIL_FILE))
