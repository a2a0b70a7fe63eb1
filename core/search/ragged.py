"""A small kit for ragged integer arrays, used by the feature code to work on a whole batch of
queries and candidates at once, without a Python loop per candidate.

- `Ragged`: rows of ids of varying length, stored flat (CSR-like: indptr, ids, weights);
- `Stacked`, `RaggedStack`, `SortedParts`: two arrays, two Ragged structures or sorted key
  arrays read as one without copying them into one (a live catalogue's: the base's, then
  what its change sets added);
- `PairTable`: values of (query, id) pairs, looked up many at a time;
- `find_sorted`: where values sit in a sorted array (np.searchsorted, with a found flag);
- `distinct`: np.unique(keys, return_inverse=True), faster for small key spaces;
- `segment_reduce`: a ufunc over consecutive column segments (np.ufunc.reduceat, with empty
  segments).
"""

from __future__ import annotations

import functools
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
        return _last(self.ids, self.indptr[rows], self.indptr[rows + 1], default, back)

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The entries of `rows`, row after row: (their positions in the flat arrays, the
        index in `rows` each entry belongs to)."""
        return _entries(self.indptr[rows], self.lengths(rows))

    def gather_ids(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ids of `rows`, row after row, and the index in `rows` each belongs to."""
        entries, owner = self.gather(rows)
        return self.ids[entries], owner


def _entries(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flat positions of rows that start at `starts` and hold `lengths` entries, row after
    row, and the row (index into `starts`) each belongs to."""
    owner = np.repeat(np.arange(len(starts)), lengths)
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return np.arange(len(owner)) + shift, owner


def _last(ids, starts: np.ndarray, stops: np.ndarray, default: int, back: int) -> np.ndarray:
    """The id `back` places before each row's end; `default` for a row shorter than that."""
    if len(ids) == 0:
        return np.full(len(starts), default, dtype=ids.dtype)
    return np.where(stops - starts >= back, ids[np.maximum(stops - back, 0)], default)


class Stacked:
    """Two arrays as one along their first axis, never copied into one: element i is
    first[i], or second[i - len(first)] past it. Indexed by an array of positions (what the
    feature code does); `dtype`: the elements' (both parts' common type by default)."""

    def __init__(self, first, second, dtype=None):
        self.first, self.second = first, second
        self.shape = (len(first) + len(second), *first.shape[1:])
        self.dtype = np.dtype(dtype or np.result_type(first.dtype, second.dtype))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, positions) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        n = len(self.first)
        if len(self.shape) == 1 and n:
            # Every element from the first part, then those past it put right: for the ids
            # of a batch's candidates, 2-5x faster than filling each part through boolean
            # masks (as rows of vectors are, each of which is worth copying once only).
            out = np.asarray(self.first[np.minimum(positions, n - 1)], dtype=self.dtype)
            past = np.nonzero(positions >= n)
            out[past] = self.second[positions[past] - n]
            return out
        out = np.empty((*positions.shape, *self.shape[1:]), dtype=self.dtype)
        below = positions < n
        out[below] = self.first[positions[below]]
        out[~below] = self.second[positions[~below] - n]
        return out


@dataclass(frozen=True)
class RaggedStack:
    """The rows of `first`, then those of `second`, read as one Ragged without copying either:
    an entry's position is its place in the two parts' ids one after the other, so `gather`
    and `ids` answer what they would of the two concatenated."""

    first: Ragged
    second: Ragged

    @property
    def rows(self) -> int:
        return self.first.rows + self.second.rows

    @functools.cached_property
    def ids(self) -> Stacked:
        return Stacked(self.first.ids, self.second.ids)

    def _bounds(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int64 start and stop of each row's entries."""
        rows = np.asarray(rows, dtype=np.int64)
        n, offset = self.first.rows, int(self.first.indptr[-1])
        below = rows < n
        starts, stops = np.empty(len(rows), np.int64), np.empty(len(rows), np.int64)
        starts[below], stops[below] = self.first.indptr[rows[below]], \
            self.first.indptr[rows[below] + 1]
        own = rows[~below] - n
        starts[~below] = self.second.indptr[own] + offset
        stops[~below] = self.second.indptr[own + 1] + offset
        return starts, stops

    def row(self, r: int) -> np.ndarray:
        start, stop = self._bounds(np.array([r]))
        return self.ids[np.arange(start[0], stop[0])]

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        starts, stops = self._bounds(rows)
        return stops - starts

    def last(self, rows: np.ndarray, default: int = 0, back: int = 1) -> np.ndarray:
        return _last(self.ids, *self._bounds(rows), default, back)

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts, stops = self._bounds(rows)
        return _entries(starts, stops - starts)

    def gather_ids(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        entries, owner = self.gather(rows)
        return self.ids[entries], owner


class SortedParts:
    """Keys held as sorted arrays one after the other, a key's id its place in their
    concatenation: a live catalogue's pair keys and trigram buckets, the base's and then the
    ones its titles added, so no base id moves (one sorted array of both would renumber every
    id after the first new key). `find_sorted` looks keys up in it."""

    def __init__(self, parts: Sequence[np.ndarray]):
        self.parts = tuple(parts)
        self.starts = np.cumsum([0, *(len(p) for p in self.parts)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @functools.cached_property
    def values(self) -> np.ndarray:
        """The keys, in id order."""
        return np.concatenate(self.parts)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype)

    def find(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        position = np.zeros(len(values), dtype=np.int64)
        found = np.zeros(len(values), dtype=bool)
        for start, part in zip(self.starts[:-1], self.parts, strict=True):
            place, held = find_sorted(part, values)
            new = held & ~found
            position[new] = place[new] + start
            found |= held
        return position, found


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


def find_sorted(ordered: np.ndarray | SortedParts,
                values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of `values` is in the sorted array `ordered` (or `SortedParts`), and whether
    it is there at all (where not, the position is meaningless)."""
    if isinstance(ordered, SortedParts):
        return ordered.find(values)
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
