"""The feedback head's cheap interaction features, computed by the search runtime for the
server's `scoring` step and the offline evaluator alike (numpy and scipy only, never torch):
what they read (`FeatureSources`) and how a batch's are put together (`FeatureSources.features`).

Per (query, product) pair:
  0 similarity   cosine of the query and title embeddings (the SIMILARITY signal)
  1 lexical      BM25 / the query's best BM25 over the catalogue (the LEXICAL signal)
  2 overlap      share of the query's terms found in the title
  3 title_cover  share of the title's terms found in the query
  4 query_terms  number of query terms / 10
  5 prior        the product's smoothed mean grade in the training judgements, minus 2
  6 prior_count  log1p(number of training judgements of the product) / 3
  7 last_term    1 if the query's last term (usually the product kind: "drill") is in the title
  8 first_term   1 if its first term is
  9 bigrams      share of the query's adjacent term pairs found adjacent in the title
 10 numbers      share of the query's numeric terms ("18v", "60") in the title; 1 if it has none
 11 title_terms  number of title terms / 20
 12 char_cosine  cosine of the query's and the title's character-trigram TF-IDF vectors, which
                still matches misspelt or run-together words ("toliet", "2x4x8")
 13..19         exact terms against the title's first term (usually the brand) and its head
                phrase, whose last term is usually the kind of product (title_terms.py)
 20..28         how closely each query term matches the title's nearest term, by term vectors
                (term_vectors.py: a close word, such as "faucet" for "tap", counts where an
                exact match does not)
 29..34         what similar training queries said about similar products (judgements.py)

Where each is computed:
  ragged.py        the ragged-array kit the batch computations share
  judgements.py    ProductPriors and JudgementMemory, learnt from the training judgements
                   (out of fold for training pairs)
  title_terms.py   TitleTerms: the titles' terms as id arrays, and features 2..4, 7..11, 13..19
  trigrams.py      character-trigram TF-IDF vectors (feature 12)
  term_vectors.py  TermVectors (features 20..28)
  feature_graph.py the ONNX graph of the cosine, the priors and the memory (0, 5, 6, 29..34)
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

from fusionrank.core.search.feature_graph import GRAPH_FEATURES, MEMORY_FEATURES, FeatureGraph
from fusionrank.core.search.judgements import JudgementMemory, ProductPriors
from fusionrank.core.search.term_vectors import TERM_VECTOR_FEATURES, TermVectors
from fusionrank.core.search.title_features import title_features
from fusionrank.core.search.title_terms import HEAD_FEATURES, TitleTerms

FEATURES = ("similarity", "lexical", "overlap", "title_cover", "query_terms", "prior",
            "prior_count", "last_term", "first_term", "bigrams", "numbers", "title_terms",
            "char_cosine", *HEAD_FEATURES, *TERM_VECTOR_FEATURES, *MEMORY_FEATURES)


@dataclass
class HeadInputs:
    """The feedback head's inputs for the candidates of a batch of queries: each query's
    vector once, and per (query, candidate) pair the row of its query, the product's vector
    and the features. The head computes a query's share of its first layer once."""

    query: np.ndarray  # float32 [queries, d]
    owner: np.ndarray  # int64 [pairs]: the row of `query` each pair belongs to
    product: np.ndarray  # float32 [pairs, d]
    features: np.ndarray  # float32 [pairs, len(FEATURES)]

    @classmethod
    def per_pair(cls, query: np.ndarray, product: np.ndarray,
                 features: np.ndarray) -> HeadInputs:
        """Pairs given one query row each (as training's PairSet holds them)."""
        return cls(np.ascontiguousarray(query, dtype=np.float32),
                   np.arange(len(query), dtype=np.int64),
                   np.ascontiguousarray(product, dtype=np.float32),
                   np.ascontiguousarray(features, dtype=np.float32))

    def pair_queries(self) -> np.ndarray:
        """float32 [pairs, d]: each pair's query vector (what training reads)."""
        return self.query[self.owner]


@dataclass
class FeatureSources:
    """What the feedback features read besides the query: the catalogue's embeddings and title
    terms, the product priors and the memory of training judgements."""

    embeddings: np.ndarray  # [products, d]
    titles: TitleTerms
    term_vectors: TermVectors
    priors: ProductPriors
    memory: JudgementMemory
    # Each row as the memory names its product (None: its own row). A live catalogue's
    # upserted product has a new row and keeps its judgements (core/search/live_view.py).
    memory_rows: np.ndarray | None = None

    @classmethod
    def build(cls, titles: Sequence[str], embeddings: np.ndarray, priors: ProductPriors,
              memory: JudgementMemory, saved: Path | None = None,
              vectors: np.ndarray | None = None) -> FeatureSources:
        """`saved`: a TITLE_FEATURES file of these titles and embeddings, read instead of
        computing the title structures where it exists. `vectors`: the product vectors the
        features read, where not `embeddings` itself (an ANN index's float16 copy of them:
        core/search/retrieval.py `product_vectors`)."""
        terms, term_vectors = title_features(titles, embeddings, saved)
        sizes = {len(embeddings), len(priors.mean), terms.products}
        if len(sizes) != 1:
            raise ValueError(f"feedback artefacts disagree on the catalogue size: {sorted(sizes)}")
        if memory.query_vectors.shape[1] != embeddings.shape[1]:
            raise ValueError(f"the judgement memory holds {memory.query_vectors.shape[1]}-d "
                             f"vectors, the catalogue {embeddings.shape[1]}-d: not the same "
                             "encoder")
        _ = memory.graph  # built now rather than at the first request (~0.5 s)
        return cls(embeddings if vectors is None else vectors, terms, term_vectors, priors,
                   memory)

    def head_inputs(self, queries: Sequence[str], terms: Sequence[list[str]],
                    vectors: Sequence[np.ndarray], rows: Sequence[np.ndarray],
                    lexical: Sequence[np.ndarray],
                    priors: Sequence[ProductPriors] | None = None,
                    hidden_folds: Sequence[int | None] | None = None) -> HeadInputs:
        """The head's inputs for every pair, query after query. `rows[i]`, `lexical[i]`: query
        i's products and their normalised BM25. For training queries, `priors` and
        `hidden_folds` give each query its out-of-fold priors and the memory fold it must not
        see."""
        sizes = [len(r) for r in rows]
        flat = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows])
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        products = np.asarray(self.embeddings[flat], dtype=np.float32)
        features = self.features(queries, terms, vectors, sizes, flat, products,
                                 np.concatenate(lexical), priors, hidden_folds)
        return HeadInputs(vectors, np.repeat(np.arange(len(sizes), dtype=np.int64), sizes),
                          products, features)

    def features(self, queries: Sequence[str], tokens: Sequence[list[str]],
                 query_vectors: np.ndarray, sizes: Sequence[int], rows: np.ndarray,
                 products: np.ndarray, lexical: np.ndarray,
                 priors: Sequence[ProductPriors] | None = None,
                 hidden_folds: Sequence[int | None] | None = None) -> np.ndarray:
        """float32 [len(rows), len(FEATURES)] for the candidates of a batch of queries: query
        i's are the next `sizes[i]` entries of `rows` (catalogue rows), `products` (their
        embeddings) and `lexical` (normalised BM25). `tokens[i]` are its terms as the lexical
        index corrected them (`LexicalIndex.query_terms`), `priors[i]` the priors it sees
        (`self.priors` by default) and `hidden_folds[i]` the memory fold it must not see (a
        training query's own; None for any other query).

        The cosine, the priors and the memory come from the memory's ONNX graph, over the
        whole batch; the term features are array operations over the whole batch. The term
        vectors' products run query by query (`TermVectors.features`) on one BLAS thread: like
        the graph's, a query's features then do not depend on the batch it arrives in, bit for
        bit (the head's trees split on them, and the server and the evaluator batch
        differently)."""
        owner = np.repeat(np.arange(len(queries)), sizes)
        numeric = graph_features(self.memory.graph, np.asarray(query_vectors, dtype=np.float32),
                                 sizes, rows, products,
                                 priors if priors is not None else [self.priors] * len(queries),
                                 hidden_folds,
                                 memory_rows=None if self.memory_rows is None
                                 else self.memory_rows[rows])
        with one_blas_thread():
            term_matches = self.term_vectors.features(tokens, rows, sizes)
        columns = (self.titles.term_features(tokens, rows, owner)
                   | dict(zip(GRAPH_FEATURES, numeric.T, strict=True))
                   | dict(zip(TERM_VECTOR_FEATURES, term_matches.T, strict=True))
                   | {"lexical": np.asarray(lexical, dtype=np.float32),
                      "char_cosine": self.titles.char_cosine(queries, rows, owner)})
        return np.stack([columns[name] for name in FEATURES], axis=1).astype(np.float32)


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's matrix products on one BLAS thread. OpenBLAS rounds differently with more
    threads, and the head's trees split on these features: the server and the evaluator must
    compute them bit for bit alike, whatever the thread settings of either process."""
    with _blas().limit(limits=1, user_api="blas"):
        yield


def graph_features(graph: FeatureGraph, query_vectors: np.ndarray, sizes: Sequence[int],
                   rows: np.ndarray, product_vectors: np.ndarray,
                   priors: Sequence[ProductPriors],
                   hidden_folds: Sequence[int | None] | None = None,
                   chunk: int = 64, memory_rows: np.ndarray | None = None) -> np.ndarray:
    """float32 [len(rows), len(GRAPH_FEATURES)]: the graph's features of every candidate, one
    call per `chunk` queries. Queries with fewer candidates than the longest are padded (row
    -1), and the padding is dropped again. `memory_rows`: each candidate's row as the memory
    names it, where not `rows` (the priors are read at `rows`)."""
    queries, n = len(sizes), len(rows)
    if n == 0:
        return np.zeros((0, len(GRAPH_FEATURES)), dtype=np.float32)
    padded = _PaddedCandidates.of(sizes, rows if memory_rows is None else memory_rows,
                                  product_vectors, _prior_pairs(priors, sizes, rows))
    folds = np.array([-1 if f is None else f for f in hidden_folds] if hidden_folds
                     else [-1] * queries, dtype=np.int64)
    out = np.concatenate([
        graph(query_vectors[part], padded.products[part], padded.rows[part],
              padded.priors[part], folds[part])
        for part in (slice(start, start + chunk) for start in range(0, queries, chunk))])
    return padded.unpad(out)


def _prior_pairs(priors: Sequence[ProductPriors], sizes: Sequence[int],
                 rows: np.ndarray) -> np.ndarray:
    """float32 [len(rows), 2]: each candidate's prior mean and count, from its query's priors."""
    if len({id(p) for p in priors}) == 1:  # served and evaluated queries: the same priors
        return np.stack([priors[0].mean[rows], priors[0].count[rows]], axis=1)
    return np.concatenate([np.stack([p.mean[r], p.count[r]], axis=1) for p, r in zip(
        priors, np.split(rows, np.cumsum(sizes)[:-1]), strict=True)])


@dataclass(frozen=True)
class _PaddedCandidates:
    """A batch's candidates as [queries, longest pool] arrays, as the graph takes them: rows
    (-1 where padded), product vectors and priors (zero where padded)."""

    rows: np.ndarray  # int64 [queries, width]
    products: np.ndarray  # float32 [queries, width, d]
    priors: np.ndarray  # float32 [queries, width, 2]
    slots: tuple[np.ndarray, np.ndarray] | None  # (query, slot) of each candidate; None: unpadded

    @classmethod
    def of(cls, sizes: Sequence[int], rows: np.ndarray, products: np.ndarray,
           priors: np.ndarray) -> _PaddedCandidates:
        queries, width, n = len(sizes), max(sizes), len(rows)
        if n == queries * width:  # served pools: every query has as many candidates
            return cls(rows.reshape(queries, width), products.reshape(queries, width, -1),
                       priors.reshape(queries, width, 2), None)
        owner = np.repeat(np.arange(queries), sizes)  # training's pools: one per query's judged
        slot = np.arange(n) - np.repeat(np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
        padded_rows = np.full((queries, width), -1, dtype=np.int64)
        padded_rows[owner, slot] = rows
        padded_products = np.zeros((queries, width, products.shape[1]), np.float32)
        padded_products[owner, slot] = products
        padded_priors = np.zeros((queries, width, 2), dtype=np.float32)
        padded_priors[owner, slot] = priors
        return cls(padded_rows, padded_products, padded_priors, (owner, slot))

    def unpad(self, out: np.ndarray) -> np.ndarray:
        """[queries, width, k] → [candidates, k], dropping the padding."""
        return out.reshape(-1, out.shape[-1]) if self.slots is None else out[self.slots]
