"""Build the FAISS ANN index of a catalogue's embeddings (core/search/ann.py serves it).

    report = build_ann_index(embeddings, folder / ANN_INDEX, AnnParams())
    report = update_ann_index(previous_folder, embeddings, folder / ANN_INDEX) or ...

writes the index and, beside it, its record (ANN_RECORD: parameters, search settings, SHA-256)
and a 64-bit digest of each entry's vector (ANN_KEYS), which lets the next build update this
index instead of building a new one: `update_ann_index` pairs the new catalogue's vectors with
the entries holding the same vector, adds only the vectors no entry holds, and marks the rest
stale (ANN_ROWS maps entries to rows). HNSW has no removal, and a graph built whole takes
minutes at a million products where adding 1 % takes seconds; stale entries still guide the
search through the graph but are never returned. Past MAX_STALE of the entries the index is
built whole again, so they never come to dominate what a query walks.
Inner product on unit rows is the cosine. The defaults are the served configuration the sweep
picked on the real 1M catalogue (benchmarks/reports/ann_sweep.md): each index at its smallest
setting with recall@100 ≥ 0.96 against exact, then the fastest.
Training reads a seeded sample; adding reads the (memory-mapped) embeddings in chunks, so memory
stays bounded by the sample, a chunk and the index itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.search.ann import AnnRecord, check_sha256, record_path

INDEX_TYPES = ("ivf_flat", "ivf_sq8", "ivf_pq", "hnsw", "hnsw_sq8", "hnsw_fp16")
# An HNSW graph's vectors: float32 (hnsw), 8-bit codes (a quarter of the bytes) or float16 (half:
# whole enough to serve as the catalogue's product vectors, core/search/ann.py IndexVectors).
HNSW_CODES = {"hnsw": "Flat", "hnsw_sq8": "SQ8", "hnsw_fp16": "SQfp16"}
ADD_CHUNK = 65_536  # rows added a call
# FAISS's k-means wants at least this many training points a list (it warns below 39).
POINTS_PER_LIST = 39
# An update that would leave more than this share of the entries stale builds the index whole
# instead: each stale entry still costs a query its visit and the index its bytes.
MAX_STALE = 0.1
KEY_CHUNK = 65_536  # rows hashed a block (bounded memory)


@dataclass(frozen=True)
class AnnParams:
    """An index's kind and settings. The defaults are the sweep's pick on the 1M catalogue
    (benchmarks/reports/ann_sweep.md, 2026-12-07, graphs built at efConstruction 200):
    HNSW32,SQfp16 at efSearch 192, recall@100 0.967 against exact, 1,040 bytes a product that
    serve as the product vectors too; HNSW16,SQfp16 (0.970 at efSearch 256) is as fast. The
    8-bit indexes (HNSW32,SQ8: 0.967 at efSearch 192; IVF4000,SQ8: 0.962 at nprobe 256) read
    the 1,536-byte float32 rows besides, which a million products cannot afford in 4 GiB over
    two model copies. A graph built at efConstruction 80 needed efSearch 512 for 0.964."""

    index_type: str = "hnsw_fp16"
    nlist: int | None = None  # IVF: inverted lists (k-means cells); None: nlist_per_root · √N
    nlist_per_root: float = 16.0  # IVF, nlist None: lists per √products
    nprobe: int = 256  # IVF: lists visited a query
    pq_m: int = 48  # IVF-PQ: sub-quantisers (must divide d)
    pq_bits: int = 8  # IVF-PQ: bits a sub-quantiser code
    hnsw_m: int = 32  # HNSW: neighbours a node
    ef_construction: int = 200  # HNSW: candidate list length while adding
    ef_search: int = 192  # HNSW: candidate list length a query
    train_size: int = 100_000  # IVF: rows sampled to train on
    seed: int = 0

    @property
    def graph(self) -> bool:
        """An HNSW graph (searched at ef_search) rather than IVF lists (at nprobe)."""
        return self.index_type.startswith("hnsw")

    def lists(self, products: int) -> int:
        if self.nlist is not None:
            return self.nlist
        return max(1, round(self.nlist_per_root * math.sqrt(products)))

    def factory(self, products: int) -> str:
        """The faiss.index_factory string."""
        if self.graph:
            return f"HNSW{self.hnsw_m},{HNSW_CODES[self.index_type]}"
        coarse = f"IVF{self.lists(products)}"
        # PQ "np": no polysemous training, which multiplied the build time by ~10 (45,782
        # products: 155 s) for a Hamming pre-filter this search does not use.
        codes = {"ivf_flat": "Flat", "ivf_sq8": "SQ8",
                 "ivf_pq": f"PQ{self.pq_m}x{self.pq_bits}np"}[self.index_type]
        return f"{coarse},{codes}"

    def check(self, products: int, dim: int) -> None:
        """A ValueError naming the parameter FAISS would reject (with a C++ error) or that
        makes no index worth having."""
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {', '.join(INDEX_TYPES)}, "
                             f"not {self.index_type!r}")
        if self.graph:
            positive = {"hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction,
                        "ef_search": self.ef_search}
        else:
            positive = {"nlist": self.lists(products), "nprobe": self.nprobe,
                        "train_size": self.train_size}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if self.graph:
            return
        points = min(self.train_size, products)
        if self.lists(products) > points:
            raise ValueError(f"nlist = {self.lists(products)} exceeds the {points} training "
                             "points (train_size or the catalogue): each list needs a point")
        if self.nprobe > self.lists(products):
            raise ValueError(f"nprobe = {self.nprobe} exceeds nlist = {self.lists(products)}")
        if self.index_type == "ivf_pq":
            if self.pq_m < 1 or dim % self.pq_m:
                raise ValueError(f"pq_m = {self.pq_m} must divide the dimension {dim}")
            if not 1 <= self.pq_bits <= 16:
                raise ValueError(f"pq_bits must be between 1 and 16, not {self.pq_bits}")
            if 2 ** self.pq_bits > points:
                raise ValueError(f"pq_bits = {self.pq_bits} needs 2^{self.pq_bits} training "
                                 f"points per sub-quantiser; only {points}")


@dataclass(frozen=True)
class AnnReport:
    """What a build made: where, from what, how long it took."""

    path: str
    factory: str
    params: dict
    products: int
    dim: int
    sha256: str
    bytes: int
    train_seconds: float
    add_seconds: float
    entries: int | None = None  # vectors in the index, stale too (None: one a product)
    stale: int = 0
    carried: int | None = None  # entries kept from the index updated (None: built whole)
    added: int | None = None  # vectors added to it

    @property
    def build_seconds(self) -> float:
        return self.train_seconds + self.add_seconds

    @property
    def bytes_per_product(self) -> float:
        return self.bytes / self.products

    def to_json(self) -> dict:
        return {**asdict(self), "build_seconds": round(self.build_seconds, 2),
                "bytes_per_product": round(self.bytes_per_product, 1)}


def training_sample(embeddings: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` rows drawn without replacement (in row order: a memory-mapped file is read
    forward), as one float32 array."""
    products = len(embeddings)
    if size >= products:
        return np.ascontiguousarray(embeddings, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(products, size=size, replace=False))
    return np.ascontiguousarray(embeddings[rows], dtype=np.float32)


def build_ann_index(embeddings: np.ndarray, path: str | Path,
                    params: AnnParams | None = None, progress: bool = True) -> AnnReport:
    """Index `embeddings` (float32 [products, d], unit rows; memory-mapped is best) at `path`
    and record it beside (record_path). The seeded sample and k-means make IVF builds
    repeatable (two builds of 10,000 products: the same SHA-256, for HNSW too, though FAISS's
    multi-threaded HNSW insertion does not promise it)."""
    params = params or AnnParams()
    path = Path(path)
    products, dim = embeddings.shape
    params.check(products, dim)
    factory = params.factory(products)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    started = time.perf_counter()
    if params.graph:
        faiss.ParameterSpace().set_index_parameter(index, "efConstruction",
                                                   params.ef_construction)
    else:
        faiss.extract_index_ivf(index).cp.seed = params.seed  # the coarse k-means
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # as add_in_chunks
    if not index.is_trained:  # IVF's lists and codes, HNSW-SQ8's code ranges
        index.train(training_sample(embeddings, params.train_size, params.seed))
    trained = time.perf_counter()
    add_in_chunks(index, embeddings, progress)
    added = time.perf_counter()
    save_index(index, path, keys=vector_keys(embeddings), rows=None)
    report = AnnReport(path=str(path), factory=factory, params=asdict(params),
                       products=products, dim=dim, sha256=artefacts.file_sha256(path),
                       bytes=path.stat().st_size, train_seconds=round(trained - started, 2),
                       add_seconds=round(added - trained, 2))
    write_record(report, params)
    return report


def update_ann_index(previous: str | Path, embeddings: np.ndarray, path: str | Path,
                     params: AnnParams | None = None, progress: bool = True
                     ) -> AnnReport | None:
    """The index in the folder `previous` brought up to `embeddings` and written at `path`
    (its record, keys and rows beside): its entries holding a vector of `embeddings` are kept
    for that row, the vectors no entry holds are added, the other entries go stale. None
    where it cannot be: no index there (or one damaged, or without keys), another factory or
    dimension, or more than MAX_STALE of the entries stale afterwards; build whole then."""
    params = params or AnnParams()
    previous, path = Path(previous), Path(path)
    products, dim = embeddings.shape
    params.check(products, dim)
    old = _updatable(previous, params, products, dim)
    if old is None:
        return None
    record, entry_keys, entry_rows = old
    started = time.perf_counter()
    keys = vector_keys(embeddings)
    kept, fresh = carried_entries(entry_keys, entry_rows >= 0, keys)
    entries = len(kept) + len(fresh)
    stale = int((kept < 0).sum())
    if stale > MAX_STALE * entries:
        return None
    index = faiss.read_index(str(previous / artefacts.ANN_INDEX))  # into memory: it grows
    add_in_chunks(index, embeddings, progress, rows=fresh)
    added = time.perf_counter()
    save_index(index, path, keys=np.concatenate([entry_keys, keys[fresh]]),
               rows=np.concatenate([kept, fresh]))
    report = AnnReport(path=str(path), factory=record.factory, params=asdict(params),
                       products=products, dim=dim, sha256=artefacts.file_sha256(path),
                       bytes=path.stat().st_size, train_seconds=0.0,
                       add_seconds=round(added - started, 2), entries=entries, stale=stale,
                       carried=int((kept >= 0).sum()), added=len(fresh))
    write_record(report, params)
    return report


def _updatable(folder: Path, params: AnnParams, products: int, dim: int
               ) -> tuple[AnnRecord, np.ndarray, np.ndarray] | None:
    """The record, entry keys and entry rows of the index in `folder`, where it is intact and
    of these parameters' factory and dimension (and, a graph, built at their efConstruction:
    the vectors added go in at the graph's own, and a graph of another is rebuilt whole)."""
    index_path, keys_path = folder / artefacts.ANN_INDEX, folder / artefacts.ANN_KEYS
    rows_path = folder / artefacts.ANN_ROWS
    try:
        record = AnnRecord.load(record_path(index_path))
        if record.factory != params.factory(products) or record.dim != dim or \
                record.keys_sha256 is None or \
                (params.graph and record.ef_construction != params.ef_construction):
            return None
        check_sha256(index_path, record.sha256)
        check_sha256(keys_path, record.keys_sha256)
        if record.rows_sha256 is not None:
            check_sha256(rows_path, record.rows_sha256)
        entries = record.entries if record.entries is not None else record.products
        keys = artefacts.load_array(keys_path, shape=(entries,))
        rows = np.arange(entries, dtype=np.int64) if record.rows_sha256 is None else \
            artefacts.load_array(rows_path, shape=(entries,)).astype(np.int64)
    except (OSError, artefacts.ArtefactError):
        return None
    return record, keys, rows


def carried_entries(entry_keys: np.ndarray, live: np.ndarray, row_keys: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Pair rows with live entries of the same vector key (the n-th row of a key with the
    n-th entry of it, so duplicates pair one to one): int64 [entries] the row each entry now
    holds (-1: stale), and the rows no entry holds, ascending."""
    live_entries = np.flatnonzero(live)
    _, at_entry, at_row = np.intersect1d(_numbered(entry_keys[live_entries]),
                                         _numbered(row_keys), assume_unique=True,
                                         return_indices=True)
    kept = np.full(len(entry_keys), -1, dtype=np.int64)
    kept[live_entries[at_entry]] = at_row
    fresh = np.ones(len(row_keys), dtype=bool)
    fresh[at_row] = False
    return kept, np.flatnonzero(fresh)


def _numbered(keys: np.ndarray) -> np.ndarray:
    """(key, how many times it occurred before) for each key: unique, as intersect1d needs."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
    out = np.empty(len(keys), dtype=[("key", "<u8"), ("seen", "<i8")])
    out["key"] = keys
    out["seen"][order] = np.arange(len(keys)) - first
    return out


def vector_keys(embeddings: np.ndarray) -> np.ndarray:
    """uint64 [rows]: the first 8 bytes of BLAKE2b of each row's float32 bytes, as the
    embedding cache keys titles (two vectors share a key with probability ~N² / 2⁶⁵)."""
    keys = np.empty(len(embeddings), dtype="<u8")
    for start in range(0, len(embeddings), KEY_CHUNK):
        block = np.ascontiguousarray(embeddings[start:start + KEY_CHUNK], dtype=np.float32)
        keys[start:start + len(block)] = np.frombuffer(b"".join(
            hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in block),
            dtype="<u8")
    return keys


def save_index(index: faiss.Index, path: Path, keys: np.ndarray,
               rows: np.ndarray | None) -> None:
    """The index at `path`, its entries' keys (ANN_KEYS) and, where entries are not rows,
    their rows (ANN_ROWS) beside it; an ANN_ROWS left from an earlier build is removed."""
    with artefacts.replacing(path) as temporary:
        faiss.write_index(index, str(temporary))
    with artefacts.replacing(path.with_name(artefacts.ANN_KEYS)) as temporary, \
            temporary.open("wb") as handle:
        np.save(handle, keys.astype("<u8"))
    rows_path = path.with_name(artefacts.ANN_ROWS)
    if rows is None:
        rows_path.unlink(missing_ok=True)
        return
    with artefacts.replacing(rows_path) as temporary, temporary.open("wb") as handle:
        np.save(handle, rows.astype(np.int32))


def add_in_chunks(index: faiss.Index, embeddings: np.ndarray, progress: bool,
                  rows: np.ndarray | None = None) -> None:
    """Add `embeddings` (its `rows` only, where given) to the index, ADD_CHUNK at a time, on
    every core."""
    # FAISS's thread count is the process's: a search before (AnnIndex.search sets one thread,
    # as a served copy runs) would otherwise leave the build on one core, twice as long.
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    total = len(embeddings) if rows is None else len(rows)
    starts = range(0, total, ADD_CHUNK)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="adding to the ANN index", unit="chunk", mininterval=5.0)
    for start in starts:
        block = embeddings[start:start + ADD_CHUNK] if rows is None else \
            embeddings[rows[start:start + ADD_CHUNK]]
        index.add(np.ascontiguousarray(block, dtype=np.float32))


def write_record(report: AnnReport, params: AnnParams) -> None:
    """The record the server reads (core/search/ann.py AnnRecord) plus the build's report."""
    search = ({"ef_search": params.ef_search, "ef_construction": params.ef_construction}
              if params.graph else {"nprobe": params.nprobe})
    folder = Path(report.path).parent
    entries = {"entries": report.entries,
               "rows_sha256": artefacts.file_sha256(folder / artefacts.ANN_ROWS)
               } if report.entries is not None else {}
    record = {"factory": report.factory, "products": report.products, "dim": report.dim,
              "sha256": report.sha256, **search, **entries,
              "keys_sha256": artefacts.file_sha256(folder / artefacts.ANN_KEYS),
              "build": report.to_json()}
    with artefacts.replacing(record_path(report.path)) as temporary:
        temporary.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
