"""The dense retrieval a model version serves: its k most similar products per query.

    retrieval = served_retrieval(folder)          # what the folder's build chose
    rows, similarity = retrieval.search(vectors, k)

A build writes one of two indexes (app/build.py decides by the catalogue's size, against
`ann.EXACT_BELOW`):
- exact, an ONNX graph (export/search/retrieval.py): RETRIEVAL_INT8 (an 8-bit shortlist of
  every product, rescored exactly against the memory-mapped embeddings it is fed) or
  RETRIEVAL (float32 MatMul + TopK);
- approximate, a FAISS index (ANN_INDEX, core/search/ann.py): one that keeps its vectors whole
  (float16) answers with its own inner products, an 8-bit one's shortlist is rescored exactly
  against the float32 embeddings.
Both answer each query's k best rows with their cosine, best first. The Retrieve step serves
this object, and `fusionrank evaluate --scale` ranks with it: what is served is what is
evaluated. `product_vectors` is what the ranker's features read of each product's vector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.encoding import onnx_session


class GraphRetrieval:
    """Exact retrieval through the folder's ONNX graph (INT8 shortlist where the build made
    one, else float32)."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        folder = Path(folder)
        self.int8 = (folder / artefacts.RETRIEVAL_INT8).is_file()
        self.session = onnx_session(folder / (artefacts.RETRIEVAL_INT8 if self.int8
                                              else artefacts.RETRIEVAL), threads=threads)
        self.products = int(self.session.get_modelmeta().custom_metadata_map["products"])
        # Memory-mapped: the pages are shared with the scoring step and the other copies.
        self.feeds = {"catalogue": artefacts.load_array(
            folder / artefacts.EMBEDDINGS, shape=(self.products, None), mmap=True)
        } if self.int8 else {}

    def describe(self) -> str:
        return "exact (8-bit shortlist, rescored)" if self.int8 else "exact (float32)"

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        similarity, rows = self.session.run(None, {
            "query": np.ascontiguousarray(vectors, dtype=np.float32),
            "k": np.array([k], dtype=np.int64), **self.feeds})
        return rows, similarity


def product_vectors(folder: str | Path, products: int):
    """The catalogue's product vectors [products, d] as the folder's ranker reads them (the
    similarity of a BM25 candidate, the feedback head's product input): the ANN index's own,
    where the build made one that keeps them whole (`AnnRecord.stores_vectors`: one mapping
    serves retrieval and features, and the float32 embeddings stay unmapped), else EMBEDDINGS,
    memory-mapped (its pages shared with the other copies)."""
    folder = Path(folder)
    embeddings = artefacts.load_array(folder / artefacts.EMBEDDINGS, shape=(products, None),
                                      mmap=True)
    if not (folder / artefacts.ANN_INDEX).is_file():
        return embeddings
    from fusionrank.core.search.ann import AnnIndex

    return AnnIndex.load(folder).vectors


def served_retrieval(folder: str | Path, threads: int | None = None):
    """The folder's FAISS index (an AnnIndex) where its build made one, else its exact graph
    (a GraphRetrieval)."""
    folder = Path(folder)
    if (folder / artefacts.ANN_INDEX).is_file():
        # Imported here: FAISS adds ~14 MiB to a process that serves a small catalogue.
        from fusionrank.core.search.ann import THREADS, AnnIndex

        return AnnIndex.load(folder, threads=threads or THREADS)
    return GraphRetrieval(folder, threads)
