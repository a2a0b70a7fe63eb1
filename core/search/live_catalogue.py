"""Change sets applied to a served catalogue: the `catalogue` model's job (docs/live_catalogue.md).

    writer = CatalogueWriter(live_folder, version, base, table, dimension, encode)  # + pending
    report = writer.apply(parse_changes(data))     # logged, embedded, published: searchable

Order of work, and why:
1. the set is checked whole (`parse_changes`, before this class sees it): a refused set changes
   nothing;
2. it is appended to the change log and fsynced: from here it is accepted, and a crash at any
   later point is repaired by the next start, which applies what the log holds beyond the
   published state (`CatalogueWriter.__init__`);
3. only its new or retitled products' titles are embedded, with the encoder that embedded the
   base; an upsert that keeps its product's title is an update in place (core/live/rows.py),
   embedded by nobody;
4. its segment is written whole, then the state naming it replaces the old one in one rename:
   the search processes see the state before the set or after it, never a part.
One writer per live folder (the `catalogue` model runs one copy, and the log's lock serialises
appends besides): two sets are applied one after the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fusionrank.core.live.changes import ChangeSet
from fusionrank.core.live.rows import CatalogueRows
from fusionrank.core.live.segments import LiveBase, LiveFolder, LiveState
from fusionrank.core.product_table import ProductTable

EMBED_CHUNK = 1000  # titles a change set embeds at a time

Encode = Callable[[list[str]], np.ndarray]  # titles → float32 unit vectors [titles, d]


@dataclass(frozen=True)
class ApplyReport:
    """One applied change set, as the `catalogue` model answers it."""

    sequence: int  # its place in the change log
    added: list[str]
    changed: list[str]
    deleted: list[str]
    unknown_deletes: list[str]  # reported, not refused
    products: int  # live products after it
    segments: int  # segments served on the base
    seconds: float  # from receipt to published, embedding included
    embed_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LiveStatus:
    """What `fusionrank status` shows of a live catalogue."""

    base: str
    segments: int
    rows: int
    products: int
    applied_through: int
    pending: int  # logged sets not yet applied (a start applies them)
    last_change_at: float | None

    def to_dict(self) -> dict:
        return asdict(self)


class CatalogueWriter:
    """`table`: the base's products; `dimension`: its title vectors'; `base`: the change sets
    the base already holds, and its encoder (`encode` embeds with the same)."""

    def __init__(self, root: str | Path, version: str, base: LiveBase, table: ProductTable,
                 dimension: int, encode: Encode):
        self.folder = LiveFolder(Path(root))
        self.version, self.base, self.encode = version, base, encode
        self.table, self.dimension = table, dimension
        self._stamp: tuple[int, int, int] | None = None
        with self.folder.writing():
            self._load()

    def apply(self, changes: ChangeSet) -> ApplyReport:
        """Log `changes` (the acknowledgement point), then apply them."""
        start = time.perf_counter()
        with self.folder.writing():
            if self.folder.stamp() != self._stamp:  # another writer's set, or a prune
                self._load()
            sequence = self.folder.log.append(changes)
            return self._apply(sequence, changes, start)

    def status(self) -> LiveStatus:
        if self.folder.stamp() != self._stamp:  # a prune, or the other writer's set
            with self.folder.writing():
                self._load()
        # What this base serves: the sets it holds (a compaction's), then its segments'.
        through = max(self.state.applied_through, self.base.through)
        log = self.folder.log
        return LiveStatus(self.version, len(self.state.served_on(self.base) or ()),
                          self.rows.rows, self.rows.products, through, log.pending(through),
                          log.last_accepted_at)

    def _load(self) -> None:
        """The rows of the published state on this base, then every logged set after it
        applied (a crash, a restart, or sets a deploy's other writer took)."""
        self.appended: dict[int, str] = {}  # a segment row's title
        rows = CatalogueRows.of_table(self.table)
        state = self.folder.state()
        served = state.served_on(self.base)
        if served is None:
            # The segments carry another encoder's vectors (a deploy of a new encoder, or no
            # state yet): every set after the base is applied again, embedded with this one.
            served = ()
            kept = tuple(s for s in state.segments if s <= self.base.through)
            state = LiveState(self.version, kept, state.updated_at, rows.rows, rows.products,
                              self.base.encoder)
            self.folder.publish(state)
        for segment in self.folder.read_segments(served, rows.rows):
            rows, _ = rows.apply(segment.changes, segment.updated)
            self._keep(segment.first_row, segment.titles)
        self.state, self.rows = state, rows
        # Segments no state names: written before a crash and never published, or another
        # encoder's.
        self.folder.remove_unlisted(state)
        after = max(state.applied_through, self.base.through)
        for record in self.folder.log.records(after=after):
            self._apply(record.sequence, record.changes, time.perf_counter())
        self._stamp = self.folder.stamp()

    def _apply(self, sequence: int, changes: ChangeSet, start: float) -> ApplyReport:
        updated = self._updated(changes)
        rows, done = self.rows.apply(changes, updated)
        titles = [p.title for p in changes.upserts if p.product_id not in updated]
        embed_start = time.perf_counter()
        # A thousand titles at a time: the tokenizer's and the encoder's memory for 10,000 at
        # once stayed with the process (+78 MiB; in thousands, +4).
        vectors = np.concatenate([np.zeros((0, self.dimension), np.float32), *(
            np.asarray(self.encode(titles[start:start + EMBED_CHUNK]), dtype=np.float32)
            for start in range(0, len(titles), EMBED_CHUNK))])
        embed_seconds = time.perf_counter() - embed_start
        self.folder.write_segment(sequence, changes, vectors, updated)
        self._keep(self.rows.rows, titles)
        state = LiveState(self.version, (*self.state.segments, sequence), time.time(),
                          rows.rows, rows.products, self.base.encoder)
        self.folder.publish(state)
        self.state, self.rows, self._stamp = state, rows, self.folder.stamp()
        report = done.report
        return ApplyReport(sequence, report.added, report.changed, report.deleted,
                           report.unknown_deletes, rows.products, len(state.served_on(self.base)),
                           round(time.perf_counter() - start, 4), round(embed_seconds, 4))

    def _updated(self, changes: ChangeSet) -> frozenset[str]:
        """The upserts that keep their product's title: updated in place, not embedded (a
        rebuild's embedding cache, keyed by the title, would give them the vector they have)."""
        return frozenset(p.product_id for p in changes.upserts
                         if (row := self.rows.row_of(p.product_id)) is not None
                         and self._title(row) == p.title)

    def _title(self, row: int) -> str:
        return self.table.title(row) if row < len(self.table) else self.appended[row]

    def _keep(self, first_row: int, titles: list[str]) -> None:
        self.appended.update(enumerate(titles, start=first_row))
