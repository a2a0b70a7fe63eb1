"""The catalogue a live state serves, gathered whole: what compaction builds its new base from
(app/compact.py; docs/live_catalogue.md).

    rows = served_catalogue(LiveFolder(live), base, table, vectors)
    rows.products, rows.vectors, rows.through     # live rows in row order, their vectors

The rows come in row order (the base's live rows, then each segment's), the order a rebuild of
the final catalogue is equivalent to, each with its last record (an update in place changes a
row's record, not its place), and with the vectors the state serves: a compacted base
embeds nothing again, and serves what the state served.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from fusionrank.core.catalogue import Product
from fusionrank.core.live.rows import CatalogueRows
from fusionrank.core.live.segments import LiveBase, LiveFolder
from fusionrank.core.product_table import ProductTable


class NothingToCompact(RuntimeError):
    """The base already holds every applied change set."""


@dataclass(frozen=True)
class ServedCatalogue:
    products: list[dict]  # each live product's row, in row order
    vectors: np.ndarray  # float32 [products, d]: their title vectors
    through: int  # the last change set they hold
    rows: int  # rows before compaction, dead ones included


def served_catalogue(folder: LiveFolder, base: LiveBase, table: ProductTable,
                     vectors: np.ndarray) -> ServedCatalogue:
    """The live products of the state published now, on `base` (its `table` and `vectors`)."""
    state = folder.state()
    served = state.served_on(base)
    if served is None:
        raise RuntimeError("the live segments carry another encoder's vectors (a deploy of a "
                           "new encoder is embedding the change log again): compact once its "
                           "catalogue model has applied the log")
    if not served:
        raise NothingToCompact(f"the base already holds every applied change set (through "
                               f"{base.through}): nothing to compact")
    rows = CatalogueRows.of_table(table)
    segments = folder.read_segments(served, rows.rows)
    updates: dict[int, Product] = {}  # row → its product's record, updated in place
    for segment in segments:
        rows, done = rows.apply(segment.changes, segment.updated)
        by_id = segment.updates()
        updates.update({row: by_id[product_id] for product_id, row in done.updated.items()})
    live = np.flatnonzero(rows.live)
    in_base = live[live < len(table)]
    products = [updates[row].to_dict() if row in updates else json.loads(table.line(row))
                for row in in_base.tolist()]
    gathered = [np.asarray(vectors[in_base], dtype=np.float32)]
    for segment in segments:
        own = live[(live >= segment.first_row) & (live < segment.first_row + segment.rows)]
        products += [updates.get(row, segment.appended[row - segment.first_row]).to_dict()
                     for row in own.tolist()]
        gathered.append(segment.embeddings[own - segment.first_row])
    return ServedCatalogue(products, np.concatenate(gathered), served[-1], rows.rows)
