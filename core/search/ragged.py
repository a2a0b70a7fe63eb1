"""A small kit for ragged integer arrays, used by the feature code to work on a whole batch of
queries and candidates at once, without a Python loop per candidate.

- `Ragged`: rows of ids of varying length, stored flat (CSR-like: indptr, ids, weights);
- `PairTable`: values of (query, id) pairs, looked up many at a time;
- `find_sorted`: where values sit in a sorted array (np.searchsorted, with a found flag);
- `distinct`: np.unique(keys, return_inverse=True), faster for small key spaces;
- `segment_reduce`: a ufunc over consecutive column segments (np.ufunc.reduceat, with empty
  segments).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

TABLE_LIMIT = 1 << 22  # entries of a dense lookup table at most (PairTable, distinct)


@dataclass(frozen=True)
class Ragged:
    """Rows of ids (and optional weights) of varying length, stored flat: row r is
    ids[indptr[r]:indptr[r + 1]]. `gather` takes many rows at once, without a Python loop."""

    indptr: np.ndarray  # int32 [rows + 1] (int64 in files written before format 2)
    ids: np.ndarray  # int32 [entries] (likewise)
    weights: np.ndarray | None = None  # float64 [entries]

    @classmethod
    def of(cls, rows: Sequence[Sequence[int]], name: str = "ragged") -> Ragged:
        """int32 indptr and ids (half int64's size); a ValueError naming the structure where
        its entries or ids do not fit."""
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        ids = np.fromiter((i for r in rows for i in r), dtype=np.int64, count=int(indptr[-1]))
        return cls(as_int32(indptr, f"{name}.indptr"), as_int32(ids, f"{name}.ids"))

    @staticmethod
    def names(name: str, weighted: bool = False) -> tuple[str, ...]:
        """The keys `arrays(name)` writes: name.indptr, name.ids (and name.weights)."""
        return (f"{name}.indptr", f"{name}.ids", *((f"{name}.weights",) if weighted else ()))

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        parts = (self.indptr, self.ids) if self.weights is None else \
            (self.indptr, self.ids, self.weights)
        return dict(zip(self.names(name, self.weights is not None), parts, strict=True))

    @classmethod
    def from_arrays(cls, saved: Mapping[str, np.ndarray], name: str) -> Ragged:
        return cls(saved[f"{name}.indptr"], saved[f"{name}.ids"], saved.get(f"{name}.weights"))

    @property
    def rows(self) -> int:
        return len(self.indptr) - 1

    def row(self, r: int) -> np.ndarray:
        """The ids of row r."""
        return self.ids[self.indptr[r]:self.indptr[r + 1]]

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """How many entries each of `rows` holds."""
        return self.indptr[rows + 1] - self.indptr[rows]

    def last(self, rows: np.ndarray, default: int = 0, back: int = 1) -> np.ndarray:
        """The last id of each of `rows` (`back`=2: the one before it); `default` for a row
        shorter than `back`."""
        if len(self.ids) == 0:
            return np.full(len(rows), default, dtype=self.ids.dtype)
        return np.where(self.lengths(rows) >= back,
                        self.ids[np.maximum(self.indptr[rows + 1] - back, 0)], default)

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The entries of `rows`, row after row: (their positions in the flat arrays, the
        index in `rows` each entry belongs to)."""
        starts, lengths = self.indptr[rows], self.lengths(rows)
        owner = np.repeat(np.arange(len(rows)), lengths)
        shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        return np.arange(len(owner)) + shift, owner

    def gather_ids(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ids of `rows`, row after row, and the index in `rows` each belongs to."""
        entries, owner = self.gather(rows)
        return self.ids[entries], owner


class PairTable:
    """Values of the (query, id) pairs of a batch, to look up many pairs at once: a dense
    [queries, ids] table where that is small (served batches), sorted keys otherwise."""

    def __init__(self, query: np.ndarray, ids: np.ndarray, values: np.ndarray, queries: int,
                 space: int):
        """`values[j]` of pair (query[j], ids[j]); ids in [0, space)."""
        self.space, self.dense = space, queries * space <= TABLE_LIMIT
        keys = np.asarray(query, dtype=np.int64) * space + np.asarray(ids, dtype=np.int64)
        values = np.asarray(values)
        if self.dense:  # one more entry: where pairs with id -1 look
            self.table = np.zeros(queries * space + 1, dtype=values.dtype)
            self.table[keys] = values
        else:
            self.keys, first = np.unique(keys, return_index=True)
            self.values = np.concatenate([values[first], np.zeros(1, values.dtype)])

    @classmethod
    def holding(cls, per_query: Sequence[Sequence[int]], space: int) -> PairTable:
        """Which ids each query holds (True; False for any other pair)."""
        query = np.repeat(np.arange(len(per_query)), [len(ids) for ids in per_query])
        ids = np.fromiter((i for ids in per_query for i in ids), dtype=np.int64,
                          count=len(query))
        return cls(query, ids, np.ones(len(ids), dtype=bool), len(per_query), space)

    def __call__(self, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The value of each pair (query[j], ids[j]); 0 / False where the batch has none, or
        ids[j] is -1."""
        keys = np.where(ids >= 0, query * self.space + ids, -1)
        if self.dense:
            return self.table[keys]
        position, found = find_sorted(self.keys, keys)
        return self.values[np.where(found, position, -1)]


def as_int32(values: np.ndarray, name: str) -> np.ndarray:
    """`values` as int32; a ValueError naming them where one does not fit (a catalogue over
    2³¹ entries would need int64 again)."""
    info = np.iinfo(np.int32)
    if len(values) and (values.min() < info.min or values.max() > info.max):
        raise ValueError(f"{name} holds values in [{values.min()}, {values.max()}], outside "
                         "int32; this catalogue is too large for the title features' format")
    return values.astype(np.int32)


def smallest_unsigned(largest: int) -> type[np.unsignedinteger]:
    """The smallest unsigned integer type that holds 0..largest."""
    return next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64)
                if largest <= np.iinfo(t).max)


def find_sorted(ordered: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of `values` is in the sorted array `ordered`, and whether it is there at all
    (where not, the position is meaningless)."""
    position = np.minimum(np.searchsorted(ordered, values), max(len(ordered) - 1, 0))
    found = (ordered[position] == values) if len(ordered) else np.zeros(len(values), bool)
    return position, found


def distinct(keys: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(keys, return_inverse=True) for keys in [0, space): by marking a table rather
    than sorting where the table is small (a few times faster for the ~30k keys of a served
    batch), by sorting for the millions of keys of every training query at once."""
    if space > TABLE_LIMIT:
        return np.unique(keys, return_inverse=True)
    marked = np.zeros(space, dtype=bool)
    marked[keys] = True
    found = np.flatnonzero(marked)
    place = np.empty(space, dtype=np.int32)
    place[found] = np.arange(len(found))
    return found, place[keys]


def segment_reduce(ufunc: np.ufunc, values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """`ufunc` over consecutive column segments of `values` [m, sum(sizes)]: [m, len(sizes)],
    0 for an empty segment."""
    starts = np.concatenate([[0], np.cumsum(sizes)])
    # A zero column after the last segment: reduceat needs every start inside the array.
    padded = np.concatenate([values, np.zeros((len(values), 1), values.dtype)], axis=1)
    reduced = ufunc.reduceat(padded, starts, axis=1)[:, :-1]
    reduced[:, sizes == 0] = 0.0
    return reduced
