"""Build the FAISS ANN index of a catalogue's embeddings (core/search/ann.py serves it).

    report = build_ann_index(embeddings, folder / ANN_INDEX, AnnParams())

writes the index and, beside it, its record (ANN_RECORD: parameters, search settings, SHA-256).
Inner product on unit rows is the cosine. The defaults are the served configuration the sweep
picked on the real 1M catalogue (benchmarks/reports/ann_sweep.md): each index at its smallest
setting with recall@100 ≥ 0.96 against exact, then the fastest.
Training reads a seeded sample; adding reads the (memory-mapped) embeddings in chunks, so memory
stays bounded by the sample, a chunk and the index itself.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.search.ann import record_path

INDEX_TYPES = ("ivf_flat", "ivf_sq8", "ivf_pq", "hnsw", "hnsw_sq8")
ADD_CHUNK = 65_536  # rows added a call
# FAISS's k-means wants at least this many training points a list (it warns below 39).
POINTS_PER_LIST = 39


@dataclass(frozen=True)
class AnnParams:
    """An index's kind and settings. The defaults are the sweep's pick on the 1M catalogue
    (benchmarks/reports/ann_sweep.md): HNSW32,SQ8 at efSearch 512, recall@100 0.963 against
    exact; IVF4000,SQ8 needed nprobe 512 for 0.971 at more than twice its time."""

    index_type: str = "hnsw_sq8"
    nlist: int | None = None  # IVF: inverted lists (k-means cells); None: nlist_per_root · √N
    nlist_per_root: float = 16.0  # IVF, nlist None: lists per √products
    nprobe: int = 256  # IVF: lists visited a query
    pq_m: int = 48  # IVF-PQ: sub-quantisers (must divide d)
    pq_bits: int = 8  # IVF-PQ: bits a sub-quantiser code
    hnsw_m: int = 32  # HNSW: neighbours a node
    ef_construction: int = 80  # HNSW: candidate list length while adding
    ef_search: int = 512  # HNSW: candidate list length a query
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
            # hnsw_sq8: the graph's vectors as 8-bit codes, a quarter of Flat's bytes.
            return f"HNSW{self.hnsw_m},{'SQ8' if self.index_type == 'hnsw_sq8' else 'Flat'}"
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
    if not index.is_trained:  # IVF's lists and codes, HNSW-SQ8's code ranges
        index.train(training_sample(embeddings, params.train_size, params.seed))
    trained = time.perf_counter()
    add_in_chunks(index, embeddings, progress)
    added = time.perf_counter()
    with artefacts.replacing(path) as temporary:
        faiss.write_index(index, str(temporary))
    report = AnnReport(path=str(path), factory=factory, params=asdict(params),
                       products=products, dim=dim, sha256=artefacts.file_sha256(path),
                       bytes=path.stat().st_size, train_seconds=round(trained - started, 2),
                       add_seconds=round(added - trained, 2))
    write_record(report, params)
    return report


def add_in_chunks(index: faiss.Index, embeddings: np.ndarray, progress: bool) -> None:
    starts = range(0, len(embeddings), ADD_CHUNK)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="adding to the ANN index", unit="chunk", mininterval=5.0)
    for start in starts:
        index.add(np.ascontiguousarray(embeddings[start:start + ADD_CHUNK], dtype=np.float32))


def write_record(report: AnnReport, params: AnnParams) -> None:
    """The record the server reads (core/search/ann.py AnnRecord) plus the build's report."""
    search = ({"ef_search": params.ef_search} if params.graph
              else {"nprobe": params.nprobe})
    record = {"factory": report.factory, "products": report.products, "dim": report.dim,
              "sha256": report.sha256, **search, "build": report.to_json()}
    with artefacts.replacing(record_path(report.path)) as temporary:
        temporary.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
