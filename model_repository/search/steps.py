"""The search ensemble's steps: thin adapters from Triton's tensors to the search runtime.

    Tokenize         QUERY → INPUT_IDS, ATTENTION_MASK; rejects empty, non-UTF-8, over-long
                     queries
    EncodeQueries    token ids → EMBEDDING (the ONNX encoder, one call per dynamic batch)
    Retrieve         EMBEDDING → the catalogue's most similar products (ONNX MatMul + TopK)
    ScoreCandidates  adds BM25 candidates and scores every candidate: SIMILARITY, LEXICAL,
                     FEEDBACK (`fusionrank.core.search.runtime.SearchRuntime`, as evaluated)
    Rank             S = Σ wᵢ·signalᵢ with the fitted weights, product metadata attached

The ensemble (`ensemble.py`) serves them as two models: `query_encoder` (Tokenize,
EncodeQueries) and `ranker` (Retrieve, ScoreCandidates, Rank), each a `Chain` of its steps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.contract import MAX_K, RequestError, check_batch, check_k
from fusionrank.core.encoding import MAX_QUERY_TOKENS, onnx_session
from fusionrank.core.fusion import FusionWeights, ranked_positions
from fusionrank.core.search.contract import check_query
from fusionrank.core.search.runtime import LEXICAL_CANDIDATES, SearchRuntime
from fusionrank.model_repository.step import (
    Tensors,
    only_valid,
    return_freed_memory,
    split_rows,
)
from fusionrank.model_repository.text_steps import TokenGraph, TokenizeText


class Tokenize(TokenizeText):
    TENSOR = "QUERY"
    MAX_TOKENS = MAX_QUERY_TOKENS
    check_batch = staticmethod(check_batch)
    check_row = staticmethod(check_query)


class EncodeQueries(TokenGraph):
    MODEL_FILE = artefacts.ENCODER
    OUTPUT = "EMBEDDING"


def checked_k(request: Tensors) -> int:
    return check_k(request["K"].reshape(-1).tolist())


class Retrieve:
    """Query embeddings → the catalogue's most similar products (cosine, top-K). The index is an
    ONNX graph run by ONNX Runtime: its MLAS kernels handle a dynamic batch of queries far
    faster than numpy's BLAS here, and the same graph runs unchanged on Triton's onnxruntime or
    TensorRT backends on a GPU. Where the model holds RETRIEVAL_INT8 (precision int8), that
    graph runs instead, fed the memory-mapped embeddings it rescores its shortlist with."""

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        threads = int(parameters.get("threads", "0"))
        int8 = (folder / artefacts.RETRIEVAL_INT8).is_file()
        self.session = onnx_session(folder / (artefacts.RETRIEVAL_INT8 if int8 else
                                              artefacts.RETRIEVAL), threads=threads or None)
        self.catalogue_size = int(self.session.get_modelmeta().custom_metadata_map["products"])
        # Memory-mapped: the pages are shared with the scoring step and the other copies.
        self.feeds = {"catalogue": artefacts.load_array(
            folder / artefacts.EMBEDDINGS, shape=(self.catalogue_size, None), mmap=True)
        } if int8 else {}
        self.pool = min(int(parameters.get("candidates", str(MAX_K))), self.catalogue_size)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        valid, results = only_valid(requests, checked_k)
        if not valid:
            return results
        queries = np.concatenate([requests[i]["EMBEDDING"] for i in valid]).astype(np.float32)
        similarity, rows = self.session.run(
            None, {"query": queries, "k": np.array([self.pool], dtype=np.int64), **self.feeds})
        sizes = [len(requests[i]["EMBEDDING"]) for i in valid]
        for i, sim, row in zip(valid, split_rows(similarity, sizes), split_rows(rows, sizes),
                               strict=True):
            results[i] = {"CANDIDATES": row, "SIMILARITY": sim}
        return results


def query_text(value: bytes | str) -> str:
    # The tokenizer step has already rejected bad queries; this only decodes.
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class ScoreCandidates:
    """In:  QUERY [1], EMBEDDING [d], DENSE_CANDIDATES [N], DENSE_SIMILARITY [N]
    Out: CANDIDATES [N + M] (the dense candidates, then the M best BM25 products not among
         them), SIMILARITY, LEXICAL (BM25 / the query's best), FEEDBACK (predicted grade,
         1 irrelevant .. 3 highly relevant), each [N + M]; CORRECTION [1] (the query as spelling-
         corrected, in the catalogue's words: `SearchRuntime.corrected_text`; "" if unchanged).
    The feedback head runs once over every candidate of every request of a batch."""

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        threads = int(parameters.get("threads", "0"))
        extra = int(parameters.get("lexical_candidates", LEXICAL_CANDIDATES))
        self.runtime = SearchRuntime.load(folder, threads=threads or None, extra=extra)
        return_freed_memory()  # building the title features leaves ~100 MB of temporaries

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        sizes = [len(request["EMBEDDING"]) for request in requests]
        queries = [query_text(q) for request in requests for q in request["QUERY"].reshape(-1)]
        vectors = np.concatenate([request["EMBEDDING"] for request in requests])
        pool = self.runtime.candidates(
            queries, vectors, np.concatenate([r["DENSE_CANDIDATES"] for r in requests]),
            np.concatenate([r["DENSE_SIMILARITY"] for r in requests]))
        pool.feedback = self.runtime.feedback(pool, vectors, chunk=len(queries))
        corrected = np.array([self.runtime.corrected_text(q).encode("utf-8") for q in queries],
                             dtype=object).reshape(-1, 1)
        parts = {name: split_rows(value, sizes)
                 for name, value in (pool.tensors() | {"CORRECTION": corrected}).items()}
        return [{name: part[i] for name, part in parts.items()} for i in range(len(requests))]


class Rank:
    """Candidates and their signals → the final ranking S, with product metadata; S is a
    weighted sum of the signals the ensemble provides, with the weights `ranking.json` records
    (fitted offline; see fusionrank.core.fusion). Also answers the EXPLAIN_OUTPUTS: each
    ranked product's signals, their names and weights, and the query's spelling correction
    (CORRECTED: the optional input CORRECTION; "" without one)."""

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        lines = (folder / artefacts.PRODUCTS).read_text(encoding="utf-8").splitlines()
        self.product_json = np.array([line.encode("utf-8") for line in lines], dtype=object)
        self.product_ids = np.array([json.loads(line)["product_id"].encode("utf-8")
                                     for line in lines], dtype=object)
        self.weights = FusionWeights.load(folder / artefacts.FUSION_WEIGHTS)
        self.signal_names = np.array([n.encode("utf-8") for n in self.weights.weights],
                                     dtype=object)
        self.signal_weights = np.array(list(self.weights.weights.values()), dtype=np.float64)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        valid, results = only_valid(requests, checked_k)
        for i in valid:
            request = requests[i]
            candidates, signals = request["CANDIDATES"], self.weights.signals(request)
            positions, scores = ranked_positions(candidates, signals, checked_k(request))
            rows = np.take_along_axis(candidates, positions, axis=1)
            queries = len(candidates)
            results[i] = {
                "PRODUCT_IDS": self.product_ids[rows],
                "SCORES": scores.astype(np.float32),
                "PRODUCTS": self.product_json[rows],
                "SIGNAL_NAMES": np.tile(self.signal_names, (queries, 1)),
                "SIGNAL_WEIGHTS": np.tile(self.signal_weights, (queries, 1)),
                "SIGNALS": np.stack([np.take_along_axis(np.asarray(values, np.float32),
                                                        positions, axis=1)
                                     for _, values in signals], axis=-1),
                "CORRECTED": request.get("CORRECTION", np.full((queries, 1), b"",
                                                                dtype=object))}
        return results
