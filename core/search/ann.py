"""Approximate retrieval for large catalogues: a FAISS index shortlists, the float32 embeddings
rescore exactly.

`AnnIndex.search` answers what the exact retrieval step (export/search/retrieval.py,
`int8_retrieval_graph`) answers: each query's k most similar catalogue rows, best first (ties
by the lower row), with their exact cosine. Only the shortlist differs: FAISS's SHORTLIST · k
products instead of an 8-bit product with every product. The dense candidates therefore feed
the hybrid pool unchanged.

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

import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from fusionrank.core import artefacts

# Same factor as export/search/retrieval.py's SHORTLIST (core cannot import export; a test
# holds the two equal): FAISS shortlists SHORTLIST · k products, rescored exactly.
SHORTLIST = 3
# Below this many products the exact retrieval graph is served: it is exact, and as fast or
# faster. benchmarks/reports/ann_sweep.md ("where ANN starts to pay", cuts of the real 1M
# catalogue): the INT8 graph is faster at 31,250 and 62,500 products and the picked HNSW32,SQ8
# from 125,000 on (5.3 against 2.0 ms a query one at a time, 2.2 against 2.0 eight at a time).
EXACT_BELOW = 100_000
# FAISS threads per search call: the server runs two model copies on two cores, so a second
# thread would only wait for the core the other copy computes on.
THREADS = 1
EXACT_BLOCK = 65_536  # catalogue rows a block when a query falls back to exact search


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
    entries: int | None = None  # vectors in the index, stale ones too (None: = products)
    rows_sha256: str | None = None  # of ANN_ROWS (None: none written, entry i is row i)
    keys_sha256: str | None = None  # of ANN_KEYS (what a later build's update reads)

    @classmethod
    def load(cls, path: str | Path) -> AnnRecord:
        path = Path(path)
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            return cls(factory=str(saved["factory"]), products=int(saved["products"]),
                       dim=int(saved["dim"]), sha256=str(saved["sha256"]),
                       nprobe=saved.get("nprobe"), ef_search=saved.get("ef_search"),
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


def read_mapped(path: Path) -> faiss.Index:
    """The index, memory-mapped: FAISS 1.15's IO_FLAG_MMAP_IFC maps IVF codes and HNSW's
    vectors and graph alike, so the two served copies share the file's pages and only the
    pages a query visits are read. Measured on 45,782 products (IVF-SQ8, HNSW32): < 1.5 MiB
    of private memory a process, against the file's size read into memory without it
    (IO_FLAG_MMAP maps IVF lists only). An index kind it cannot map is read into memory."""
    for flag in (faiss.IO_FLAG_MMAP_IFC, faiss.IO_FLAG_MMAP, 0):
        try:
            index = faiss.read_index(str(path), flag)
        except RuntimeError:
            continue
        return index
    raise artefacts.ArtefactError(f"{path} is not a FAISS index FAISS {faiss.__version__} "
                                  "can read; rebuild it")


class AnnIndex:
    """A FAISS index of `embeddings`' rows, memory-mapped, searched with exact rescoring."""

    def __init__(self, index_path: str | Path, embeddings: np.ndarray,
                 sha256: str | None = None, threads: int = THREADS):
        """`embeddings`: the float32 [products, d] unit rows the index was built from (pass
        them memory-mapped: only the shortlist's rows are read). `sha256`: the index file's
        expected digest; None takes the one recorded beside it (record_path)."""
        self.path = Path(index_path)
        self.record = AnnRecord.load(record_path(self.path))
        check_sha256(self.path, sha256 or self.record.sha256)
        self.index = read_mapped(self.path)
        self.embeddings = embeddings
        self.entry_rows = self._entry_rows()
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
        return f"FAISS {self.record.factory}, {setting}, rescored exactly"

    def tune(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Set the search-time settings (the sweep varies them on one loaded index)."""
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
        """rows int64 [n, k] and their exact cosine float32 [n, k], best first, ties by the
        lower row."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.index.d:
            raise ValueError(f"vectors must be [n, {self.index.d}], not {list(vectors.shape)}")
        if not 1 <= k <= self.products:
            raise ValueError(f"k = {k} must be between 1 and the index's {self.products} "
                             "products")
        faiss.omp_set_num_threads(self.threads)
        _, shortlist = self.index.search(vectors, min(SHORTLIST * k, self.live_entries),
                                         params=self.params)
        rows = np.empty((len(vectors), k), dtype=np.int64)
        similarity = np.empty((len(vectors), k), dtype=np.float32)
        for i, (vector, found) in enumerate(zip(vectors, shortlist, strict=True)):
            found = found[found >= 0]  # -1: the probed lists held fewer products than asked
            if self.entry_rows is not None:
                found = self.entry_rows[found].astype(np.int64)
            if len(found) < k:
                self.fallbacks += 1
                rows[i], similarity[i] = self.exact(vector, k)
            else:
                rows[i], similarity[i] = best(found, self.cosines(vector, found), k)
        return rows, similarity

    def cosines(self, vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The exact cosine of `vector` with the given rows, read in row order (a memory-mapped
        catalogue is then read forward)."""
        order = np.argsort(rows)
        gathered = np.empty(len(rows), dtype=np.float32)
        gathered[order] = np.asarray(self.embeddings[rows[order]], dtype=np.float32) @ vector
        return gathered

    def exact(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top k over the whole catalogue, block by block (bounded memory): the rare
        query whose probed lists hold fewer than k products."""
        scores = np.concatenate([
            np.asarray(self.embeddings[start:start + EXACT_BLOCK], dtype=np.float32) @ vector
            for start in range(0, self.products, EXACT_BLOCK)])
        return best(np.arange(self.products, dtype=np.int64), scores, k)


def best(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (rows, scores), best first, ties by the lower row."""
    order = np.lexsort((rows, -scores))[:k]
    return rows[order].astype(np.int64), scores[order].astype(np.float32)
