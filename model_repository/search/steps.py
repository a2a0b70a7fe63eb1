"""The search ensemble's steps: thin adapters from Triton's tensors to the search runtime.

    Tokenize         QUERY → INPUT_IDS, ATTENTION_MASK; rejects empty, non-UTF-8, over-long
                     queries
    EncodeQueries    token ids → EMBEDDING (the ONNX encoder, one call per dynamic batch)
    Retrieve         EMBEDDING → the catalogue's most similar products (ONNX MatMul + TopK)
    ScoreCandidates  adds BM25 candidates and scores every candidate: SIMILARITY, LEXICAL,
                     FEEDBACK (`fusionrank.core.search.runtime.SearchRuntime`, as evaluated)
    Rank             S = Σ wᵢ·signalᵢ with the fitted weights; product metadata and the
                     explanation attached where the request's DETAIL asks for them

Each step declares its tensors (`CONTRACT`); the ensemble (`ensemble.py`) wires the steps by
them, in one model by default (`search_steps`, a `Chain` of the five).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.contract import MAX_K, RequestError, TensorSpec, check_batch, check_k
from fusionrank.core.encoding import MAX_QUERY_TOKENS
from fusionrank.core.fusion import SIGNAL_TENSORS, FusionWeights
from fusionrank.core.live.segments import LiveBase, LiveFolder, live_folder
from fusionrank.core.product_table import ProductTable
from fusionrank.core.search.contract import (
    EXPLAIN_OUTPUTS,
    SEARCH_INPUTS,
    SEARCH_OUTPUTS,
    Detail,
    check_detail,
    check_query,
)
from fusionrank.core.search.live_view import BaseSearch, LiveSearch, LiveSource
from fusionrank.core.search.retrieval import served_retrieval
from fusionrank.core.search.runtime import LEXICAL_CANDIDATES, SearchRuntime
from fusionrank.model_repository.step import (
    StepContract,
    Tensors,
    only_valid,
    return_freed_memory,
    split_rows,
)
from fusionrank.model_repository.text_steps import TokenGraph, TokenizeText

# The ensemble's own tensors (the gRPC contract, fusionrank.core.search.contract)...
QUERY, K, DETAIL = SEARCH_INPUTS  # DETAIL: optional
PRODUCT_IDS, SCORES, PRODUCTS = SEARCH_OUTPUTS
# ...and those between the steps. Each request is padded to its own longest query.
TOKENS = (TensorSpec("INPUT_IDS", "INT64", (-1,), ragged=True),
          TensorSpec("ATTENTION_MASK", "INT64", (-1,), ragged=True))
EMBEDDING = TensorSpec("EMBEDDING", "FP32", (-1,))  # the query's, unit length
CANDIDATES = TensorSpec("CANDIDATES", "INT64", (-1,))  # catalogue rows
# The signals Rank can fuse, by their name in `ranking.json` (FusionWeights).
SIGNAL_INPUTS = {name: TensorSpec(tensor, "FP32", (-1,))
                 for name, tensor in SIGNAL_TENSORS.items()}
SIMILARITY, FEEDBACK, LEXICAL = (SIGNAL_INPUTS[name]
                                 for name in ("similarity", "feedback", "lexical"))
# Retrieval's candidates where ScoreCandidates adds BM25's to them (a trained run): the
# ensemble renames Retrieve's outputs to these.
DENSE_CANDIDATES = replace(CANDIDATES, name="DENSE_CANDIDATES")
DENSE_SIMILARITY = replace(SIMILARITY, name="DENSE_SIMILARITY")
# The query as spelling-corrected, which Rank answers as CORRECTED (an optional input of Rank:
# a pretrained pipeline has no speller).
CORRECTION = TensorSpec("CORRECTION", "BYTES", (1,))
# What Rank hands the reranker (`rerank_steps.py`) when the build serves one: the titles of
# its top N and their fused scores S, in float64 as fused (the final score adds to them).
HEAD_TITLES = TensorSpec("HEAD_TITLES", "BYTES", (-1,))
HEAD_SCORES = TensorSpec("HEAD_SCORES", "FP64", (-1,))
RERANK_PARAMETER = "rerank_depth"  # Rank's parameter: the N of its top N the reranker reads


def optional(*specs: TensorSpec) -> tuple[TensorSpec, ...]:
    return tuple(replace(spec, optional=True) for spec in specs)


class Tokenize(TokenizeText):
    CONTRACT = StepContract(inputs=(QUERY,), outputs=TOKENS)
    MAX_TOKENS = MAX_QUERY_TOKENS
    check_batch = staticmethod(check_batch)
    check_row = staticmethod(check_query)


class EncodeQueries(TokenGraph):
    CONTRACT = StepContract(inputs=TOKENS, outputs=(EMBEDDING,))
    MODEL_FILE = artefacts.ENCODER


# A model whose steps serve a live catalogue (`ServingOptions.live_catalogue`: the chained
# layouts, where Retrieve, ScoreCandidates and Rank run in one process).
LIVE_PARAMETER = "live_catalogue"
_live_sources: dict[Path, LiveSource] = {}


def live_source(folder: Path, parameters: Mapping[str, str]) -> LiveSource | None:
    """The process's one LiveSource for a version folder, which its steps share; None where
    the model serves no live catalogue."""
    if parameters.get(LIVE_PARAMETER) != "on":
        return None
    folder = Path(folder).resolve()
    if folder not in _live_sources:
        _live_sources[folder] = LiveSource(
            LiveFolder(live_folder(folder)),
            BaseSearch(folder.name, ProductTable.open(folder / artefacts.PRODUCTS),
                       LiveBase.read(folder / artefacts.LIVE_BASE)))
    return _live_sources[folder]


def refreshed(live: LiveSource | None) -> LiveSearch | None:
    """The live state to answer the next batch from. A state that cannot be read (a segment
    a crash left unreadable, say) is logged and the state before is served: searches go on."""
    if live is None:
        return None
    try:
        before = live.view
        view = live.refresh()
        if view is not before:
            # A state's build leaves tens of MB of temporaries, which glibc would otherwise
            # keep: under a stream of sets each copy would hold its largest build's for good.
            return_freed_memory(after_load=False)
        return view
    except Exception as error:  # any failure: the last good state is served
        print(f"fusionrank: live catalogue state not read, serving the one before: {error}",
              file=sys.stderr, flush=True)
        return live.view


def checked_k(request: Tensors) -> int:
    return check_k(request[K.name].reshape(-1).tolist())


class Retrieve:
    """Query embeddings → the catalogue's most similar products (cosine, top-K), with the
    retrieval the build chose for the catalogue's size (`core/search/retrieval.py`): the exact
    ONNX graph (ONNX Runtime's MLAS kernels handle a dynamic batch of queries far faster than
    numpy's BLAS here, and the same graph runs unchanged on Triton's onnxruntime or TensorRT
    backends on a GPU; INT8: an 8-bit shortlist rescored exactly), or for a large catalogue a
    FAISS index (core/search/ann.py: float16 vectors answering their own cosines, or 8-bit
    codes whose shortlist is rescored exactly the same way).

    With a live catalogue, Retrieve is the step that reads a newly published state before a
    batch (`LiveSource.refresh`); ScoreCandidates and Rank, after it in the same process,
    answer the batch from that very state."""

    CONTRACT = StepContract(inputs=(EMBEDDING, K), outputs=(CANDIDATES, SIMILARITY))

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        threads = int(parameters.get("threads", "0"))
        self.retrieval = served_retrieval(folder, threads or None)
        self.candidates = int(parameters.get("candidates", str(MAX_K)))
        self.live = live_source(folder, parameters)
        if self.live is not None:
            self.live.base.retrieval = self.retrieval

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        valid, results = only_valid(requests, checked_k)
        if not valid:
            return results
        view = refreshed(self.live)
        retrieval = self.retrieval if view is None else view.retrieval
        embeddings = [requests[i][EMBEDDING.name] for i in valid]
        rows, similarity = retrieval.search(np.concatenate(embeddings),
                                            min(self.candidates, retrieval.products))
        sizes = [len(embedding) for embedding in embeddings]
        for i, sim, row in zip(valid, split_rows(similarity, sizes), split_rows(rows, sizes),
                               strict=True):
            results[i] = {CANDIDATES.name: row, SIMILARITY.name: sim}
        return results


def joined(requests: list[Tensors], spec: TensorSpec) -> np.ndarray:
    """Every request's rows of one tensor, as one batch."""
    return np.concatenate([request[spec.name] for request in requests])


def query_text(value: bytes | str) -> str:
    # The tokenizer step has already rejected bad queries; this only decodes.
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class ScoreCandidates:
    """In:  QUERY [1], EMBEDDING [d], DENSE_CANDIDATES [N], DENSE_SIMILARITY [N]
    Out: CANDIDATES [N + M] (the dense candidates, then the M best BM25 products not among
         them), SIMILARITY, LEXICAL (BM25 / the query's best), FEEDBACK (predicted grade,
         1 irrelevant .. 3 highly relevant), each [N + M]; CORRECTION [1] (the query as spelling-
         corrected, in the catalogue's words: `SearchRuntime.corrected_text`; "" if unchanged).
    The feedback head runs once over every candidate of every request of a batch; in a cascade
    (`FusionWeights.cascade`), over the head of each request's pool only, FEEDBACK being NaN
    below it (not computed, and not read by Rank)."""

    CONTRACT = StepContract(inputs=(QUERY, EMBEDDING, DENSE_CANDIDATES, DENSE_SIMILARITY),
                            outputs=(CANDIDATES, SIMILARITY, LEXICAL, FEEDBACK, CORRECTION))

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        threads = int(parameters.get("threads", "0"))
        extra = int(parameters.get("lexical_candidates", LEXICAL_CANDIDATES))
        self.runtime = SearchRuntime.load(folder, threads=threads or None, extra=extra)
        return_freed_memory()  # building the title features leaves ~100 MB of temporaries
        self.live = live_source(folder, parameters)
        if self.live is not None:
            self.live.base.runtime = self.runtime
            self.live.base.warm()
            return_freed_memory()

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        view = self.live.view if self.live is not None else None
        runtime = self.runtime if view is None else view.runtime
        sizes = [len(request[EMBEDDING.name]) for request in requests]
        queries = [query_text(q) for request in requests for q in request[QUERY.name].reshape(-1)]
        vectors = joined(requests, EMBEDDING)
        pool = runtime.candidates(queries, vectors, joined(requests, DENSE_CANDIDATES),
                                  joined(requests, DENSE_SIMILARITY))
        # In a cascade, the head only where Rank reads it (`FusionWeights.head`).
        head = None if self.runtime.weights is None else self.runtime.weights.head(
            pool.rows, pool.tensors())
        pool.feedback = runtime.feedback(pool, vectors, head, chunk=len(queries))
        corrected = np.array([runtime.corrected_text(q).encode("utf-8") for q in queries],
                             dtype=object).reshape(-1, 1)
        answer = {CANDIDATES: pool.rows, SIMILARITY: pool.similarity, LEXICAL: pool.lexical,
                  FEEDBACK: pool.feedback, CORRECTION: corrected}
        parts = {spec.name: split_rows(value, sizes) for spec, value in answer.items()}
        return [{name: part[i] for name, part in parts.items()} for i in range(len(requests))]


def requested_detail(request: Tensors) -> Detail:
    """The request's DETAIL (optional: without it, the whole answer)."""
    detail = request.get(DETAIL.name)
    return check_detail(None if detail is None else detail.reshape(-1).tolist())


def checked_rank_request(request: Tensors) -> None:
    checked_k(request)
    requested_detail(request)


def rank_contract(signals: Iterable[TensorSpec]) -> StepContract:
    """Rank's tensors, given the signals it fuses. PRODUCT_IDS and SCORES are always answered,
    the other outputs as the request's DETAIL asks."""
    return StepContract(inputs=(CANDIDATES, *signals, K, *optional(CORRECTION), DETAIL),
                        outputs=(PRODUCT_IDS, SCORES, *optional(PRODUCTS, *EXPLAIN_OUTPUTS)))


class Rank:
    """Candidates and their signals → the final ranking S; S is a weighted sum of the signals
    the ensemble provides, with the weights `ranking.json` records (fitted offline; see
    fusionrank.core.fusion). What else it answers follows the request's DETAIL
    (`fusionrank.core.search.contract.Detail`): PRODUCTS, each product's metadata, and the
    EXPLAIN_OUTPUTS: each ranked product's signals, their names and weights, and the query's
    spelling correction (CORRECTED: the optional input CORRECTION; "" without one). What was
    not asked for is neither computed nor answered."""

    # Declared with every signal it can fuse; a build's model reads those its weights fuse
    # (`fusing`).
    CONTRACT = rank_contract(SIGNAL_INPUTS.values())

    @classmethod
    def fusing(cls, weights: FusionWeights, reranking: bool = False) -> StepContract:
        """The contract of a Rank that fuses `weights`' signals, in the weights' order; with
        `reranking`, it also answers its head for the reranker (HEAD_TITLES, HEAD_SCORES)."""
        contract = rank_contract(SIGNAL_INPUTS[name] for name in weights.weights)
        return replace(contract, outputs=(*contract.outputs, HEAD_TITLES, HEAD_SCORES)) \
            if reranking else contract

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        # Mapped, each ranked row parsed when answered: no Python object per product.
        self.live = live_source(folder, parameters)
        self.products = self.live.base.table if self.live is not None else \
            ProductTable.open(folder / artefacts.PRODUCTS)
        self.weights = FusionWeights.load(folder / artefacts.FUSION_WEIGHTS)
        self.signal_names = np.array([n.encode("utf-8") for n in self.weights.weights],
                                     dtype=object)
        self.signal_weights = np.array(list(self.weights.weights.values()), dtype=np.float64)
        # With a reranker after it, Rank ranks at least its N (the reranker's head) and hands
        # the head on; the reranker answers the K asked for.
        self.rerank_depth = int(parameters.get(RERANK_PARAMETER, "0"))

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        valid, results = only_valid(requests, checked_rank_request)
        view = self.live.view if self.live is not None else None
        products = self.products if view is None else view.table
        for i in valid:
            request = requests[i]
            detail = requested_detail(request)
            candidates, signals = request[CANDIDATES.name], self.weights.signals(request)
            positions, scores = self.weights.ranked_positions(
                candidates, request, max(checked_k(request), self.rerank_depth))
            rows = np.take_along_axis(candidates, positions, axis=1)
            answer = {PRODUCT_IDS.name: products.product_ids(rows),
                      SCORES.name: scores.astype(np.float32)}
            if self.rerank_depth:
                head = rows[:, : self.rerank_depth]
                answer[HEAD_TITLES.name] = np.array(
                    [t.encode("utf-8") for t in products.titles(head)],
                    dtype=object).reshape(head.shape)
                answer[HEAD_SCORES.name] = scores[:, : self.rerank_depth].astype(np.float64)
            if detail is not Detail.IDS:
                answer[PRODUCTS.name] = products.json(rows)
            if detail is Detail.EXPLAIN:
                answer |= self.explanation(request, signals, positions,
                                           self.weights.cascades(candidates.shape[1]))
            results[i] = answer
        return results

    def explanation(self, request: Tensors, signals: list[tuple[float, np.ndarray]],
                    positions: np.ndarray, cascade: bool) -> Tensors:
        """The EXPLAIN_OUTPUTS of one request, its ranked products at `positions` of the pool;
        `cascade`: ranked in two stages, the head's products first (`ranked_positions`)."""
        names, weights, values, corrected = EXPLAIN_OUTPUTS
        queries = len(positions)
        hit_weights = np.tile(self.signal_weights, (*positions.shape, 1))
        hit_values = np.stack([np.take_along_axis(np.asarray(signal, np.float32), positions,
                                                  axis=1) for _, signal in signals], axis=-1)
        if cascade:  # below the head, the first stage's weights scored a product
            below = np.zeros(positions.shape, dtype=bool)
            below[:, self.weights.cascade.depth:] = True
            first = self.weights.cascade.first_stage
            hit_weights[below] = [first.get(name, 0.0) for name in self.weights.weights]
            unread = np.array([name not in first for name in self.weights.weights])
            hit_values[below[:, :, None] & unread] = 0.0  # not computed (the feedback)
        return {
            names.name: np.tile(self.signal_names, (queries, 1)),
            weights.name: hit_weights,
            values.name: hit_values,
            corrected.name: request.get(CORRECTION.name,
                                        np.full((queries, 1), b"", dtype=object))}
