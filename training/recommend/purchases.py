"""Online Retail invoice lines → clean purchases, a time split, histories and product statistics.

Cleaning rules (each dropped line is counted under the first rule it breaks, in this order):
1. cancellations: InvoiceNo starting with "C" (they reverse an earlier line, not a purchase);
2. returns: Quantity <= 0;
3. non-products: stock codes that are postage, fees, charity or manual adjustments
   (`fusionrank.core.datasets.is_product_stock_code`: POST, DOT, M, C2, D, S, BANK CHARGES,
   AMAZONFEE, CRUK, PADS, B, m, DCGS*, gift_*);
4. guest orders: no CustomerID (nobody to recommend to, and no history to learn from);
5. bad prices: UnitPrice <= 0 (free samples, write-offs and "adjust bad debt" lines).

A purchase is one (customer, invoice, product) line: several lines of the same product on one
invoice count once. The split is by time, never random: everything before a cut date is history,
and each *returning* customer (one who bought before the cut) is evaluated on the distinct
products they bought in the window after it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrank.core.datasets import is_product_stock_code, read_online_retail
from fusionrank.core.recommend.contract import MAX_HISTORY
from fusionrank.core.recommend.runtime import ProductStats

WINDOW_DAYS = 28  # the evaluation window, like the ~4 held-out weeks of the dataset
PURCHASE_COLUMNS = ["customer", "invoice", "product", "time"]


@dataclass
class CleaningReport:
    rows_read: int = 0
    cancellations: int = 0
    returns: int = 0
    non_products: int = 0
    guest_orders: int = 0
    bad_prices: int = 0
    duplicate_lines: int = 0  # same product twice on one invoice
    purchases: int = 0

    def summary(self) -> str:
        counts = {k: v for k, v in asdict(self).items() if k not in ("rows_read", "purchases")}
        dropped = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items())
        return f"{self.rows_read} invoice lines → {self.purchases} purchases (dropped {dropped})"


def clean_purchases(frame: pd.DataFrame) -> tuple[pd.DataFrame, CleaningReport]:
    """Raw invoice lines → purchases [customer, invoice, product, time], sorted by time."""
    report = CleaningReport(rows_read=len(frame))
    rules = [
        ("cancellations", lambda f: f.InvoiceNo.astype(str).str.startswith("C")),
        ("returns", lambda f: f.Quantity <= 0),
        ("non_products", lambda f: ~f.StockCode.astype(str).str.strip().map(is_product_stock_code)),
        ("guest_orders", lambda f: f.CustomerID.isna()),
        ("bad_prices", lambda f: ~(f.UnitPrice > 0)),
    ]
    for name, breaks in rules:
        bad = breaks(frame).to_numpy(bool)
        setattr(report, name, int(bad.sum()))
        frame = frame[~bad]
    purchases = pd.DataFrame({
        "customer": frame.CustomerID.astype(np.int64).astype(str),
        "invoice": frame.InvoiceNo.astype(str),
        "product": frame.StockCode.astype(str).str.strip(),
        "time": pd.to_datetime(frame.InvoiceDate),
    })
    deduplicated = purchases.drop_duplicates(["customer", "invoice", "product"])
    report.duplicate_lines = len(purchases) - len(deduplicated)
    report.purchases = len(deduplicated)
    return deduplicated.sort_values("time", kind="stable").reset_index(drop=True), report


def load_purchases(path: str | Path | None = None) -> tuple[pd.DataFrame, CleaningReport]:
    return clean_purchases(read_online_retail(path))


@dataclass(frozen=True)
class Window:
    """History is everything before `cut`; targets are purchases in [cut, end)."""

    cut: pd.Timestamp
    end: pd.Timestamp

    def shifted(self, days: int) -> Window:
        return Window(self.cut - pd.Timedelta(days=days), self.end - pd.Timedelta(days=days))


def last_window(purchases: pd.DataFrame, days: int = WINDOW_DAYS) -> Window:
    """The final `days` whole days of the data: the held-out test window."""
    end = purchases.time.max().normalize() + pd.Timedelta(days=1)
    return Window(end - pd.Timedelta(days=days), end)


def split(purchases: pd.DataFrame, window: Window) -> tuple[pd.DataFrame, pd.DataFrame]:
    before = purchases[purchases.time < window.cut]
    after = purchases[(purchases.time >= window.cut) & (purchases.time < window.end)]
    return before, after


def returning_targets(before: pd.DataFrame, after: pd.DataFrame) -> dict[str, set[str]]:
    """customer → distinct products bought after the cut, for customers who bought before it."""
    returning = after[after.customer.isin(set(before.customer))]
    return {c: set(g) for c, g in returning.groupby("customer").product}


@dataclass(frozen=True)
class History:
    products: list[str]  # one entry per purchase, oldest first
    times: np.ndarray  # int64 unix seconds


def histories(before: pd.DataFrame, customers: list[str],
              max_entries: int = MAX_HISTORY) -> dict[str, History]:
    """Each customer's most recent `max_entries` purchases, as a client would send them."""
    wanted = before[before.customer.isin(set(customers))]
    seconds = wanted.time.to_numpy("datetime64[s]").astype(np.int64)
    out: dict[str, History] = {}
    for customer, index in wanted.groupby("customer").indices.items():
        index = index[-max_entries:]  # `before` is sorted by time
        out[customer] = History(wanted["product"].to_numpy()[index].tolist(), seconds[index])
    return out


def unix_seconds(timestamp: pd.Timestamp) -> int:
    return int(pd.Timestamp(timestamp).value // 1_000_000_000)


def product_stats(before: pd.DataFrame, product_ids: list[str],
                  reference: pd.Timestamp) -> ProductStats:
    """Distinct buyers of each catalogue product over windows ending at `reference`."""
    def buyers(days: int | None, skip_days: int = 0) -> np.ndarray:
        end = reference - pd.Timedelta(days=skip_days)
        rows = before[before.time < end]
        if days is not None:
            rows = rows[rows.time >= end - pd.Timedelta(days=days)]
        counts = rows.groupby("product").customer.nunique()
        return counts.reindex(product_ids, fill_value=0).to_numpy(np.float64)

    invoices = before.groupby(["product", "customer"]).size()
    repeat = (invoices >= 2).groupby(level="product").sum().reindex(product_ids, fill_value=0)
    first = before.groupby("product").time.min().reindex(product_ids)
    weeks = ((reference - first).dt.total_seconds() / (7 * 86_400.0)).to_numpy(np.float64)
    return ProductStats(buyers_4w=buyers(28), buyers_prev_4w=buyers(28, skip_days=28),
                        buyers_1w=buyers(7), buyers_all=buyers(None),
                        repeat_buyers=repeat.to_numpy(np.float64),
                        weeks_since_first_sale=np.nan_to_num(weeks, nan=0.0))


def copurchase_matrix(before: pd.DataFrame, product_ids: list[str]) -> np.ndarray:
    """Item-item cosine over customers (1 where a customer ever bought the product), zero on
    the diagonal; float16 [products, products], to halve the artefact."""
    from scipy import sparse

    column = {pid: i for i, pid in enumerate(product_ids)}
    pairs = before[before["product"].isin(column)].drop_duplicates(["customer", "product"])
    customers = pairs.customer.astype("category").cat.codes.to_numpy()
    products = pairs["product"].map(column).to_numpy()
    bought = sparse.csr_matrix((np.ones(len(pairs), np.float32), (customers, products)),
                               shape=(int(customers.max(initial=-1)) + 1, len(product_ids)))
    together = (bought.T @ bought).toarray()
    norms = np.sqrt(np.maximum(np.diag(together), 1.0))
    cosine = together / norms[:, None] / norms[None, :]
    np.fill_diagonal(cosine, 0.0)
    return cosine.astype(np.float16)
