"""Approximate retrieval for large catalogues: a FAISS index finds the most similar products.

`AnnIndex.search` answers what the exact retrieval step (export/search/retrieval.py,
`int8_retrieval_graph`) answers: each query's k most similar catalogue rows, best first (ties
by the lower row), with their cosine. Only the search differs: a graph or inverted lists
instead of an 8-bit product with every product. The dense candidates therefore feed the hybrid
pool unchanged.

What the cosine is computed from depends on the index's codes. An index that keeps its vectors
whole (float16 or float32 codes: `AnnRecord.stores_vectors`) is itself the catalogue's vectors
for the process that serves it (`IndexVectors`): its own inner products are the answer's
cosines and the ranker's features read the same vectors (core/search/retrieval.py
`product_vectors`), so the float32 embeddings are not mapped beside it (at a million products,
1.5 GB a process that two model copies each hold resident: benchmarks/reports/scale.md). The
float16 copy rounds a cosine by about 1e-4. An index of 8-bit or PQ codes shortlists
SHORTLIST · k products, rescored exactly from the float32 embeddings.

The index file (ANN_INDEX) is built by export/search/ann.py; its record (ANN_RECORD, beside it)
holds the build parameters, the search settings (nprobe, efSearch: FAISS does not save them in
the index) and the file's SHA-256, checked before FAISS reads a byte of it.

A rebuild after a catalogue change updates the last build's index rather than building it
again (export/search/ann.py `update_ann_index`): the new and changed products' vectors are
added as new entries and the entries of removed or changed products stay in the graph, stale.
So an index entry is not a catalogue row: ANN_ROWS maps each entry to its row (-1: stale), and
the search skips stale entries inside FAISS (an IDSelectorBitmap), so a shortlist is never cut
short by them. An index without ANN_ROWS (built whole, before this file existed) has entry i
at row i.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from fusionrank.core import artefacts

# Same factor as export/search/retrieval.py's SHORTLIST (core cannot import export; a test
# holds the two equal): an index of 8-bit or PQ codes shortlists SHORTLIST · k products,
# rescored.
SHORTLIST = 3
# Below this many products the exact retrieval graph is served: it is exact, and about as
# fast. benchmarks/reports/ann_sweep.md ("where ANN starts to pay", cuts of the real 1M
# catalogue, 2026-12-07): the picked HNSW32,SQfp16 is 1.25× faster than the INT8 graph one and
# eight queries a call from 125,000 products on (0.44 against 2.32 ms a query one at a time,
# 0.45 against 0.75 eight at a time); at 62,500 the graph is within a fifth of it eight at a
# time (0.50 against 0.40), at 31,250 faster (0.32 against 0.33).
EXACT_BELOW = 100_000
# FAISS threads per search call: the server runs two model copies on two cores, so a second
# thread would only wait for the core the other copy computes on.
THREADS = 1
EXACT_BLOCK = 65_536  # catalogue rows a block when a query falls back to exact search
# The codes of an HNSW index that keep a vector whole (to float16 rounding) and that it decodes
# by entry (an IVF index would need a direct map from entries to lists first).
WHOLE_CODES = ("Flat", "SQfp16")


def keeps_vectors(factory: str) -> bool:
    """Whether an index of this faiss.index_factory string keeps each vector whole and decodes
    it by entry: HNSW with float16 or float32 codes (`WHOLE_CODES`)."""
    graph, codes = factory.split(",")[0], factory.split(",")[-1]
    return graph.startswith("HNSW") and codes in WHOLE_CODES


def record_path(index_path: str | Path) -> Path:
    """The record beside an index file: ann.faiss → ann.json."""
    return Path(index_path).with_suffix(".json")


@dataclass(frozen=True)
class AnnRecord:
    """What the build recorded beside the index (ANN_RECORD)."""

    factory: str  # the faiss.index_factory string, e.g. "IVF2048,SQ8"
    products: int
    dim: int
    sha256: str  # of the index file
    nprobe: int | None = None  # IVF: inverted lists visited a query
    ef_search: int | None = None  # HNSW: candidate list length a query
    ef_construction: int | None = None  # HNSW: that while adding (None: not recorded)
    entries: int | None = None  # vectors in the index, stale ones too (None: = products)
    rows_sha256: str | None = None  # of ANN_ROWS (None: none written, entry i is row i)
    keys_sha256: str | None = None  # of ANN_KEYS (what a later build's update reads)

    @property
    def stores_vectors(self) -> bool:
        """Whether the index keeps each vector whole (float16 or float32 codes), so that it
        can serve as the catalogue's product vectors."""
        return keeps_vectors(self.factory)

    @classmethod
    def load(cls, path: str | Path) -> AnnRecord:
        path = Path(path)
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            return cls(factory=str(saved["factory"]), products=int(saved["products"]),
                       dim=int(saved["dim"]), sha256=str(saved["sha256"]),
                       nprobe=saved.get("nprobe"), ef_search=saved.get("ef_search"),
                       ef_construction=saved.get("ef_construction"),
                       entries=saved.get("entries"), rows_sha256=saved.get("rows_sha256"),
                       keys_sha256=saved.get("keys_sha256"))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise artefacts.ArtefactError(f"{path} is not a readable ANN index record "
                                          f"({error}); rebuild the index") from error


def check_sha256(path: Path, expected: str) -> None:
    """An ArtefactError naming `path` where its SHA-256 is not the one its record holds."""
    if artefacts.file_sha256(path) != expected:
        raise artefacts.ArtefactError(
            f"{path} does not match its SHA-256 {expected[:12]}… (changed or damaged since the "
            "build); rebuild the index")


def read_mapped(path: Path, sha256: str) -> faiss.Index:
    """The index, memory-mapped, once its SHA-256 is checked: FAISS 1.15's IO_FLAG_MMAP_IFC maps
    IVF codes and HNSW's vectors and graph alike, so the two served copies share the file's
    pages and only the pages a query visits are read. Measured on 45,782 products (IVF-SQ8,
    HNSW32): < 1.5 MiB of private memory a process, against the file's size read into memory
    without it (IO_FLAG_MMAP maps IVF lists only). An index kind it cannot map is read into
    memory. One mapping per file and process (keyed by the file itself, as
    `artefacts.load_array` maps): the Retrieve step and the ranker's product vectors
    (`IndexVectors`) then share it, and the process's resident size counts its pages once."""
    status = path.stat()
    return _read_mapped(str(path), sha256, status.st_dev, status.st_ino, status.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_mapped(path: str, sha256: str, device: int, inode: int,
                 modified_ns: int) -> faiss.Index:
    check_sha256(Path(path), sha256)
    for flag in (faiss.IO_FLAG_MMAP_IFC, faiss.IO_FLAG_MMAP, 0):
        try:
            index = faiss.read_index(path, flag)
        except RuntimeError:
            continue
        return index
    raise artefacts.ArtefactError(f"{path} is not a FAISS index FAISS {faiss.__version__} "
                                  "can read; rebuild it")


def stored_vectors(index: faiss.Index) -> tuple[np.ndarray, faiss.Index | None]:
    """An HNSW index's vectors as FAISS holds them, a numpy view over the index's own (mapped)
    memory [entries, code bytes or d], and the storage that decodes them: uint8 codes of
    float16 (SQfp16: IEEE half floats, decoded by FAISS's `sa_decode`, 2.6× faster than numpy
    1.26's float16 cast and bit-identical to it) or float32 rows (Flat: None, nothing to
    decode). Rows are gathered by numpy, where FAISS's reconstruct decodes one vector a call
    (0.5 ms a query for the ~500 rows a query reads, measured at a million products)."""
    storage = faiss.downcast_index(index.storage)
    if isinstance(storage, faiss.IndexScalarQuantizer) and \
            storage.sq.qtype == faiss.ScalarQuantizer.QT_fp16:
        raw = faiss.rev_swig_ptr(storage.codes.data(), storage.ntotal * storage.code_size)
        return raw.reshape(storage.ntotal, storage.code_size), storage
    if isinstance(storage, faiss.IndexFlat):
        return faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * index.d).reshape(
            storage.ntotal, index.d), None
    raise TypeError(f"{type(storage).__name__} does not keep its vectors whole")


class IndexVectors:
    """The catalogue's product vectors by row, as an index that keeps them whole stores them
    (`AnnRecord.stores_vectors`): `vectors[rows]` is float32 [len(rows), d], read from the
    index's codes (float16, decoded; or float32). Row-indexed like the float32 embeddings it
    stands in for (integer arrays and slices), so the feature sources read it unchanged."""

    def __init__(self, index: faiss.Index, entry_rows: np.ndarray | None, products: int,
                 path: Path):
        self.index = index  # kept: `stored` is a view of its memory
        self.stored, self.decoder = stored_vectors(index)
        self.shape = (products, index.d)
        self.dtype = np.dtype(np.float32)
        if entry_rows is None:  # entry i is row i
            self.row_entries = None
            return
        live = np.flatnonzero(entry_rows >= 0)
        self.row_entries = np.full(products, -1, dtype=np.int64)
        self.row_entries[entry_rows[live]] = live
        if (self.row_entries < 0).any():
            raise artefacts.ArtefactError(
                f"{path} holds no entry for catalogue row "
                f"{int(np.flatnonzero(self.row_entries < 0)[0])}; rebuild the index")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: np.ndarray | slice) -> np.ndarray:
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(len(self)))
        rows = np.asarray(rows, dtype=np.int64)
        entries = rows.reshape(-1) if self.row_entries is None else \
            self.row_entries[rows.reshape(-1)]
        gathered = self.stored[entries]
        decoded = gathered if self.decoder is None else self.decoder.sa_decode(gathered)
        return decoded.reshape(*rows.shape, self.shape[1])


class AnnIndex:
    """A FAISS index of `embeddings`' rows, memory-mapped, answering with the cosines of the
    product vectors (`vectors`: the index's own where it keeps them whole, else `embeddings`,
    which rescore its shortlist)."""

    def __init__(self, index_path: str | Path, embeddings: np.ndarray,
                 sha256: str | None = None, threads: int = THREADS):
        """`embeddings`: the float32 [products, d] unit rows the index was built from (pass
        them memory-mapped: an index of 8-bit or PQ codes reads the shortlist's rows, one that
        keeps its vectors whole none). `sha256`: the index file's expected digest; None takes
        the one recorded beside it (record_path)."""
        self.path = Path(index_path)
        self.record = AnnRecord.load(record_path(self.path))
        self.index = read_mapped(self.path, sha256 or self.record.sha256)
        self.embeddings = embeddings
        self.entry_rows = self._entry_rows()
        # What the cosines come from (and the rare exact fallback reads): the index's own
        # vectors where it keeps them whole, else the float32 embeddings.
        self.vectors = IndexVectors(self.index, self.entry_rows, len(embeddings), self.path) \
            if self.record.stores_vectors else embeddings
        live = None if self.entry_rows is None else self.entry_rows >= 0
        self.live_entries = self.products if live is None else int(live.sum())
        self.threads = threads
        self.fallbacks = 0  # queries the index found fewer than k products for (exact instead)
        self.params = self._live_filter(live)
        self.tune(nprobe=self.record.nprobe, ef_search=self.record.ef_search)

    def _entry_rows(self) -> np.ndarray | None:
        """int32 [entries]: each index entry's catalogue row (-1: stale), checked against its
        SHA-256 and the catalogue; None where entry i is row i."""
        products, dim = self.embeddings.shape
        if self.record.rows_sha256 is None:
            if (self.index.ntotal, self.index.d) != (products, dim):
                raise artefacts.ArtefactError(
                    f"{self.path} indexes {self.index.ntotal} vectors of {self.index.d} "
                    f"dimensions; the embeddings are {[products, dim]}")
            return None
        path = self.path.with_name(artefacts.ANN_ROWS)
        check_sha256(path, self.record.rows_sha256)
        rows = artefacts.load_array(path, shape=(self.index.ntotal,), mmap=True)
        if self.index.d != dim or rows.max(initial=-1) >= products:
            raise artefacts.ArtefactError(
                f"{self.path} ({self.index.d} dimensions, rows up to {rows.max(initial=-1)}) "
                f"does not index these embeddings {[products, dim]}")
        return rows

    def _live_filter(self, live: np.ndarray | None) -> faiss.SearchParameters | None:
        """Search parameters that skip the stale entries (`live` False; None where there are
        none)."""
        if live is None or self.live_entries == len(live):
            return None
        # Kept on self: FAISS reads the bitmap through a raw pointer at every search.
        self._live = np.packbits(live, bitorder="little")
        self._selector = faiss.IDSelectorBitmap(len(live), faiss.swig_ptr(self._live))
        params = faiss.SearchParametersHNSW() if "HNSW" in self.record.factory else \
            faiss.SearchParametersIVF()
        params.sel = self._selector
        return params

    @classmethod
    def load(cls, folder: str | Path, threads: int = THREADS) -> AnnIndex:
        """The index of a model version folder (ANN_INDEX, ANN_RECORD, EMBEDDINGS)."""
        folder = Path(folder)
        embeddings = artefacts.load_array(folder / artefacts.EMBEDDINGS, mmap=True)
        return cls(folder / artefacts.ANN_INDEX, embeddings, threads=threads)

    @property
    def products(self) -> int:
        return len(self.embeddings)

    def describe(self) -> str:
        setting = (f"nprobe {self.record.nprobe}" if self.record.nprobe is not None
                   else f"efSearch {self.record.ef_search}")
        cosines = "its own cosines" if self.record.stores_vectors else "rescored exactly"
        return f"FAISS {self.record.factory}, {setting}, {cosines}"

    def tune(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Set the search-time settings (the sweep varies them on one loaded index). The
        process's one mapping of the file is shared (read_mapped): every AnnIndex of it sees
        the setting."""
        space = faiss.ParameterSpace()
        if nprobe is not None:
            space.set_index_parameter(self.index, "nprobe", int(nprobe))
            if self.params is not None and hasattr(self.params, "nprobe"):
                self.params.nprobe = int(nprobe)
        if ef_search is not None:
            space.set_index_parameter(self.index, "efSearch", int(ef_search))
            if self.params is not None and hasattr(self.params, "efSearch"):
                self.params.efSearch = int(ef_search)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """rows int64 [n, k] and their cosine float32 [n, k] (from `self.vectors`), best
        first, ties by the lower row."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.index.d:
            raise ValueError(f"vectors must be [n, {self.index.d}], not {list(vectors.shape)}")
        if not 1 <= k <= self.products:
            raise ValueError(f"k = {k} must be between 1 and the index's {self.products} "
                             "products")
        faiss.omp_set_num_threads(self.threads)
        # An index that keeps its vectors whole computes the cosine itself, from the very
        # vectors a rescoring would read: its k best are the answer, with FAISS's inner
        # products. Others shortlist SHORTLIST · k by their codes, rescored exactly.
        whole = self.record.stores_vectors
        found_scores, shortlist = self.index.search(
            vectors, min(k if whole else SHORTLIST * k, self.live_entries), params=self.params)
        rows = np.empty((len(vectors), k), dtype=np.int64)
        similarity = np.empty((len(vectors), k), dtype=np.float32)
        for i, (vector, found, scores) in enumerate(zip(vectors, shortlist, found_scores,
                                                        strict=True)):
            kept = found >= 0  # -1: the probed lists held fewer products than asked
            found, scores = found[kept], scores[kept]
            if self.entry_rows is not None:
                found = self.entry_rows[found].astype(np.int64)
            if len(found) < k:
                self.fallbacks += 1
                rows[i], similarity[i] = self.exact(vector, k)
            else:
                rows[i], similarity[i] = best(
                    found, scores if whole else self.cosines(vector, found), k)
        return rows, similarity

    def cosines(self, vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The cosine of `vector` with the given rows' vectors, read in row order (a
        memory-mapped catalogue is then read forward)."""
        order = np.argsort(rows)
        gathered = np.empty(len(rows), dtype=np.float32)
        gathered[order] = np.asarray(self.vectors[rows[order]], dtype=np.float32) @ vector
        return gathered

    def exact(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top k over every product's vector, block by block (bounded memory): the rare
        query whose probed lists hold fewer than k products."""
        scores = np.concatenate([
            np.asarray(self.vectors[start:start + EXACT_BLOCK], dtype=np.float32) @ vector
            for start in range(0, self.products, EXACT_BLOCK)])
        return best(np.arange(self.products, dtype=np.int64), scores, k)


def best(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (rows, scores), best first, ties by the lower row."""
    order = np.lexsort((rows, -scores))[:k]
    return rows[order].astype(np.int64), scores[order].astype(np.float32)
