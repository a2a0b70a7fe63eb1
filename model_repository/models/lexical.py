"""lexical: adds BM25 candidates to the dense ones, and scores every candidate lexically.

In:  QUERY [1] BYTES, EMBEDDING [d] FP32, DENSE_CANDIDATES [N] INT64, DENSE_SIMILARITY [N] FP32
Out: CANDIDATES [N + M] INT64   the dense candidates, then the M best BM25 products not among them
     SIMILARITY [N + M] FP32    cosine of the query and each candidate
     LEXICAL    [N + M] FP32    BM25 / the query's best BM25 over the catalogue

The query's terms that no title contains are spelling-corrected first (LexicalIndex.query_terms).
The pool is built by `merge_candidates`, the very function the offline evaluator uses. This
model imports numpy, bm25s and symspellpy only (never torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fusionrank.contract import RequestError
from fusionrank.model_repository.models.base import Tensors, triton_model
from fusionrank.training.lexical_index import LexicalIndex, merge_candidates, normalised

LEXICAL_FILE = "lexical.npz"
EMBEDDINGS_FILE = "embeddings.npy"
DEFAULT_CANDIDATES = 100


def query_text(value: bytes | str) -> str:
    # The tokenizer model has already rejected bad queries; this only decodes.
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class AddLexicalCandidates:
    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        self.index = LexicalIndex.load(folder / LEXICAL_FILE)
        # Memory-mapped: the feedback model maps the same file, so the pages are shared.
        self.embeddings = np.load(folder / EMBEDDINGS_FILE, mmap_mode="r")
        if len(self.embeddings) != self.index.size:
            raise ValueError(f"{LEXICAL_FILE} indexes {self.index.size} products but "
                             f"{EMBEDDINGS_FILE} holds {len(self.embeddings)}")
        self.extra = int(parameters.get("lexical_candidates", DEFAULT_CANDIDATES))

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        return [self.one(request) for request in requests]

    def one(self, request: Tensors) -> Tensors:
        rows, similarity, lexical = [], [], []
        for query, vector, dense, dense_sim in zip(
                request["QUERY"].reshape(-1), request["EMBEDDING"],
                request["DENSE_CANDIDATES"], request["DENSE_SIMILARITY"], strict=True):
            scores = self.index.scores(query_text(query))
            pool = merge_candidates(np.asarray(dense, dtype=np.int64), scores, self.extra)
            added = pool[len(dense):]
            cosine = np.asarray(self.embeddings[added], dtype=np.float32) @ vector.astype(
                np.float32)
            rows.append(pool)
            similarity.append(np.concatenate([dense_sim, cosine]))
            lexical.append(normalised(scores)[pool])
        return {"CANDIDATES": np.stack(rows).astype(np.int64),
                "SIMILARITY": np.stack(similarity).astype(np.float32),
                "LEXICAL": np.stack(lexical).astype(np.float32)}


TritonPythonModel = triton_model(AddLexicalCandidates)
