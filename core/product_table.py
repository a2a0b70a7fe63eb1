"""A catalogue's `products.jsonl` read a row at a time, without parsing every line at load.

The search runtime and the `Rank` step need a product's title, id or JSON line only for the rows
a request ranks; reading every line into Python objects at load costs hundreds of MB per process
at a million products. `ProductTable.open` finds the line boundaries once (numpy over the file's
bytes, read in blocks: no Python object per line); a row is then read (one pread) and parsed
when asked for. Read rather than mapped: a request reads ten rows or so, and a mapping would
keep the pages of every row ever read resident in each model copy, with their neighbours (the
kernel maps the cached pages around a faulting one): 207 MiB of 218 a copy at a million
products (benchmarks/reports/scale.md). The file stays `products.jsonl` (one JSON object per
line) for every other reader.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, overload

import numpy as np

from fusionrank.core.artefacts import ArtefactError

BLOCK = 16 << 20  # bytes read at a time while finding the line ends
NEWLINE = ord("\n")


class ProductRows:
    """What Rank and the search runtime read of product rows, given each row's JSON `line`
    and a `field` of it: a ProductTable, or a live catalogue's rows over several of them
    (core/search/live_view.py `RowTable`)."""

    def line(self, row: int) -> bytes:
        raise NotImplementedError

    def field(self, row: int, name: str) -> Any:
        raise NotImplementedError

    def title(self, row: int) -> str:
        return str(self.field(row, "title"))

    def titles(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        return [self.title(int(row)) for row in np.asarray(rows).reshape(-1)]

    def json(self, rows: np.ndarray) -> np.ndarray:
        """object [rows.shape]: each row's JSON line as UTF-8 bytes (Rank's PRODUCTS)."""
        return self._each(rows, self.line)

    def product_ids(self, rows: np.ndarray) -> np.ndarray:
        """object [rows.shape]: each row's product_id as UTF-8 bytes (Rank's PRODUCT_IDS)."""
        return self._each(rows, lambda row: str(self.field(row, "product_id")).encode("utf-8"))

    @staticmethod
    def _each(rows: np.ndarray, value: Any) -> np.ndarray:
        rows = np.asarray(rows)
        out = np.empty(rows.shape, dtype=object)
        flat = out.reshape(-1)
        for i, row in enumerate(rows.reshape(-1).tolist()):
            flat[i] = value(row)
        return out


@dataclass(frozen=True)
class ProductTable(ProductRows):
    """Row r is line r of the file (JSON never holds a raw newline, so lines are rows)."""

    path: Path
    file: BinaryIO  # the file, open for reading (os.pread: no shared position)
    bounds: np.ndarray  # int64 [rows + 1]: row r is bytes bounds[r]:bounds[r + 1], newline kept

    @classmethod
    def open(cls, path: str | Path) -> ProductTable:
        """An ArtefactError naming the file where it is missing or holds an empty line."""
        path = Path(path)
        try:
            handle = path.open("rb")
        except OSError as error:
            raise ArtefactError(f"{path} cannot be read ({error}); rebuild it") from error
        try:
            return cls(path, handle, _line_bounds(handle, path))
        except BaseException:
            handle.close()
            raise

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def line(self, row: int) -> bytes:
        """Row `row`'s JSON text, UTF-8, without its line end."""
        if not -len(self) <= row < len(self):
            raise IndexError(f"row {row} of {self.path} ({len(self)} rows)")
        row %= len(self)
        start, stop = int(self.bounds[row]), int(self.bounds[row + 1])
        return os.pread(self.file.fileno(), stop - start, start).rstrip(b"\r\n")

    def record(self, row: int) -> dict[str, Any]:
        try:
            return json.loads(self.line(row))
        except ValueError as error:
            raise ArtefactError(f"{self.path} line {row + 1} is not a JSON object ({error}); "
                                "rebuild it") from error

    def field(self, row: int, name: str) -> Any:
        record = self.record(row)
        if name not in record:
            raise ArtefactError(f"{self.path} line {row + 1} has no {name!r}; rebuild it")
        return record[name]


    @property
    def title_column(self) -> TitleColumn:
        """The titles as a lazy sequence: what needs every title (computing the title features
        where none were saved) reads them all, what needs a few reads only those."""
        return TitleColumn(self)



class TitleColumn(Sequence[str]):
    """A ProductTable's titles as a Sequence[str], each parsed when read."""

    def __init__(self, table: ProductTable):
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    @overload
    def __getitem__(self, row: int) -> str: ...

    @overload
    def __getitem__(self, rows: slice) -> list[str]: ...

    def __getitem__(self, row: int | slice) -> str | list[str]:
        if isinstance(row, slice):
            return self.table.titles(range(*row.indices(len(self))))
        return self.table.title(row)

    def __iter__(self) -> Iterator[str]:
        return (self.table.title(row) for row in range(len(self)))


def _line_bounds(handle: BinaryIO, path: Path) -> np.ndarray:
    """int64 [rows + 1]: where each line of the open file `path` starts, then its size; an
    ArtefactError where it cannot be read or a line is empty."""
    try:
        ends = _line_ends(handle)
        size = handle.seek(0, 2)
    except OSError as error:
        raise ArtefactError(f"{path} cannot be read ({error}); rebuild it") from error
    if size and (not len(ends) or ends[-1] != size):
        ends = np.append(ends, size)  # a last line without its newline
    bounds = np.concatenate([[0], ends]).astype(np.int64)
    empty = np.flatnonzero(np.diff(bounds) == 1)
    if len(empty):
        raise ArtefactError(f"{path} line {int(empty[0]) + 1} is empty (one JSON object per "
                            "line expected); rebuild it")
    return bounds


def _line_ends(handle: Any) -> np.ndarray:
    """int64: the offset just past each newline of the open file."""
    ends, offset, block = [], 0, bytearray(BLOCK)
    while read := handle.readinto(block):
        chunk = np.frombuffer(block, dtype=np.uint8, count=read)
        ends.append(np.flatnonzero(chunk == NEWLINE) + offset + 1)
        offset += read
    return np.concatenate(ends).astype(np.int64) if ends else np.zeros(0, np.int64)
