"""Which catalogue row serves each product id while change sets arrive (docs/live_catalogue.md).

A base has rows 0..n-1. Each change set appends a row for every upserted product, new or
retitled, and kills the row it replaces; a delete kills its row. An upsert that keeps its
product's title (a price, a brand, a description: nothing search reads) is a field update: the
product keeps its row, and only its record changes (as Vespa updates attribute fields in place
rather than reindexing the document), so a stream of price changes leaves every search
structure as it was. Rows are never reused or moved, so every array indexed by row
(embeddings, title features, BM25 postings, ANN entries) only grows, and a request holding one
`CatalogueRows` keeps a consistent view while the next is made: `apply` returns a new object
and leaves this one as it was.

The base's id → row dict and its ids by row are shared by every later view, never copied (a
million ids: copying them took a change set 7 ms at a million products, in the catalogue model
and in every search process); what changed since the base lives in a small overlay and the ids
of the rows appended since, which compaction folds into the next base.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from fusionrank.core.live.changes import ChangeReport, ChangeSet
from fusionrank.core.product_table import ProductTable


@dataclass(frozen=True)
class RowChanges:
    """What one change set did to the rows."""

    added: dict[str, int]  # upserted id → its new row (in the set's order)
    killed: np.ndarray  # int64 rows no longer live (replaced or deleted), ascending
    report: ChangeReport
    updated: dict[str, int]  # id updated in place (its title kept) → the row it keeps

    @property
    def moved(self) -> bool:
        """Whether the set added or killed a row (else every row-indexed structure stands)."""
        return bool(self.added) or bool(len(self.killed))


class CatalogueRows:
    """Product ids by row, and which rows are live."""

    def __init__(self, base: dict[str, int], base_ids: Sequence[str],
                 appended: tuple[str, ...], live: np.ndarray, overlay: dict[str, int | None]):
        self._base = base  # id → row in the base (shared, read only)
        self._base_ids = base_ids  # each base row's product id (shared, read only)
        self.appended = appended  # each row's product id after the base's, dead rows too
        self._overlay = overlay  # id → its row since the base, or None: deleted
        self.live = live  # bool [rows]

    @classmethod
    def of_base(cls, ids: Sequence[str]) -> CatalogueRows:
        base = {product_id: row for row, product_id in enumerate(ids)}
        if len(base) != len(ids):
            raise ValueError("a base catalogue holds each product id once")
        return cls(base, list(ids), (), np.ones(len(ids), dtype=bool), {})

    @classmethod
    def of_table(cls, table: ProductTable) -> CatalogueRows:
        """A base from a build's products.jsonl (each row's id parsed once)."""
        return cls.of_base([str(table.field(row, "product_id")) for row in range(len(table))])

    @property
    def rows(self) -> int:
        """Rows so far, dead ones included (the length of every row-indexed array)."""
        return len(self._base_ids) + len(self.appended)

    def id_of(self, row: int) -> str:
        """The product id of a row, dead or live."""
        base = len(self._base_ids)
        return self._base_ids[row] if row < base else self.appended[row - base]

    @property
    def products(self) -> int:
        return int(self.live.sum())

    @property
    def dead_share(self) -> float:
        """The share of rows that are dead: what compaction would reclaim."""
        return 1.0 - self.products / self.rows if self.rows else 0.0

    def row_of(self, product_id: str) -> int | None:
        """The live row of a product, or None where the catalogue does not hold it."""
        if product_id in self._overlay:
            return self._overlay[product_id]
        return self._base.get(product_id)

    def __contains__(self, product_id: str) -> bool:
        return self.row_of(product_id) is not None

    def live_ids(self) -> dict[str, int]:
        """Every live product's row (a full pass: for checks and compaction, not requests)."""
        return {str(self.id_of(row)): int(row) for row in np.flatnonzero(self.live)}

    def apply(self, changes: ChangeSet, updated: Collection[str] = ()
              ) -> tuple[CatalogueRows, RowChanges]:
        """The rows after `changes`, and what they did; this object is left unchanged.
        `updated`: the upserted ids whose title the set keeps (the writer compares them, and
        its segment records them), each updated in its row."""
        report = changes.against(self)
        kept = {product_id: self.row_of(product_id) for product_id in updated}
        upserted = {p.product_id for p in changes.upserts}
        if None in kept.values() or not kept.keys() <= upserted:
            raise ValueError("only a product the set upserts and the catalogue holds is "
                             f"updated in place: {sorted(kept)}")
        killed = [row for product_id in report.changed + report.deleted
                  if product_id not in kept and (row := self.row_of(product_id)) is not None]
        start = self.rows
        added = {p.product_id: start + i for i, p in enumerate(
            p for p in changes.upserts if p.product_id not in kept)}
        overlay = dict(self._overlay)
        overlay.update(added)
        overlay.update(dict.fromkeys(report.deleted))
        live = np.concatenate([self.live, np.ones(len(added), dtype=bool)])
        live[killed] = False
        return (CatalogueRows(self._base, self._base_ids, self.appended + tuple(added), live,
                              overlay),
                RowChanges(added, np.sort(np.asarray(killed, dtype=np.int64)), report, kept))
