"""The live catalogue's folder: the change log, the applied segments and the state that says
which segments the servers serve.

    <live>/changes.log                      every accepted change set (log.py)
    <live>/segments/<sequence>/changes.jsonl  one applied set, as logged
                               products.jsonl its upserted rows (as a build writes rows)
                               embeddings.npy their title vectors, in the set's order
    <live>/state.json                       the base version and the segments served on it

A segment is written whole under a temporary name and renamed; `state.json` is replaced in one
rename after it. So the state names only complete segments, and a crash at any point leaves
either the state before a change set or the state after it: the log still holds the set, and
the next start applies it (`pending`). The model processes that serve searches read the state
between two requests (`LiveFolder.stamp` is one `stat`), and a request sees one state whole.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrank.core.live.changes import ChangeSet, parse_changes
from fusionrank.core.live.log import ChangeLog, fsync_folder
from fusionrank.core.product_table import ProductTable

STATE_FILE = "state.json"
SEGMENTS = "segments"
LIVE_FOLDER = "live"  # beside the model repository: <build out>/live


def live_folder(version_folder: str | Path) -> Path:
    """The live folder of the repository a model version folder belongs to
    (<out>/model_repository/<model>/<version> → <out>/live)."""
    return Path(version_folder).resolve().parents[2] / LIVE_FOLDER


@dataclass(frozen=True)
class LiveState:
    """What the servers serve: the base model version and, on it, the applied segments."""

    base: str = ""  # the model version the segments were applied to ("": none yet)
    segments: tuple[int, ...] = ()  # applied change sets' sequences, in order
    updated_at: float | None = None  # when the last one was applied (Unix seconds)
    rows: int = 0  # catalogue rows, dead ones included
    products: int = 0  # live products

    @property
    def applied_through(self) -> int:
        return self.segments[-1] if self.segments else 0


@dataclass(frozen=True)
class Segment:
    """One applied change set: its changes, its upserted rows and their vectors."""

    sequence: int
    changes: ChangeSet
    products: ProductTable | None  # None: the set upserts nothing
    embeddings: np.ndarray  # float32 [upserts, d]
    first_row: int  # the row of its first upsert

    @property
    def titles(self) -> list[str]:
        return [p.title for p in self.changes.upserts]


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
                         int(saved.get("products", 0)))

    def publish(self, state: LiveState) -> None:
        """Replace the state in one rename (after its segments are on disk)."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.state_path.with_suffix(".staging")
        with staging.open("w", encoding="utf-8") as out:
            json.dump({"base": state.base, "segments": list(state.segments),
                       "updated_at": state.updated_at, "rows": state.rows,
                       "products": state.products}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(staging, self.state_path)
        fsync_folder(self.root)

    def segment_path(self, sequence: int) -> Path:
        return self.root / SEGMENTS / f"{sequence:012d}"

    def write_segment(self, sequence: int, changes: ChangeSet, embeddings: np.ndarray) -> None:
        """The segment of one change set, whole or not at all."""
        final = self.segment_path(sequence)
        staging = final.with_name(final.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / "changes.jsonl").write_text("\n".join(changes.to_lines()) + "\n",
                                               encoding="utf-8")
        with (staging / "products.jsonl").open("w", encoding="utf-8") as out:
            for product in changes.upserts:
                out.write(json.dumps(product.to_dict(), ensure_ascii=False) + "\n")
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

    def withdrawn(self, state: LiveState) -> set[str]:
        """The ids the state's segments leave deleted (a later upsert brings one back)."""
        gone: set[str] = set()
        for sequence in state.segments:
            changes = self.read_changes(sequence)
            gone.difference_update(p.product_id for p in changes.upserts)
            gone.update(changes.deletes)
        return gone

    def read_segment(self, sequence: int, first_row: int) -> Segment:
        folder = self.segment_path(sequence)
        changes = self.read_changes(sequence)
        embeddings = np.load(folder / "embeddings.npy")
        if len(embeddings) != len(changes.upserts):
            raise ValueError(f"{folder}: {len(embeddings)} vectors for "
                             f"{len(changes.upserts)} upserts")
        products = ProductTable.open(folder / "products.jsonl") if changes.upserts else None
        return Segment(sequence, changes, products, embeddings, first_row)

    def remove_unlisted(self, state: LiveState) -> None:
        """Delete the segments the state does not name (of a replaced base, or a crash)."""
        listed = {self.segment_path(s).name for s in state.segments}
        folder = self.root / SEGMENTS
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.name not in listed:
                shutil.rmtree(path, ignore_errors=True)
