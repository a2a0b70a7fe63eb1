"""CatalogueRows (core/live/rows.py): after any sequence of change sets, the live rows hold
exactly the products a plain dict of the catalogue holds, and earlier views stay as they were."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from fusionrank.core.live.changes import parse_changes
from fusionrank.core.live.rows import CatalogueRows


def test_a_change_set_appends_rows_and_kills_the_ones_it_replaces():
    before = CatalogueRows.of_base(["A", "B", "C"])
    after, done = before.apply(parse_changes([
        json.dumps({"op": "upsert", "product": {"product_id": "B", "title": "new B"}}),
        json.dumps({"op": "upsert", "product": {"product_id": "D", "title": "D"}}),
        json.dumps({"op": "delete", "product_id": "C"}),
        json.dumps({"op": "delete", "product_id": "Z"})]))
    assert done.added == {"B": 3, "D": 4} and done.killed.tolist() == [1, 2]
    assert done.report.unknown_deletes == ["Z"]
    assert [after.row_of(i) for i in "ABCDZ"] == [0, 3, None, 4, None]
    assert after.live.tolist() == [True, False, False, True, True]
    assert (after.rows, after.products) == (5, 3) and after.dead_share == pytest.approx(0.4)
    assert [after.id_of(r) for r in range(5)] == ["A", "B", "C", "B", "D"]  # dead rows too
    assert after.appended == ("B", "D") and after.live_ids() == {"A": 0, "B": 3, "D": 4}
    # The view a request in flight holds is unchanged.
    assert [before.row_of(i) for i in "ABCD"] == [0, 1, 2, None] and before.rows == 3
    assert before.appended == () and before.live_ids() == {"A": 0, "B": 1, "C": 2}


def test_an_update_in_place_keeps_its_row_and_moves_nothing():
    before = CatalogueRows.of_base(["A", "B", "C"])
    repriced_and_retitled = parse_changes([
        json.dumps({"op": "upsert", "product": {"product_id": "B", "title": "B", "price": 2.0}}),
        json.dumps({"op": "upsert", "product": {"product_id": "C", "title": "new C"}})])
    after, done = before.apply(repriced_and_retitled, updated={"B"})
    assert done.updated == {"B": 1} and done.added == {"C": 3}
    assert done.killed.tolist() == [2] and done.moved
    assert done.report.changed == ["B", "C"]  # reported as changed all the same
    assert [after.row_of(i) for i in "ABC"] == [0, 1, 3]
    prices = parse_changes([json.dumps({"op": "upsert", "product": {
        "product_id": "A", "title": "A", "price": 1.0}})])
    again, done = after.apply(prices, updated={"A"})
    assert not done.moved and again.rows == after.rows
    assert np.array_equal(again.live, after.live)
    with pytest.raises(ValueError, match="updated in place"):
        after.apply(prices, updated={"B"})  # not upserted by the set
    with pytest.raises(ValueError, match="updated in place"):
        after.apply(parse_changes([json.dumps({"op": "upsert", "product": {
            "product_id": "Z", "title": "Z"}})]), updated={"Z"})  # not held


def test_any_sequence_of_change_sets_leaves_exactly_the_final_catalogue_live():
    rng = random.Random(24)
    catalogue = {f"P{i}": f"title {i}" for i in range(200)}
    rows = CatalogueRows.of_base(list(catalogue))
    titles = list(catalogue.values())  # by row, as a row-indexed artefact would grow
    views = []
    for step in range(30):
        known, lines = list(catalogue), []
        picked = rng.sample(known, 8) + [f"N{step}-{j}" for j in range(rng.randint(0, 5))]
        for product_id in picked:
            if product_id in catalogue and rng.random() < 0.4:
                lines.append(json.dumps({"op": "delete", "product_id": product_id}))
                del catalogue[product_id]
            else:
                title = f"title {product_id} v{step}"
                lines.append(json.dumps({"op": "upsert", "product": {
                    "product_id": product_id, "title": title}}))
                catalogue[product_id] = title
        views.append((rows, rows.live_ids()))
        rows, done = rows.apply(parse_changes(lines))
        titles += [catalogue[product_id] for product_id in done.added]
        assert len(titles) == rows.rows
        assert not rows.live[done.killed].any()
    live = rows.live_ids()
    assert {i: titles[row] for i, row in live.items()} == catalogue
    assert all(rows.row_of(i) == row for i, row in live.items())
    assert rows.products == len(catalogue) and rows.rows > len(catalogue)
    assert np.array_equal(np.flatnonzero(rows.live), sorted(live.values()))
    for view, seen in views:  # every earlier view still answers as it did
        assert view.live_ids() == seen


def test_a_base_with_an_id_twice_is_refused():
    with pytest.raises(ValueError, match="each product id once"):
        CatalogueRows.of_base(["A", "B", "A"])
