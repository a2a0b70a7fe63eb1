"""The search runtime: everything between the queries' embeddings and their fused ranking.

    runtime = SearchRuntime.load(folder)        # the files the `scoring` step serves
    pool = runtime.candidates(queries, vectors, dense_rows, dense_similarity)
    pool.feedback = runtime.feedback(pool, vectors, weights.head(pool.rows, pool.tensors()))
    rows, scores = ranked(pool, weights, k)

The server's steps (`model_repository/search/steps.py`) call these very methods, and so do the
training pipeline (the fusion weights are fitted on these pools) and the offline evaluator: what
is served is what is evaluated, by construction. Each query is spelling-corrected once
(`LexicalIndex.query_terms`); BM25 and the feedback features both take those terms.
numpy, scipy, bm25s, symspellpy and ONNX Runtime only: never torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.encoding import onnx_session
from fusionrank.core.fusion import FusionWeights
from fusionrank.core.product_table import ProductTable
from fusionrank.core.search.features import FeatureSources, HeadInputs
from fusionrank.core.search.judgements import JudgementMemory, ProductPriors
from fusionrank.core.search.lexical import LexicalIndex, lexical_pool, normalised, top_k
from fusionrank.core.search.retrieval import product_vectors
from fusionrank.core.search.text import STOPWORDS, light_stem, query_words

DENSE_CANDIDATES = 100  # the retrieval step's pool
LEXICAL_CANDIDATES = 100  # BM25 candidates added to it (the pool the fusion was fitted on)
DEPTH = 100  # rank depth kept for the metrics (Recall@100)
HEAD_INPUTS = ("query", "owner", "product", "features")  # see HeadInputs
HEAD_OUTPUT = "grade"  # the blend; the graph also outputs its parts, for the evaluation
QUERIES_PER_HEAD_CALL = 64  # offline: the server's largest batch


@dataclass
class CandidatePool:
    """Every query's candidates and their signals: arrays [queries, pool]."""

    queries: list[str]
    terms: list[list[str]]  # each query's terms, spelling-corrected once
    rows: np.ndarray  # int64 catalogue rows
    similarity: np.ndarray  # float32 cosine
    lexical: np.ndarray  # float32 BM25 / the query's best
    feedback: np.ndarray | None = None  # float32 predicted grade

    def tensors(self) -> dict[str, np.ndarray]:
        out = {"CANDIDATES": self.rows, "SIMILARITY": self.similarity, "LEXICAL": self.lexical}
        if self.feedback is not None:
            out["FEEDBACK"] = self.feedback
        return out

    def first(self, n: int) -> CandidatePool:
        """The pool cut to its first n candidates (the dense part, for an ablation)."""
        cut = None if self.feedback is None else self.feedback[:, :n]
        return CandidatePool(self.queries, self.terms, self.rows[:, :n], self.similarity[:, :n],
                             self.lexical[:, :n], cut)


def dense_candidates(embeddings: np.ndarray, vectors: np.ndarray, n: int,
                     block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-n rows by cosine and their similarity [queries, n]: the retrieval step's ONNX
    graph computes the same in the server. By default one query at a time, so a query's
    candidates never depend on the others; `block` queries per matrix product is faster, for
    offline work that needs no such guarantee."""
    if block is None:
        scores = (embeddings @ vector for vector in vectors)
    else:
        scores = (row for start in range(0, len(vectors), block)
                  for row in vectors[start:start + block] @ embeddings.T)
    rows, similarity = zip(*(top_k(row, n) for row in scores), strict=True)
    return np.stack(rows), np.stack(similarity).astype(np.float32)


def candidate_pool(lexical: LexicalIndex, embeddings: np.ndarray, queries: Sequence[str],
                   vectors: np.ndarray, dense_rows: np.ndarray, dense_similarity: np.ndarray,
                   extra: int = LEXICAL_CANDIDATES) -> CandidatePool:
    """Each query's dense candidates, then its `extra` best BM25 products not among them, with
    the cosine and the normalised BM25 of every candidate."""
    terms, rows, similarity, lexical_scores = [], [], [], []
    for query, vector, dense, dense_sim in zip(queries, vectors, dense_rows, dense_similarity,
                                               strict=True):
        query_terms = lexical.query_terms(query)
        scores = lexical.scores(query_terms)
        pool, best = lexical_pool(np.asarray(dense, dtype=np.int64), scores, extra)
        added = pool[len(dense):]
        cosine = np.asarray(embeddings[added], dtype=np.float32) @ np.asarray(vector, np.float32)
        terms.append(query_terms)
        rows.append(pool)
        similarity.append(np.concatenate([dense_sim, cosine]))
        lexical_scores.append(normalised(scores, pool, best))
    return CandidatePool(list(queries), terms, np.stack(rows).astype(np.int64),
                         np.stack(similarity).astype(np.float32),
                         np.stack(lexical_scores).astype(np.float32))


def ranked(pool: CandidatePool, weights: FusionWeights,
           depth: int = DEPTH) -> tuple[np.ndarray, np.ndarray]:
    """Catalogue rows [queries, depth], best first by S (in a cascade, its head by S, then the
    rest by the first stage), and their scores."""
    order, scores = weights.ranked_positions(pool.rows, pool.tensors(),
                                             min(depth, pool.rows.shape[1]))
    return np.take_along_axis(pool.rows, order, axis=1), scores


class OnnxFeedbackHead:
    """The exported feedback head (networks + boosted trees, blended), as the server runs it."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.session = onnx_session(path, threads)
        # A head exported before the query share was computed once per query reads one query
        # row per pair (inputs query, product, features).
        self.per_query = "owner" in {i.name for i in self.session.get_inputs()}

    def __call__(self, inputs: HeadInputs, output: str = HEAD_OUTPUT) -> np.ndarray:
        """The served blend, or one of its parts ("network", "trees"), per pair."""
        feeds = {"query": inputs.query, "owner": inputs.owner} if self.per_query else {
            "query": inputs.pair_queries()}
        feeds |= {"product": inputs.product, "features": inputs.features}
        return self.session.run([output], feeds)[0]


class SearchRuntime:
    """A search catalogue as served: BM25 and its speller, the feature sources, the feedback
    head and (where the folder holds them) the fusion weights."""

    def __init__(self, lexical: LexicalIndex, sources: FeatureSources, head: OnnxFeedbackHead,
                 weights: FusionWeights | None = None, extra: int = LEXICAL_CANDIDATES):
        if lexical.size != len(sources.embeddings):
            raise ValueError(f"{artefacts.LEXICAL} indexes {lexical.size} products but "
                             f"{artefacts.EMBEDDINGS} holds {len(sources.embeddings)}")
        self.lexical, self.sources, self.head = lexical, sources, head
        self.weights, self.extra = weights, extra

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None,
             extra: int = LEXICAL_CANDIDATES) -> SearchRuntime:
        """From a folder holding the catalogue index (EMBEDDINGS, PRODUCTS) and a run's search
        files (LEXICAL, PRIORS, MEMORY, FEEDBACK_HEAD; FUSION_WEIGHTS and TITLE_FEATURES
        optional: without the latter, the title structures are computed here, which takes
        seconds for a real catalogue: ranker_load.md)."""
        folder = Path(folder)
        # Rows parsed when read: with saved title features, only the stamp's sample of titles
        # is (every title only where the features must be computed here).
        products = ProductTable.open(folder / artefacts.PRODUCTS)
        # Memory-mapped (every process serving this catalogue shares the pages), or the ANN
        # index's own vectors where it keeps them whole.
        vectors = product_vectors(folder, len(products))
        # The saved title features are checked against a sample of the float32 rows. Where the
        # index's vectors serve, that sample is read through a mapping of its own, unmapped
        # once read: in the shared one its 4,096 rows' pages (with the kernel's fault-around)
        # would stay resident in every model copy.
        embeddings = vectors if isinstance(vectors, np.ndarray) else np.load(
            folder / artefacts.EMBEDDINGS, mmap_mode="r")
        sources = FeatureSources.build(products.title_column, embeddings,
                                       ProductPriors.load(folder / artefacts.PRIORS,
                                                          len(products)),
                                       JudgementMemory.load(folder / artefacts.MEMORY),
                                       saved=folder / artefacts.TITLE_FEATURES, vectors=vectors)
        weights_file = folder / artefacts.FUSION_WEIGHTS
        return cls(LexicalIndex.load(folder / artefacts.LEXICAL), sources,
                   OnnxFeedbackHead(folder / artefacts.FEEDBACK_HEAD, threads),
                   FusionWeights.load(weights_file) if weights_file.is_file() else None, extra)

    def candidates(self, queries: Sequence[str], vectors: np.ndarray, dense_rows: np.ndarray,
                   dense_similarity: np.ndarray) -> CandidatePool:
        return candidate_pool(self.lexical, self.sources.embeddings, queries, vectors,
                              dense_rows, dense_similarity, self.extra)

    def corrected_text(self, query: str) -> str:
        """The query as the speller read it, in the catalogue's own words ("chrismas
        decoratons" → "christmas decoration" on the Online Retail titles), or "" where it
        corrected nothing. Each word it changed is shown as the commonest title word of its
        corrected term; the others as written."""
        words, changed = [], False
        for word in query_words(query):
            stem = light_stem(word)
            fixed = [stem] if word in STOPWORDS else self.lexical.speller.correct([stem])
            if fixed == [stem]:
                words.append(word)
            else:
                changed = True
                words.extend(self.sources.titles.surface.get(term, term) for term in fixed)
        return " ".join(words) if changed else ""

    def feedback(self, pool: CandidatePool, vectors: np.ndarray,
                 positions: np.ndarray | None = None,
                 chunk: int = QUERIES_PER_HEAD_CALL) -> np.ndarray:
        """The head's predicted grade [queries, pool] for every candidate, or (a cascade's
        head) for the pool `positions` [queries, n] only, NaN at the others; one ONNX Runtime
        call per `chunk` queries. A pair's grade does not depend on the other candidates."""
        rows, lexical = pool.rows, pool.lexical
        if positions is not None:
            rows = np.take_along_axis(rows, positions, axis=1)
            lexical = np.take_along_axis(lexical, positions, axis=1)
        grades = np.empty(rows.shape, dtype=np.float32)
        for start in range(0, len(pool.queries), chunk):
            part = slice(start, start + chunk)
            inputs = self.sources.head_inputs(pool.queries[part], pool.terms[part],
                                              vectors[part], rows[part], lexical[part])
            grades[part] = self.head(inputs).reshape(rows[part].shape)
        if positions is None:
            return grades
        out = np.full(pool.rows.shape, np.nan, dtype=np.float32)
        np.put_along_axis(out, positions, grades, axis=1)
        return out

    def search(self, queries: Sequence[str], vectors: np.ndarray, k: int,
               dense: int = DENSE_CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
        """The whole served path after the encoder, in process: catalogue rows [queries, k],
        best first, and their fused scores."""
        if self.weights is None:
            raise ValueError(f"no {artefacts.FUSION_WEIGHTS} beside this runtime's files")
        vectors = np.asarray(vectors, dtype=np.float32)
        pool = self.candidates(queries, vectors,
                               *dense_candidates(self.sources.embeddings, vectors, dense))
        pool.feedback = self.feedback(pool, vectors,
                                      self.weights.head(pool.rows, pool.tensors()))
        return ranked(pool, self.weights, depth=k)
