"""Purchase cleaning, the time split, histories and product statistics (synthetic data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusionrank.training.recommend.purchases import (
    Window,
    clean_purchases,
    copurchase_matrix,
    histories,
    last_window,
    product_stats,
    returning_targets,
    split,
    unix_seconds,
)
from tests.support import shop


def raw(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["InvoiceNo", "StockCode", "Quantity", "InvoiceDate",
                                        "UnitPrice", "CustomerID"])
    frame["Description"] = "ITEM"
    return frame


DAY = pd.Timestamp("2011-05-02 10:00")


def test_each_cleaning_rule_drops_its_lines_and_counts_them():
    frame = raw([
        ("536365", "85123A", 6, DAY, 2.55, 17850.0),  # kept
        ("C536379", "85123A", -6, DAY, 2.55, 17850.0),  # cancellation
        ("536380", "71053", -2, DAY, 3.39, 17850.0),  # return without a C invoice
        ("536381", "POST", 1, DAY, 18.0, 17850.0),  # postage
        ("536382", "DCGS0003", 1, DAY, 5.0, 17850.0),  # manual adjustment family
        ("536383", "gift_0001_20", 1, DAY, 20.0, 17850.0),  # gift voucher
        ("536384", "71053", 2, DAY, 3.39, np.nan),  # guest order
        ("536385", "71053", 2, DAY, 0.0, 17850.0),  # free sample
        ("A563185", "B", 1, DAY, -11062.06, 17850.0),  # "adjust bad debt"
        ("536365", "85123A", 6, DAY, 2.55, 17850.0),  # same product twice on one invoice
    ])
    purchases, report = clean_purchases(frame)
    assert list(purchases.columns) == ["customer", "invoice", "product", "time"]
    assert purchases[["customer", "invoice", "product"]].values.tolist() == [
        ["17850", "536365", "85123A"]]
    assert (report.cancellations, report.returns, report.non_products, report.guest_orders,
            report.bad_prices, report.duplicate_lines) == (1, 1, 4, 1, 1, 1)
    assert report.rows_read == 10 and report.purchases == 1
    assert "1 cancellations" in report.summary()


def test_stock_codes_are_stripped_and_customer_ids_are_integers_as_text():
    purchases, _ = clean_purchases(raw([("536365", " 85123A ", 1, DAY, 1.0, 17850.0)]))
    assert purchases["product"].tolist() == ["85123A"]
    assert purchases.customer.tolist() == ["17850"]


def test_fixture_dirty_lines_are_all_dropped():
    purchases, report = clean_purchases(shop.transactions())
    assert report.cancellations == report.returns == report.guest_orders == 1
    assert report.non_products == report.bad_prices == 1
    assert set(purchases["product"]) <= set(shop.product_ids())


def test_last_window_is_the_final_whole_days_and_the_split_never_leaks():
    purchases, _ = clean_purchases(shop.transactions())
    window = last_window(purchases, days=28)
    assert window.end == purchases.time.max().normalize() + pd.Timedelta(days=1)
    assert window.end - window.cut == pd.Timedelta(days=28)
    before, after = split(purchases, window)
    assert before.time.max() < window.cut <= after.time.min()
    assert len(before) + len(after) == len(purchases)
    earlier = window.shifted(28)
    assert earlier.end == window.cut  # validation ends where test begins


def test_targets_are_returning_customers_only_and_distinct_products():
    purchases = pd.DataFrame({
        "customer": ["a", "a", "b", "a", "a", "c"],
        "invoice": ["1", "2", "3", "4", "4", "5"],
        "product": ["p1", "p2", "p1", "p3", "p1", "p2"],
        "time": pd.to_datetime(["2011-01-01", "2011-01-05", "2011-01-06", "2011-02-02",
                                "2011-02-02", "2011-02-03"]),
    })
    window = Window(pd.Timestamp("2011-02-01"), pd.Timestamp("2011-03-01"))
    targets = returning_targets(*split(purchases, window))
    assert targets == {"a": {"p1", "p3"}}  # c is new, b did not come back


def test_histories_keep_the_most_recent_entries_oldest_first():
    times = pd.date_range("2011-01-01", periods=5, freq="D")
    before = pd.DataFrame({"customer": "a", "invoice": [str(i) for i in range(5)],
                           "product": ["p0", "p1", "p2", "p3", "p4"], "time": times})
    history = histories(before, ["a"], max_entries=3)["a"]
    assert history.products == ["p2", "p3", "p4"]
    assert history.times.tolist() == [unix_seconds(t) for t in times[2:]]


def test_product_stats_count_distinct_buyers_per_window_before_the_reference():
    reference = pd.Timestamp("2011-03-01")
    before = pd.DataFrame({
        "customer": ["a", "b", "a", "c", "a"],
        "invoice": ["1", "2", "3", "4", "5"],
        "product": ["p", "p", "p", "p", "q"],
        "time": reference - pd.to_timedelta([2, 3, 10, 40, 100], unit="D"),
    })
    stats = product_stats(before, ["p", "q", "new"], reference)
    assert stats.buyers_1w.tolist() == [2, 0, 0]
    assert stats.buyers_4w.tolist() == [2, 0, 0]  # a twice counts once
    assert stats.buyers_prev_4w.tolist() == [1, 0, 0]
    assert stats.buyers_all.tolist() == [3, 1, 0]
    assert stats.repeat_buyers.tolist() == [1, 0, 0]
    assert stats.weeks_since_first_sale[0] == pytest.approx(40 / 7)
    assert stats.weeks_since_first_sale[2] == 0.0  # never sold: new
    assert stats.popularity_order().tolist()[:1] == [0]


def test_copurchase_is_a_cosine_with_an_empty_diagonal():
    before = pd.DataFrame({"customer": ["a", "a", "b", "b", "c"], "invoice": "1",
                           "product": ["x", "y", "x", "y", "z"], "time": DAY})
    matrix = copurchase_matrix(before, ["x", "y", "z", "never"]).astype(np.float32)
    assert matrix[0, 1] == pytest.approx(1.0) and matrix[1, 0] == pytest.approx(1.0)
    assert matrix[0, 2] == 0.0 and np.all(np.diag(matrix) == 0.0)
    assert np.all(matrix[3] == 0.0)
