"""Catalogue embeddings cached by each title's text, embedded in resumable chunks.

    cache = EmbeddingCache(Path("runs/cache/catalogue"), encoder.sha256)
    report = embed_titles(titles, text_encoder, cache, out_path)   # embeddings.npy

A catalogue of a million products takes most of an hour to embed on two cores, and changes a
little every day. So each title is embedded once per encoder file and kept in `cache`, keyed
by a 64-bit BLAKE2b digest of its text (two different titles share a key with probability
about N² / 2⁶⁵: 3 · 10⁻⁸ at a million):

    <cache>/<encoder sha256[:16]>/part-<digest>.npz    keys uint64 [n], vectors float32 [n, d]

`embed_titles` looks every title up, embeds only the missing ones and writes each CHUNK of
them as a part of its own the moment it is done. An interrupted build therefore loses at most
one chunk, and a rebuild after a 1 % change embeds that 1 %. The missing titles are embedded
in the order `TextEncoder.encode` would embed them in one pass (stable by token count, batches
of `batch_size`), so a resumed build makes the very batches an uninterrupted one makes, and
the result is the same bit for bit. Who embeds them is the caller's choice (`Embedder`): this
process by default (`in_process`), or an actor pool on a Ray cluster (ray_embedding.py), which
embeds those same batches and hands them back in order. The output is written through a
memory map, one part at a time: memory stays at a chunk's vectors plus the keys, whatever the
catalogue's size.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.encoding import TextEncoder, pad

CHUNK = 8192  # titles per cached part: a multiple of the batch size (resumed batches match)
LENGTH_BLOCK = 65_536  # titles tokenised at a time to find the lengths (bounded memory)

# Titles in embedding order (each run of `batch_size` is one encoder batch) -> their vectors,
# float32 [n, d], in that order, in pieces of any size.
Embedder = Callable[[list[str]], Iterator[np.ndarray]]


def in_process(encoder: TextEncoder) -> Embedder:
    """Embed in this process, one encoder batch at a time."""

    def embed(titles: list[str]) -> Iterator[np.ndarray]:
        for start in range(0, len(titles), encoder.batch_size):
            batch = titles[start:start + encoder.batch_size]
            yield encoder.encoder(pad(encoder.tokenizer.token_ids(batch)))

    return embed


def title_keys(titles: Sequence[str]) -> np.ndarray:
    """uint64 [titles]: each title's cache key, the first 8 bytes of BLAKE2b of its UTF-8."""
    digests = b"".join(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest()
                       for t in titles)
    return np.frombuffer(digests, dtype="<u8").copy()


@dataclass(frozen=True)
class EmbedReport:
    products: int
    unique_titles: int
    cached: int  # distinct titles found in the cache
    embedded: int  # distinct titles embedded by this call
    seconds: float


class EmbeddingCache:
    """One encoder's cached title vectors: a folder of parts, each written whole (atomically)."""

    def __init__(self, root: str | Path, encoder_sha256: str):
        self.folder = Path(root) / encoder_sha256[:16]

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.npz")) if self.folder.is_dir() else []

    def keys(self) -> list[np.ndarray]:
        """Each part's keys, in `parts()` order (the vectors stay on disk)."""
        out = []
        for part in self.parts():
            with np.load(part) as arrays:
                out.append(arrays["keys"])
        return out

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(keys.tobytes()).hexdigest()[:16]
        path = self.folder / f"part-{name}.npz"
        with artefacts.replacing(path) as temporary, temporary.open("wb") as handle:
            np.savez(handle, keys=keys, vectors=vectors.astype(np.float32, copy=False))
        return path


def embed_titles(titles: Sequence[str], encoder: TextEncoder, cache: EmbeddingCache,
                 out_path: str | Path, progress: bool = True, chunk: int = CHUNK,
                 after_part: Callable[[int], None] | None = None,
                 embedder: Embedder | None = None) -> EmbedReport:
    """Write every title's embedding to `out_path` (.npy, float32 [titles, d], row i = title i),
    embedding only the titles `cache` lacks and adding them to it, one part per `chunk`.
    `encoder` orders and batches them; `embedder` embeds them (default: `encoder`, here).
    `after_part(n)` is called after the n-th new part is saved (tests interrupt a build there)."""
    if chunk % encoder.batch_size:
        raise ValueError(f"chunk {chunk} must be a multiple of the batch size "
                         f"{encoder.batch_size}")
    started = time.perf_counter()
    keys = title_keys(titles)
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    found = _cached_parts(cache, unique)
    missing = np.sort(first[found < 0])  # rows of the titles to embed, in catalogue order
    if len(missing):
        _embed_missing([titles[i] for i in missing], keys[missing], encoder,
                       embedder or in_process(encoder), cache, chunk, progress, after_part)
        found = _cached_parts(cache, unique)
    _assemble(cache, found, inverse, unique, len(titles), encoder.encoder.dimension, out_path)
    return EmbedReport(len(titles), len(unique), len(unique) - len(missing), len(missing),
                       time.perf_counter() - started)


def _cached_parts(cache: EmbeddingCache, unique: np.ndarray) -> np.ndarray:
    """int [unique keys]: the index (in cache.parts()) of a part holding each key, -1 if none."""
    found = np.full(len(unique), -1, dtype=np.int64)
    for number, part_keys in enumerate(cache.keys()):
        places = np.searchsorted(unique, part_keys)
        hit = places < len(unique)
        hit[hit] = unique[places[hit]] == part_keys[hit]
        found[places[hit]] = number
    return found


def _embed_missing(titles: list[str], keys: np.ndarray, encoder: TextEncoder,
                   embedder: Embedder, cache: EmbeddingCache, chunk: int, progress: bool,
                   after_part: Callable[[int], None] | None) -> None:
    lengths = np.concatenate([
        [len(ids) for ids in encoder.tokenizer.token_ids(titles[start:start + LENGTH_BLOCK])]
        for start in range(0, len(titles), LENGTH_BLOCK)])
    order = np.argsort(lengths, kind="stable")  # as TextEncoder.encode orders one pass
    bar = _progress(len(titles), progress)
    part = np.empty((chunk, encoder.encoder.dimension), dtype=np.float32)
    done = filled = number = 0  # titles saved in parts; of them in `part`; parts saved
    for vectors in embedder([titles[i] for i in order]):
        while len(vectors):
            taken = min(chunk - filled, len(vectors))
            part[filled:filled + taken] = vectors[:taken]
            filled, vectors = filled + taken, vectors[taken:]
            bar.update(taken)
            if filled == chunk or done + filled == len(order):
                number += 1
                cache.add(keys[order[done:done + filled]], part[:filled])
                done, filled = done + filled, 0
                if after_part is not None:
                    after_part(number)
    bar.close()
    if done != len(order):
        raise RuntimeError(f"the embedder returned {done + filled} vectors for {len(order)} "
                           "titles")


def _assemble(cache: EmbeddingCache, found: np.ndarray, inverse: np.ndarray, unique: np.ndarray,
              products: int, dimension: int, out_path: str | Path) -> None:
    """Copy each title's vector from its part into the output, one part at a time."""
    with artefacts.replacing(out_path) as temporary:
        out = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32,
                                        shape=(products, dimension))
        part_of_row = found[inverse]
        for number, part in enumerate(cache.parts()):
            rows = np.flatnonzero(part_of_row == number)
            if not len(rows):
                continue
            with np.load(part) as arrays:
                part_keys, vectors = arrays["keys"], arrays["vectors"]
            order = np.argsort(part_keys)
            at = order[np.searchsorted(part_keys[order], unique[inverse[rows]])]
            out[rows] = vectors[at]
        out.flush()
        del out


class _Silent:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, show: bool):
    if not show:
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, desc="embedding titles", unit="title", smoothing=0.05)
