"""The live catalogue's folder: the change log, the applied segments and the state that says
which segments the servers serve.

    <live>/changes.log                      every accepted change set (log.py)
    <live>/segments/<sequence>/changes.jsonl  one applied set, as logged
                               products.jsonl its appended rows (new or retitled products,
                                              as a build writes rows)
                               embeddings.npy their title vectors, in the set's order
                               updated.json   the ids it updated in place (title kept,
                                              core/live/rows.py; absent: none)
    <live>/state.json                       the segments served, and the encoder of their vectors
    <live>/compacted.json                   what compaction folded into a base: its last
                                            sequence, the ids its sets left deleted, and
                                            the last row of every product they upserted
                                            (the recommender's catalogue follows them)

A segment does not depend on the base it was applied to: its rows are whole products and its
vectors those of the encoder the state names. A base records the last change set it already
holds (`LiveBase.through`: 0 for a build, N for a compaction through set N), and serves the
state's segments after it. So, while a deploy loads a compacted base beside the one serving,
both serve the same catalogue from the same state: the old base its segments from 1, the new
one those after N. Compaction removes the segments it folded in only once the old base is gone
(`prune`).

A segment is written whole under a temporary name and renamed; `state.json` is replaced in one
rename after it. So the state names only complete segments, and a crash at any point leaves
either the state before a change set or the state after it: the log still holds the set, and
the next start applies it (`pending`). The model processes that serve searches read the state
between two requests (`LiveFolder.stamp` is one `stat`), and a request sees one state whole.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import json
import os
import shutil
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrank.core.catalogue import Product
from fusionrank.core.live.changes import ChangeSet, parse_changes
from fusionrank.core.live.log import ChangeLog, fsync_folder
from fusionrank.core.product_table import ProductTable

STATE_FILE = "state.json"
COMPACTED_FILE = "compacted.json"
WRITER_LOCK = ".writer.lock"
SEGMENTS = "segments"
UPDATED_FILE = "updated.json"
LIVE_FOLDER = "live"  # beside the model repository: <build out>/live


def live_folder(version_folder: str | Path) -> Path:
    """The live folder of the repository a model version folder belongs to
    (<out>/model_repository/<model>/<version> → <out>/live)."""
    return Path(version_folder).resolve().parents[2] / LIVE_FOLDER


def replace_durably(path: Path, saved: dict) -> None:
    """`path` replaced by `saved` as JSON in one rename, on disk (file and folder fsynced)
    when this returns: a crash leaves the old file or the new one, whole."""
    staging = path.with_name(path.name + ".staging")
    with staging.open("w", encoding="utf-8") as out:
        json.dump(saved, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(staging, path)
    fsync_folder(path.parent)


class LiveGapError(RuntimeError):
    """A base older than what compaction removed: the sets between are no longer anywhere."""


@dataclass(frozen=True)
class LiveBase:
    """What a built base holds of the live catalogue (artefacts.LIVE_BASE, in the version
    folders of the models that read the live folder)."""

    through: int  # the last change set the base's rows include (0: a build's own catalogue)
    encoder: str  # SHA-256 of the encoder that embedded its titles (and must embed upserts)

    @classmethod
    def read(cls, path: str | Path) -> LiveBase:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(int(saved["through"]), str(saved["encoder"]))

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"through": self.through, "encoder": self.encoder})
                              + "\n", encoding="utf-8")


@dataclass(frozen=True)
class LiveState:
    """What the servers serve: the applied segments, and the encoder of their vectors."""

    base: str = ""  # the model version whose writer published this state ("": none yet)
    segments: tuple[int, ...] = ()  # applied change sets' sequences, consecutive, in order
    updated_at: float | None = None  # when the last one was applied (Unix seconds)
    rows: int = 0  # catalogue rows on the writer's base, dead ones included
    products: int = 0  # live products
    encoder: str = ""  # SHA-256 of the encoder that embedded the segments' titles

    @property
    def applied_through(self) -> int:
        return self.segments[-1] if self.segments else 0

    def served_on(self, base: LiveBase) -> tuple[int, ...] | None:
        """The segments `base` serves: those after what it holds; None where they are not
        its (another encoder's vectors: a deploy of a new encoder re-embeds them)."""
        if self.encoder != base.encoder:
            return None
        after = tuple(s for s in self.segments if s > base.through)
        if after and after[0] != base.through + 1:
            raise LiveGapError(
                f"this base holds the change sets through {base.through}, and the live "
                f"catalogue was compacted through {after[0] - 1}: the sets between are gone; "
                "serve a build made by `fusionrank catalogue compact` since")
        return after


@dataclass(frozen=True)
class Segment:
    """One applied change set: its changes, the rows it appended (new or retitled products)
    and their vectors, and the products it updated in their rows."""

    sequence: int
    changes: ChangeSet
    products: ProductTable | None  # the appended rows (None: the set appends none)
    embeddings: np.ndarray  # float32 [appended, d]
    first_row: int  # the row of its first appended product
    updated: frozenset[str] = frozenset()  # ids updated in place

    @functools.cached_property
    def appended(self) -> tuple[Product, ...]:
        return tuple(p for p in self.changes.upserts if p.product_id not in self.updated)

    @property
    def rows(self) -> int:
        return len(self.appended)

    @property
    def titles(self) -> list[str]:
        return [p.title for p in self.appended]

    def updates(self) -> dict[str, Product]:
        """The products updated in place, by id."""
        return {p.product_id: p for p in self.changes.upserts if p.product_id in self.updated}


@dataclass
class LiveFolder:
    """Read by every search process (`stamp`, `state`, `read_segment`: nothing is created),
    written by the catalogue model alone."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @functools.cached_property
    def log(self) -> ChangeLog:
        return ChangeLog(self.root)  # (created with the folder where absent)

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    def stamp(self) -> tuple[int, int, int] | None:
        """Changes whenever the state is replaced (inode, size, mtime); None: no state yet."""
        try:
            stat = os.stat(self.state_path)
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def state(self) -> LiveState:
        try:
            saved = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return LiveState()
        return LiveState(str(saved["base"]), tuple(int(s) for s in saved["segments"]),
                         saved.get("updated_at"), int(saved.get("rows", 0)),
                         int(saved.get("products", 0)), str(saved.get("encoder", "")))

    @contextmanager
    def writing(self) -> Iterator[None]:
        """The one writer's lock: a catalogue model applying a set, or compaction pruning.
        While a deploy loads a second catalogue model beside the serving one, the two take
        turns, each reading the state the other left (`CatalogueWriter`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / WRITER_LOCK).open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield  # (closing the file releases the lock)

    def publish(self, state: LiveState) -> None:
        """Replace the state in one rename (after its segments are on disk)."""
        self.root.mkdir(parents=True, exist_ok=True)
        replace_durably(self.state_path, {
            "base": state.base, "segments": list(state.segments),
            "updated_at": state.updated_at, "rows": state.rows, "products": state.products,
            "encoder": state.encoder})

    def segment_path(self, sequence: int) -> Path:
        return self.root / SEGMENTS / f"{sequence:012d}"

    def write_segment(self, sequence: int, changes: ChangeSet, embeddings: np.ndarray,
                      updated: Collection[str] = ()) -> None:
        """The segment of one change set, whole or not at all: `embeddings` are those of the
        upserts not `updated` in place, in the set's order."""
        final = self.segment_path(sequence)
        staging = final.with_name(final.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / "changes.jsonl").write_text("\n".join(changes.to_lines()) + "\n",
                                               encoding="utf-8")
        with (staging / "products.jsonl").open("w", encoding="utf-8") as out:
            for product in changes.upserts:
                if product.product_id not in updated:
                    out.write(product.line() + "\n")
        (staging / UPDATED_FILE).write_text(json.dumps(sorted(updated)) + "\n",
                                            encoding="utf-8")
        np.save(staging / "embeddings.npy", np.ascontiguousarray(embeddings, dtype=np.float32))
        for path in staging.iterdir():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        shutil.rmtree(final, ignore_errors=True)  # a segment of an earlier, replaced base
        os.replace(staging, final)
        fsync_folder(final.parent)

    def read_changes(self, sequence: int) -> ChangeSet:
        return parse_changes((self.segment_path(sequence) / "changes.jsonl")
                             .read_text(encoding="utf-8"))

    def compacted_stamp(self) -> tuple[int, int, int] | None:
        """Changes whenever compacted.json is replaced; None: there is none."""
        try:
            stat = os.stat(self.root / COMPACTED_FILE)
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def compacted(self) -> Compacted:
        """What compaction folded into a base (nothing: through 0)."""
        try:
            saved = json.loads((self.root / COMPACTED_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Compacted(0, frozenset(), ())
        # (a compacted.json written before it recorded the upserts has none)
        return Compacted(int(saved["through"]), frozenset(saved["withdrawn"]),
                         tuple(Product(**row) for row in saved.get("upserted", ())))

    def withdrawn(self, state: LiveState) -> set[str]:
        """The ids the live catalogue has deleted (a later upsert brings one back): those
        compaction folded in, then the state's segments'."""
        return CatalogueChanges(self).update(state).deleted

    def read_segment(self, sequence: int, first_row: int) -> Segment:
        folder = self.segment_path(sequence)
        changes = self.read_changes(sequence)
        try:  # (a segment of an earlier version appended every upsert)
            updated = frozenset(json.loads((folder / UPDATED_FILE).read_text(encoding="utf-8")))
        except FileNotFoundError:
            updated = frozenset()
        embeddings = np.load(folder / "embeddings.npy")
        rows = len(changes.upserts) - len(updated)
        if len(embeddings) != rows:
            raise ValueError(f"{folder}: {len(embeddings)} vectors for {rows} appended rows")
        products = ProductTable.open(folder / "products.jsonl") if rows else None
        return Segment(sequence, changes, products, embeddings, first_row, updated)

    def read_segments(self, sequences: Sequence[int], first_row: int,
                      read: Mapping[int, Segment] | None = None) -> list[Segment]:
        """The segments of `sequences`, one after the other from row `first_row` (a base's
        length); one of `read` (by sequence) is taken as it is where it starts at its row."""
        out = []
        for sequence in sequences:
            segment = (read or {}).get(sequence)
            if segment is None or segment.first_row != first_row:
                segment = self.read_segment(sequence, first_row)
            out.append(segment)
            first_row += segment.rows
        return out

    def prune(self, through: int) -> LiveState:
        """Forget the change sets through `through`, once a base holding them is the only one
        served (`fusionrank catalogue compact`): their deletes go to compacted.json (the
        recommender keeps leaving those products out) with their upserts (and keeps
        recommending the products they added), then the state drops their segments,
        then their folders and log records go."""
        with self.writing():
            state = self.state()
            folded = CatalogueChanges(self).update(dataclasses.replace(
                state, segments=tuple(s for s in state.segments if s <= through)))
            replace_durably(self.root / COMPACTED_FILE, {
                "through": through, "withdrawn": sorted(folded.deleted),
                "upserted": [product.to_dict() for product in folded.upserted.values()]})
            kept = dataclasses.replace(
                state, segments=tuple(s for s in state.segments if s > through))
            self.publish(kept)
            self.remove_unlisted(kept)
            self.log.drop_through(through)
            return kept

    def remove_unlisted(self, state: LiveState) -> None:
        """Delete the segments the state does not name (of a replaced base, or a crash)."""
        listed = {self.segment_path(s).name for s in state.segments}
        folder = self.root / SEGMENTS
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.name not in listed:
                shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Compacted:
    """compacted.json: what a compaction folded into a base (`LiveFolder.prune`)."""

    through: int  # the last change set folded (0: none)
    withdrawn: frozenset[str]  # the ids its sets left deleted
    upserted: tuple[Product, ...]  # every product its sets upserted, its last row, in
    # the order of its first upsert (deleted ones too: a reader's rows follow this order)


class CatalogueChanges:
    """What the live catalogue changed since the build, kept by a reader from state to state
    (the recommender, whose own catalogue follows it): each segment's changes are read once,
    where a stream publishes several states a second and the folder holds thousands of
    segments between two compactions.

    `upserted` holds every product upserted since the build, its last row, in the order of its
    first upsert (a dict keeps a key's place when it is assigned again), deleted ones included:
    so every reader, one that followed each state or one started after a compaction, orders the
    products the same way, and two processes that number them by that order agree."""

    def __init__(self, folder: LiveFolder):
        self.folder = folder
        self.upserted: dict[str, Product] = {}
        self.deleted: set[str] = set()  # the ids deleted and not upserted since
        self.through = -1  # the last change set folded in (-1: none read yet)
        self._compacted: tuple[int, int, int] | None = None  # the compacted.json read

    def update(self, state: LiveState) -> CatalogueChanges:
        """This reader as of `state` (read only; the next update changes it)."""
        stamp = self.folder.compacted_stamp()
        if stamp != self._compacted:  # (read once a compaction, not once a state)
            self._compacted = stamp
            compacted = self.folder.compacted()
            if compacted.through > self.through:  # sets a compaction folded since: it holds them
                self.upserted = {p.product_id: p for p in compacted.upserted}
                self.deleted, self.through = set(compacted.withdrawn), compacted.through
        for sequence in state.segments:
            if sequence > self.through:
                changes = self.folder.read_changes(sequence)
                for product in changes.upserts:
                    self.upserted[product.product_id] = product
                self.deleted.difference_update(p.product_id for p in changes.upserts)
                self.deleted.update(changes.deletes)
                self.through = sequence
        return self
