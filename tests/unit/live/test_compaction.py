"""Compaction's bookkeeping (core/live/segments.py, compaction.py, the CatalogueWriter): a base
built from the gathered live rows serves, with the segments after it, the catalogue the old
base serves with all of them; two writers on one live folder (a deploy's window) take turns
and see each other's sets; a prune forgets the folded sets but not their deletes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fusionrank.core.live.changes import parse_changes
from fusionrank.core.live.compaction import NothingToCompact, served_catalogue
from fusionrank.core.live.rows import CatalogueRows
from fusionrank.core.live.segments import (
    CatalogueChanges,
    LiveBase,
    LiveFolder,
    LiveGapError,
    LiveState,
)
from fusionrank.core.product_table import ProductTable
from fusionrank.core.search.live_catalogue import CatalogueWriter

ENCODER = "e" * 64
DIM = 8


def encode(titles: list[str]) -> np.ndarray:
    """A fixed vector per title (the writer's bookkeeping is under test here, not the
    encoder: the integration tests embed with the real one)."""
    out = np.stack([np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:4],
                                                         "little")).normal(size=DIM)
                    for t in titles]).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def base_files(folder: Path, products: list[dict]) -> tuple[ProductTable, np.ndarray]:
    folder.mkdir(parents=True)
    (folder / "products.jsonl").write_text("".join(json.dumps(p) + "\n" for p in products))
    return ProductTable.open(folder / "products.jsonl"), encode([p["title"] for p in products])


def changes(*lines: dict):
    return parse_changes("\n".join(json.dumps(line) for line in lines))


def upsert(product_id: str, title: str, price: float | None = None) -> dict:
    return {"op": "upsert", "product": {"product_id": product_id, "title": title,
                                        "price": price}}


def live_products(writer: CatalogueWriter) -> dict[str, str]:
    """id → title of every live product the writer's rows hold."""
    rows = writer.rows.live_ids()
    return {product_id: writer._title(row) for product_id, row in rows.items()}


def test_a_compacted_base_serves_with_the_later_sets_what_the_old_one_serves(tmp_path):
    root = tmp_path / "live"
    table, vectors = base_files(tmp_path / "v1", [
        {"product_id": f"P{i}", "title": f"product {i}"} for i in range(6)])
    old = CatalogueWriter(root, "1", LiveBase(0, ENCODER), table, DIM, encode)
    old.apply(changes(upsert("P1", "product 1 renamed"), upsert("N1", "new one", 2.0),
                      {"op": "delete", "product_id": "P2"}))
    old.apply(changes(upsert("P3", "product 3", 9.5), {"op": "delete", "product_id": "N1"}))

    gathered = served_catalogue(LiveFolder(root), LiveBase(0, ENCODER), table, vectors)
    assert gathered.through == 2 and gathered.rows == 6 + 2  # the price change kept its row
    assert [p["product_id"] for p in gathered.products] == ["P0", "P3", "P4", "P5", "P1"]
    assert gathered.products[1]["price"] == 9.5
    # The vectors the state served: a price change kept its title's vector, a retitle's is new.
    np.testing.assert_array_equal(gathered.vectors[1], vectors[3])
    np.testing.assert_array_equal(gathered.vectors[-1], encode(["product 1 renamed"])[0])

    # The compacted base loads beside the old one (a deploy) and takes the next set.
    new_table, _ = base_files(tmp_path / "v2", gathered.products)
    new = CatalogueWriter(root, "2", LiveBase(2, ENCODER), new_table, DIM, encode)
    assert new.state.segments == (1, 2)  # kept for the old base, which still serves
    new.apply(changes(upsert("N2", "newer one"), {"op": "delete", "product_id": "P0"}))
    # The old writer, still loaded, sees that set before it applies its own.
    old.apply(changes(upsert("P4", "product 4 again")))
    assert "N2" in live_products(old)
    new.apply(changes(upsert("N3", "newest")))
    restarted = CatalogueWriter(root, "1", LiveBase(0, ENCODER), table, DIM, encode)
    assert live_products(restarted) == live_products(new) == {
        "P1": "product 1 renamed", "P3": "product 3", "P4": "product 4 again", "P5": "product 5",
        "N2": "newer one", "N3": "newest"}
    state = LiveFolder(root).state()
    assert state.segments == (1, 2, 3, 4, 5)
    assert state.served_on(LiveBase(0, ENCODER)) == (1, 2, 3, 4, 5)
    assert state.served_on(LiveBase(2, ENCODER)) == (3, 4, 5)
    assert state.served_on(LiveBase(2, "another encoder")) is None


def test_a_prune_forgets_the_folded_sets_but_not_their_deletes(tmp_path):
    root = tmp_path / "live"
    table, vectors = base_files(tmp_path / "v1", [
        {"product_id": f"P{i}", "title": f"product {i}"} for i in range(4)])
    writer = CatalogueWriter(root, "1", LiveBase(0, ENCODER), table, DIM, encode)
    writer.apply(changes({"op": "delete", "product_id": "P0"},
                         {"op": "delete", "product_id": "P1"}))
    writer.apply(changes(upsert("P1", "product 1 back")))
    folder = LiveFolder(root)
    gathered = served_catalogue(folder, LiveBase(0, ENCODER), table, vectors)
    writer.apply(changes({"op": "delete", "product_id": "P2"}))
    new_table, _ = base_files(tmp_path / "v2", gathered.products)
    compacted = CatalogueWriter(root, "2", LiveBase(2, ENCODER), new_table, DIM,
                                encode)
    before = folder.withdrawn(folder.state())
    assert before == {"P0", "P2"}

    kept = folder.prune(2)
    assert kept.segments == (3,) and sorted(p.name for p in (root / "segments").iterdir()) == [
        folder.segment_path(3).name]
    assert [r.sequence for r in folder.log.records()] == [3]
    assert folder.withdrawn(folder.state()) == before  # the recommender still leaves them out
    # Sequences go on from the log's last, and the writer takes the pruned state.
    assert compacted.apply(changes(upsert("P0", "product 0 back"))).sequence == 4
    assert folder.withdrawn(folder.state()) == {"P2"}
    assert folder.state().segments == (3, 4)
    assert live_products(compacted) == {"P0": "product 0 back", "P1": "product 1 back",
                                        "P3": "product 3"}

    # A base made before the prune cannot serve: the sets between are gone.
    with pytest.raises(LiveGapError, match="compacted through 2"):
        writer.apply(changes(upsert("P9", "too late")))
    with pytest.raises(LiveGapError):
        CatalogueWriter(root, "0", LiveBase(0, ENCODER), table, DIM, encode)
    assert folder.state().segments == (3, 4)  # and changed nothing


def test_a_reader_keeps_the_changes_reading_each_segment_once(tmp_path, monkeypatch):
    """Deletes, and every upsert's last row in the order of its first upsert (deleted ones
    too): the same for a reader that followed each state and for one started after a prune."""
    root = tmp_path / "live"
    table, _ = base_files(tmp_path / "v1", [
        {"product_id": f"P{i}", "title": f"product {i}"} for i in range(4)])
    writer = CatalogueWriter(root, "1", LiveBase(0, ENCODER), table, DIM, encode)
    folder = LiveFolder(root)
    reads: list[int] = []
    read_changes = LiveFolder.read_changes
    monkeypatch.setattr(LiveFolder, "read_changes",
                        lambda self, sequence: reads.append(sequence) or read_changes(self,
                                                                                   sequence))
    reader, late = CatalogueChanges(folder), CatalogueChanges(folder)

    def seen(changes: CatalogueChanges) -> tuple[set[str], list[tuple[str, str, float | None]]]:
        return changes.deleted, [(p.product_id, p.title, p.price)
                                 for p in changes.upserted.values()]

    writer.apply(changes({"op": "delete", "product_id": "P0"},
                         {"op": "delete", "product_id": "P1"}))
    assert reader.update(folder.state()).deleted == late.update(folder.state()).deleted == {
        "P0", "P1"}
    writer.apply(changes(upsert("N1", "new one"), upsert("P1", "product 1 back"),
                         upsert("P2", "product 2", 3.0)))
    # brought back; a price change deletes nothing
    assert seen(reader.update(folder.state())) == ({"P0"}, [
        ("N1", "new one", None), ("P1", "product 1 back", None), ("P2", "product 2", 3.0)])
    writer.apply(changes({"op": "delete", "product_id": "P3"}, {"op": "delete", "product_id": "N1"},
                         upsert("N2", "newer"), upsert("P2", "product 2", 4.0)))
    after_three = ({"P0", "P3", "N1"}, [  # N1 keeps its place, deleted; P2 its, repriced
        ("N1", "new one", None), ("P1", "product 1 back", None), ("P2", "product 2", 4.0),
        ("N2", "newer", None)])
    assert seen(reader.update(folder.state())) == after_three
    assert reads == [1, 1, 2, 3]  # each reader read each segment once
    # A compaction through 2 and its prune: the reader that had read no further than set 1
    # takes the folded changes from compacted.json, then reads set 3 alone; so does a new one.
    folder.prune(2)
    reads.clear()
    assert seen(late.update(folder.state())) == seen(reader.update(folder.state())) == \
        seen(CatalogueChanges(folder).update(folder.state())) == after_three
    assert reads == [3, 3]
    assert folder.withdrawn(folder.state()) == {"P0", "P3", "N1"}


def test_a_new_encoder_embeds_every_set_after_its_base_again(tmp_path):
    root = tmp_path / "live"
    table, _ = base_files(tmp_path / "v1", [
        {"product_id": f"P{i}", "title": f"product {i}"} for i in range(3)])
    writer = CatalogueWriter(root, "1", LiveBase(0, ENCODER), table, DIM, encode)
    writer.apply(changes(upsert("N1", "new one")))
    embedded: list[str] = []

    def other(titles: list[str]) -> np.ndarray:
        embedded.extend(titles)
        return -encode(titles)

    again = CatalogueWriter(root, "2", LiveBase(0, "f" * 64), table, DIM, other)
    assert embedded == ["new one"]
    state = LiveFolder(root).state()
    assert (state.encoder, state.segments) == ("f" * 64, (1,))
    np.testing.assert_array_equal(LiveFolder(root).read_segment(1, 3).embeddings,
                                  -encode(["new one"]))
    assert live_products(again) == {"P0": "product 0", "P1": "product 1", "P2": "product 2",
                                    "N1": "new one"}


def test_nothing_to_compact_is_said(tmp_path):
    table, vectors = base_files(tmp_path / "v1", [{"product_id": "P0", "title": "product 0"}])
    CatalogueWriter(tmp_path / "live", "1", LiveBase(0, ENCODER), table, DIM, encode)
    with pytest.raises(NothingToCompact):
        served_catalogue(LiveFolder(tmp_path / "live"), LiveBase(0, ENCODER), table, vectors)
    assert LiveFolder(tmp_path / "live").state() == LiveState(
        "1", (), None, CatalogueRows.of_table(table).rows, 1, ENCODER)


def test_a_large_set_is_embedded_a_chunk_at_a_time_into_the_same_vectors(tmp_path, monkeypatch):
    """The writer embeds EMBED_CHUNK titles at a time (bounded memory); the segment holds
    every appended row's vector in the set's order, titles kept in place embedding nothing."""
    from fusionrank.core.search import live_catalogue

    monkeypatch.setattr(live_catalogue, "EMBED_CHUNK", 3)
    calls: list[int] = []

    def counting(titles: list[str]) -> np.ndarray:
        calls.append(len(titles))
        return encode(titles)

    table, _ = base_files(tmp_path / "v1", [
        {"product_id": f"P{i}", "title": f"product {i}"} for i in range(4)])
    writer = CatalogueWriter(tmp_path / "live", "1", LiveBase(0, ENCODER), table, DIM, counting)
    upserts = [upsert(f"N{i}", f"new product {i}") for i in range(7)]
    writer.apply(changes(*upserts[:4], upsert("P1", "product 1", 2.0), *upserts[4:]))
    assert calls == [3, 3, 1]
    segment = LiveFolder(tmp_path / "live").read_segment(1, 4)
    np.testing.assert_array_equal(segment.embeddings,
                                  encode([f"new product {i}" for i in range(7)]))
