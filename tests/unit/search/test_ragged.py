"""The ragged-array kit (fusionrank.core.search.ragged) against plain Python loops over the same
rows, in both of its lookup modes (dense tables for small key spaces, sorted keys for large)."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrank.core.search import ragged
from fusionrank.core.search.ragged import (
    PairTable,
    Ragged,
    RaggedStack,
    SortedParts,
    Stacked,
    distinct,
    find_sorted,
    segment_reduce,
)

ROWS = [[3, 1, 4], [], [1], [5, 9, 2, 6], [], [5]]


def test_ragged_rows_lengths_last_and_gather_follow_the_rows():
    table = Ragged.of(ROWS)
    assert table.rows == len(ROWS)
    assert [table.row(r).tolist() for r in range(len(ROWS))] == ROWS
    picked = np.array([3, 1, 0, 3, 5])  # repeats and an empty row
    assert table.lengths(picked).tolist() == [len(ROWS[r]) for r in picked]
    assert table.last(picked, default=-7).tolist() == [ROWS[r][-1] if ROWS[r] else -7
                                                       for r in picked]
    entries, owner = table.gather(picked)
    want = [(ROWS[r][k], i) for i, r in enumerate(picked) for k in range(len(ROWS[r]))]
    assert list(zip(table.ids[entries].tolist(), owner.tolist(), strict=True)) == want
    ids, owner_again = table.gather_ids(picked)
    assert ids.tolist() == [v for v, _ in want] and owner_again.tolist() == owner.tolist()
    empty_ids, empty_owner = table.gather(np.array([1, 4], dtype=np.int64))
    assert len(empty_ids) == len(empty_owner) == 0


def test_ragged_arrays_round_trip_with_and_without_weights():
    plain = Ragged.of(ROWS)
    assert set(plain.arrays("t")) == set(Ragged.names("t")) == {"t.indptr", "t.ids"}
    back = Ragged.from_arrays(plain.arrays("t"), "t")
    assert back.weights is None and back.ids.tolist() == plain.ids.tolist()
    weighted = Ragged(plain.indptr, plain.ids, np.arange(len(plain.ids), dtype=np.float64))
    saved = weighted.arrays("w")
    assert set(saved) == set(Ragged.names("w", weighted=True))
    assert Ragged.from_arrays(saved, "w").weights.tolist() == list(range(len(plain.ids)))


@pytest.mark.parametrize("dense", [True, False])
def test_pair_table_looks_up_the_pairs_a_dict_holds(monkeypatch, dense):
    if not dense:  # force the sorted-key mode on a small batch
        monkeypatch.setattr(ragged, "TABLE_LIMIT", 0)
    rng = np.random.default_rng(0)
    queries, space = 7, 50
    query, ids = np.divmod(rng.choice(queries * space, size=40, replace=False), space)
    values = rng.normal(size=40)
    expected = dict(zip(zip(query.tolist(), ids.tolist(), strict=True), values.tolist(),
                        strict=True))
    table = PairTable(query, ids, values, queries, space)
    assert table.dense is dense
    ask_query = np.concatenate([query, rng.integers(0, queries, 60), [0, 3]])
    ask_ids = np.concatenate([ids, rng.integers(0, space, 60), [-1, -1]])  # -1: no id
    got = table(ask_query, ask_ids)
    want = [expected.get((q, i), 0.0) for q, i in zip(ask_query.tolist(), ask_ids.tolist(),
                                                      strict=True)]
    assert got.tolist() == want


@pytest.mark.parametrize("dense", [True, False])
def test_pair_table_holding_says_which_ids_each_query_holds(monkeypatch, dense):
    if not dense:
        monkeypatch.setattr(ragged, "TABLE_LIMIT", 0)
    per_query = [[2, 5, 5], [], [0, 9]]
    table = PairTable.holding(per_query, space=10)
    query, ids = np.repeat(np.arange(3), 10), np.tile(np.arange(10), 3)
    got = table(query, ids)
    assert got.dtype == bool
    assert got.tolist() == [i in per_query[q] for q, i in zip(query, ids, strict=True)]


def test_find_sorted_finds_what_is_there_and_flags_what_is_not():
    ordered = np.array([2, 3, 7, 11, 20])
    values = np.array([7, 1, 20, 21, 2, 8])
    position, found = find_sorted(ordered, values)
    assert found.tolist() == [v in ordered.tolist() for v in values.tolist()]
    assert [ordered[p] for p, f in zip(position, found, strict=True) if f] == [7, 20, 2]
    _, none = find_sorted(np.zeros(0, np.int64), values)
    assert not none.any()


MORE = [[8], [], [2, 7], [6, 0, 3]]


@pytest.mark.parametrize("first, second", [(ROWS, MORE), (ROWS, []), ([], MORE), ([[]], [[]])])
def test_a_ragged_stack_reads_as_the_rows_of_both_parts_one_after_the_other(first, second):
    stack, rows = RaggedStack(Ragged.of(first), Ragged.of(second)), first + second
    assert stack.rows == len(rows)
    assert [stack.row(r).tolist() for r in range(len(rows))] == rows
    rng = np.random.default_rng(2)
    picked = rng.integers(0, len(rows), 20)  # repeats, and rows of both parts in any order
    assert stack.lengths(picked).tolist() == [len(rows[r]) for r in picked]
    for back in (1, 2):
        assert stack.last(picked, default=-7, back=back).tolist() == [
            rows[r][-back] if len(rows[r]) >= back else -7 for r in picked]
    entries, owner = stack.gather(picked)
    want = [(rows[r][k], i) for i, r in enumerate(picked) for k in range(len(rows[r]))]
    assert list(zip(stack.ids[entries].tolist(), owner.tolist(), strict=True)) == want
    ids, owner_again = stack.gather_ids(picked)
    assert ids.tolist() == [v for v, _ in want] and owner_again.tolist() == owner.tolist()


def test_stacked_arrays_index_as_their_concatenation_without_copying_it():
    first, second = np.arange(12.0).reshape(6, 2), -np.arange(4.0, dtype=np.float32).reshape(2, 2)
    stack = Stacked(first, second)
    assert stack.shape == (8, 2) and len(stack) == 8 and stack.dtype == np.float64
    positions = np.array([7, 0, 6, 5, 7])
    np.testing.assert_array_equal(stack[positions], np.concatenate([first, second])[positions])
    assert stack.first is first  # read where it is
    assert Stacked(np.arange(3, dtype=np.uint8), np.arange(2, dtype=np.uint16))[
        np.array([4, 1])].tolist() == [1, 1]


def test_sorted_parts_give_a_key_its_place_in_the_parts_one_after_the_other():
    parts = SortedParts([np.array([2, 3, 7, 11]), np.array([1, 5, 8])])
    values = np.array([7, 1, 20, 8, 2, 4])
    position, found = find_sorted(parts, values)
    assert found.tolist() == [True, True, False, True, True, False]
    assert position[found].tolist() == [2, 4, 6, 0]  # ids past the first part's 4 keys
    assert len(parts) == 7 and np.asarray(parts).tolist() == [2, 3, 7, 11, 1, 5, 8]


@pytest.mark.parametrize("space", [64, ragged.TABLE_LIMIT + 1])  # marked table, then sort
def test_distinct_is_the_sorted_set_and_each_keys_place_in_it(space):
    rng = np.random.default_rng(1)
    keys = rng.integers(0, min(space, 64), 200) * (space // 64)
    found, place = distinct(keys, space)
    assert found.tolist() == sorted(set(keys.tolist()))
    assert [found[p] for p in place] == keys.tolist()


def test_segment_reduce_reduces_each_column_segment_and_zeroes_empty_ones():
    rng = np.random.default_rng(2)
    sizes = np.array([2, 0, 3, 1, 0])
    values = rng.normal(size=(3, sizes.sum())).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for ufunc, python in ((np.maximum, max), (np.add, sum)):
        got = segment_reduce(ufunc, values, sizes)
        assert got.shape == (3, len(sizes))
        for m in range(3):
            for s, size in enumerate(sizes):
                segment = values[m, starts[s]:starts[s] + size].tolist()
                want = python(segment) if size else 0.0
                assert got[m, s] == pytest.approx(want, abs=1e-6), (ufunc, m, s)
