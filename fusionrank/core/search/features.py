"""The feedback head's cheap interaction features, computed by the search runtime for the
server's `scoring` step and the offline evaluator alike (numpy and scipy only, never torch).

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
                phrase, the words before its first " in ", " with ", " for ", " by ", " - ", "("
                or "," ("Cordless Drill Kit" of "Cordless Drill Kit with Battery"), whose last
                term is usually the kind of product (TitleTerms)
 20..28         how closely each query term matches the title's nearest term, by term vectors
                (TermVectors: a close word, such as "faucet" for "tap", counts where an exact
                match does not)
 29..34         what similar training queries said about similar products (JudgementMemory)

Features learnt from the training judgements (the product prior, the memory) are computed
out of fold for training pairs: a training query's own fold is hidden, as a new query's
judgements are. (Leaving out only the pair itself leaks its grade: the rest of its product's
mean then falls as its own grade rises, and a model learns that backwards.)
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from itertools import pairwise
from pathlib import Path

import numpy as np
from scipy import sparse
from threadpoolctl import ThreadpoolController

from fusionrank.core.search.lexical import top_k
from fusionrank.core.search.text import lexical_tokens

HEAD_FEATURES = ("brand_match", "kind_match", "kind_pair", "all_found", "missing_terms",
                 "head_overlap", "head_terms")
TERM_VECTOR_FEATURES = ("weakest_term", "term_match", "kind_similarity", "last_term_match",
                        "first_term_match", "weak_terms", "idf_term_match", "head_cover",
                        "second_weakest")
MEMORY_FEATURES = ("neighbour_grade", "neighbour_match", "nearest_grade", "judged_before",
                   "judged_grade", "nearest_query")
FEATURES = ("similarity", "lexical", "overlap", "title_cover", "query_terms", "prior",
            "prior_count", "last_term", "first_term", "bigrams", "numbers", "title_terms",
            "char_cosine", *HEAD_FEATURES, *TERM_VECTOR_FEATURES, *MEMORY_FEATURES)
CHAR_BUCKETS = 1 << 20  # trigrams are hashed (crc32, stable across processes) into buckets
PRIOR_SMOOTHING = 3.0  # pseudo-judgements at the global mean: one rating says little
FOLDS = 5  # out-of-fold features for training pairs
NEIGHBOUR_QUERIES = 30  # training queries consulted per query
SHARPNESS = 20.0  # softmax inverse temperature over cos(query) + cos(product)
HEAD_END = re.compile(r"\s(?:in|with|for|by|-)\s|\(|,", re.IGNORECASE)
WEAK_MATCH = 0.6  # a query term whose nearest title term is further than this is "weak"


def query_fold(query: str) -> int:
    """A training query's fold: a stable hash of its normalised text."""
    return zlib.crc32(query.encode("utf-8")) % FOLDS


@dataclass
class ProductPriors:
    """Per catalogue row: smoothed mean grade and judgement count from the training split."""

    mean: np.ndarray  # float32 [products]
    count: np.ndarray  # float32 [products]

    @classmethod
    def fit(cls, products: int, rows: np.ndarray, grades: np.ndarray) -> ProductPriors:
        total = np.bincount(rows, weights=grades, minlength=products)
        count = np.bincount(rows, minlength=products).astype(np.float64)
        global_mean = float(grades.mean()) if len(grades) else 2.0
        mean = (total + PRIOR_SMOOTHING * global_mean) / (count + PRIOR_SMOOTHING)
        return cls(mean.astype(np.float32), count.astype(np.float32))

    @classmethod
    def out_of_fold(cls, products: int, rows: np.ndarray, grades: np.ndarray,
                    folds: np.ndarray) -> list[ProductPriors]:
        """Priors for training pairs: entry k is fitted without fold k's queries."""
        return [cls.fit(products, rows[folds != k], grades[folds != k]) for k in range(FOLDS)]

    def save(self, path: str | Path) -> None:
        np.save(Path(path), np.stack([self.mean, self.count], axis=1).astype(np.float32))

    @classmethod
    def load(cls, path: str | Path) -> ProductPriors:
        table = np.load(Path(path))
        return cls(table[:, 0].copy(), table[:, 1].copy())


@dataclass
class JudgementMemory:
    """The training judgements, kept to describe pairs no one judged: what the training
    queries most like this one said about the products most like this one.

    For a query vector q and a candidate product p, every judgement (q', p', grade) of the
    `NEIGHBOUR_QUERIES` training queries nearest to q is weighted by
    softmax(SHARPNESS · (cos(q, q') + cos(p, p'))). Features (MEMORY_FEATURES):
      neighbour_grade  the weighted mean grade, minus 2
      neighbour_match  the best cos(q, q') + cos(p, p'), minus 2
      nearest_grade    the grade of that best judgement, minus 2
      judged_before    1 if p itself was judged for one of those queries
      judged_grade     its grades there, weighted by query similarity, / 3 (0 if none)
      nearest_query    cos(q, nearest training query)
    Product vectors are stored as float16 (half the size; the server and the trainer read the
    same rounded values).
    """

    query_vectors: np.ndarray  # float16 [queries, d]
    folds: np.ndarray  # int8 [queries]
    offsets: np.ndarray  # int64 [queries + 1]: query i's judgements are offsets[i]:offsets[i + 1]
    product_vectors: np.ndarray  # float16 [judgements, d]
    product_rows: np.ndarray  # int64 [judgements]: catalogue row of the product, -1 if absent
    grades: np.ndarray  # float32 [judgements]

    def __post_init__(self) -> None:
        # Every request compares its query with all training queries: convert them once.
        self._query_matrix = self.query_vectors.astype(np.float32)

    @classmethod
    def fit(cls, queries: list[str], query_vectors: np.ndarray, judged: list[np.ndarray],
            grades: list[np.ndarray], catalogue: np.ndarray) -> JudgementMemory:
        """`judged[i]` / `grades[i]`: catalogue rows and grades of training query i."""
        if not queries:
            raise ValueError("the judgement memory needs at least one training query")
        rows = np.concatenate(judged).astype(np.int64)
        return cls(np.asarray(query_vectors, dtype=np.float16),
                   np.array([query_fold(q) for q in queries], dtype=np.int8),
                   np.concatenate([[0], np.cumsum([len(r) for r in judged])]).astype(np.int64),
                   catalogue[rows].astype(np.float16), rows,
                   np.concatenate(grades).astype(np.float32))

    def features(self, query_vector: np.ndarray, product_vectors: np.ndarray,
                 rows: np.ndarray, hidden_fold: int | None = None) -> np.ndarray:
        """float32 [len(rows), len(MEMORY_FEATURES)]; `hidden_fold`: a training query's fold,
        whose judgements (its own among them) are not consulted."""
        similarity = self._query_matrix @ np.asarray(query_vector, dtype=np.float32)
        if hidden_fold is not None:
            similarity[self.folds == hidden_fold] = -np.inf
        k = min(NEIGHBOUR_QUERIES, int(np.isfinite(similarity).sum()))
        if k == 0:
            return np.zeros((len(rows), len(MEMORY_FEATURES)), dtype=np.float32)
        nearest, _ = top_k(similarity, k)
        spans = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in nearest]
        judgement = np.concatenate(spans)
        query_similarity = np.repeat(similarity[nearest], [len(s) for s in spans])
        grades = self.grades[judgement]
        joint = (np.asarray(product_vectors, dtype=np.float32)
                 @ self.product_vectors[judgement].astype(np.float32).T) + query_similarity
        weight = np.exp(SHARPNESS * (joint - joint.max(axis=1, keepdims=True)))
        same = rows[:, None] == self.product_rows[judgement][None, :]
        same_weight = same * np.exp(SHARPNESS * (query_similarity - 1.0))[None, :]
        judged_grade = (same_weight @ grades) / np.maximum(same_weight.sum(axis=1), 1e-30)
        return np.stack([
            (weight @ grades) / weight.sum(axis=1) - 2.0,
            joint.max(axis=1) - 2.0,
            grades[joint.argmax(axis=1)] - 2.0,
            same.any(axis=1),
            np.where(same.any(axis=1), judged_grade / 3.0, 0.0),
            np.full(len(rows), similarity[nearest[0]]),
        ], axis=1).astype(np.float32)

    def aligned(self, row_map: np.ndarray) -> JudgementMemory:
        """The same memory over another catalogue: `row_map[r]` is the new row of old row r
        (-1 where the product is not there)."""
        rows = np.where(self.product_rows >= 0, row_map[self.product_rows], -1)
        return JudgementMemory(self.query_vectors, self.folds, self.offsets,
                               self.product_vectors, rows.astype(np.int64), self.grades)

    def save(self, path: str | Path) -> None:
        with Path(path).open("wb") as handle:  # np.savez would append .npz to a str path
            np.savez(handle, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: str | Path) -> JudgementMemory:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"judgement memory {path} not found (a run trained before "
                                    "the memory existed needs `fusionrank train` again)")
        with np.load(path, allow_pickle=False) as saved:
            return cls(**{f.name: saved[f.name] for f in fields(cls)})


def char_trigrams(text: str) -> list[int]:
    """Hashed character trigrams of each word padded with spaces (" drill " → " dr", "dri", …)."""
    grams = []
    for word in text.lower().split():
        padded = f" {word} "
        grams.extend(zlib.crc32(padded[i:i + 3].encode()) % CHAR_BUCKETS
                     for i in range(len(padded) - 2))
    return grams


def _tfidf(grams: list[int], idf: np.ndarray) -> dict[int, float]:
    """Sub-linear TF × IDF, L2-normalised, as {bucket: weight}."""
    counts: dict[int, int] = {}
    for g in grams:
        counts[g] = counts.get(g, 0) + 1
    weights = {g: (1.0 + np.log(c)) * float(idf[g]) for g, c in counts.items()}
    norm = float(np.sqrt(sum(w * w for w in weights.values()))) or 1.0
    return {g: w / norm for g, w in weights.items()}


def _sparse_rows(vectors: list[dict[int, float]]) -> sparse.csr_matrix:
    """{bucket: weight} vectors as the rows of one CSR matrix [len(vectors), CHAR_BUCKETS]."""
    indptr = np.cumsum([0] + [len(v) for v in vectors])
    indices = np.fromiter((g for v in vectors for g in v), dtype=np.int64, count=indptr[-1])
    data = np.fromiter((w for v in vectors for w in v.values()), dtype=np.float64,
                       count=indptr[-1])
    return sparse.csr_matrix((data, indices, indptr), shape=(len(vectors), CHAR_BUCKETS))


class TitleTerms:
    """Each catalogue title's term set, adjacent-term pairs and character-trigram vector,
    computed once (a couple of seconds for 50k titles)."""

    def __init__(self, titles: Sequence[str]):
        tokens = [lexical_tokens(t) for t in titles]
        self.terms = [frozenset(t) for t in tokens]
        self.first = [t[0] if t else None for t in tokens]  # usually the brand
        self.heads = [lexical_tokens(HEAD_END.split(t, 1)[0]) for t in titles]
        self.bigrams = [frozenset(pairwise(t)) for t in tokens]
        grams = [char_trigrams(t) for t in titles]
        df = np.bincount(np.fromiter((g for gs in grams for g in set(gs)), dtype=np.int64),
                         minlength=CHAR_BUCKETS)
        self.idf = np.log((1 + len(titles)) / (1 + df)).astype(np.float32) + 1.0
        # One sparse row per title: a query's cosines with 200 candidates are then one sparse
        # product (a Python loop over their trigrams took 4 ms a query in the server).
        self.char_vectors = _sparse_rows([_tfidf(gs, self.idf) for gs in grams])

    def char_cosine(self, query: str, rows: np.ndarray) -> np.ndarray:
        query_vector = _sparse_rows([_tfidf(char_trigrams(query), self.idf)])
        cosines = self.char_vectors[np.asarray(rows)] @ query_vector.T
        return cosines.toarray().ravel().astype(np.float32)

    def overlap(self, query_terms: set[str], rows: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Share of the (corrected) query terms in each title, and of the title's in the query."""
        n = max(len(query_terms), 1)
        found = np.array([len(query_terms & self.terms[r]) for r in rows], dtype=np.float32)
        sizes = np.array([max(len(self.terms[r]), 1) for r in rows], dtype=np.float32)
        return found / n, found / sizes

    def head_features(self, query_terms: set[str], rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), len(HEAD_FEATURES)]: the (corrected) query terms against each
        title's first term and head phrase."""
        n = max(len(query_terms), 1)
        out = np.zeros((len(rows), len(HEAD_FEATURES)), dtype=np.float32)
        for i, row in enumerate(rows):
            head, kind_pair = self.heads[row], self.heads[row][-2:]
            out[i] = (self.first[row] in query_terms,
                      bool(head) and head[-1] in query_terms,
                      sum(t in query_terms for t in kind_pair) / max(len(kind_pair), 1),
                      bool(query_terms) and query_terms <= self.terms[row],
                      len(query_terms - self.terms[row]) / 5.0,
                      len(query_terms.intersection(head)) / n,
                      len(head) / 10.0)
        return out


@dataclass
class TermVectors:
    """A unit vector for every term of the catalogue's titles: the mean embedding of the
    titles that hold it. Made from the catalogue embeddings alone, so the server's `feedback`
    model builds the very same vectors from the files it already has (under a second for 50k
    titles), and no word needs encoding at query time. A query term no title holds has none,
    and matches nothing."""

    index: dict[str, int]  # term → row of `vectors`
    vectors: np.ndarray  # float32 [terms, d]
    idf: np.ndarray  # float32 [terms]
    title_terms: list[np.ndarray]  # per catalogue row: its terms' rows in `vectors`
    head_terms: list[np.ndarray]  # per catalogue row: its head phrase's, in order

    @classmethod
    def fit(cls, titles: TitleTerms, catalogue: np.ndarray) -> TermVectors:
        vocabulary = sorted({term for terms in titles.terms for term in terms})
        index = {term: i for i, term in enumerate(vocabulary)}
        title_terms = [np.array(sorted(index[t] for t in terms), dtype=np.int64)
                       for terms in titles.terms]
        head_terms = [np.array([index[t] for t in head if t in index], dtype=np.int64)
                      for head in titles.heads]
        holders = sparse.csr_matrix(
            (np.ones(sum(len(t) for t in title_terms), dtype=np.float32),
             (np.concatenate(title_terms), np.repeat(np.arange(len(title_terms)),
                                                     [len(t) for t in title_terms]))),
            shape=(len(vocabulary), len(title_terms)))
        vectors = np.asarray(holders @ np.asarray(catalogue, dtype=np.float32))
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        titles_holding = np.asarray(holders.sum(axis=1)).ravel()
        idf = np.log((1.0 + len(title_terms)) / (1.0 + titles_holding)).astype(np.float32)
        return cls(index, vectors.astype(np.float32), idf, title_terms, head_terms)

    def features(self, query_terms: list[str], rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), len(TERM_VECTOR_FEATURES)] for the query's (corrected) terms.
        All candidates at once: one product with all their titles' terms, reduced per title."""
        out = np.zeros((len(rows), len(TERM_VECTOR_FEATURES)), dtype=np.float32)
        terms = list(dict.fromkeys(query_terms))
        if not terms or len(rows) == 0:
            return out
        known = np.array([self.index.get(t, -1) for t in terms])
        query = np.where(known[:, None] >= 0, self.vectors[known], 0.0).astype(np.float32)
        unseen = np.log1p(len(self.title_terms))  # the idf of a term no title holds
        weight = np.where(known >= 0, self.idf[known], unseen).astype(np.float32)

        held = np.array([len(self.title_terms[r]) for r in rows])
        cosine = query @ self.vectors[np.concatenate([self.title_terms[r] for r in rows])].T
        best = _segment_reduce(np.maximum, cosine, held)  # [query terms, rows]: nearest term
        ordered = np.sort(best, axis=0)
        heads = [self.head_terms[r] for r in rows]
        head_size = np.array([len(h) for h in heads])
        # Each head term's nearest query term, averaged over the head.
        head_best = (query @ self.vectors[np.concatenate(heads)].T).max(axis=0, keepdims=True)
        head_cover = _segment_reduce(np.add, head_best, head_size)[0] / np.maximum(head_size, 1)
        kind = np.array([h[-1] if len(h) else 0 for h in heads])
        kind_similarity = np.where(head_size > 0, (query @ self.vectors[kind].T).max(axis=0), 0)
        out[:] = np.stack([ordered[0], best.mean(axis=0), kind_similarity, best[-1], best[0],
                           (best < WEAK_MATCH).mean(axis=0),
                           weight @ best / max(float(weight.sum()), 1e-6), head_cover,
                           ordered[min(1, len(terms) - 1)]], axis=1)
        out[held == 0] = 0.0  # a title without terms matches nothing
        return out


def _segment_reduce(ufunc: np.ufunc, values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """`ufunc` over consecutive column segments of `values` [m, sum(sizes)]: [m, len(sizes)],
    0 for an empty segment."""
    starts = np.concatenate([[0], np.cumsum(sizes)])
    # A zero column after the last segment: reduceat needs every start inside the array.
    padded = np.concatenate([values, np.zeros((len(values), 1), values.dtype)], axis=1)
    reduced = ufunc.reduceat(padded, starts, axis=1)[:, :-1]
    reduced[:, sizes == 0] = 0.0
    return reduced


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


def pair_features(query: str, tokens: list[str], query_vector: np.ndarray,
                  product_vectors: np.ndarray, rows: np.ndarray, lexical: np.ndarray,
                  titles: TitleTerms, term_vectors: TermVectors, priors: ProductPriors,
                  memory: JudgementMemory, hidden_fold: int | None = None) -> np.ndarray:
    """float32 [len(rows), len(FEATURES)] for one query's products (catalogue `rows`, their
    `product_vectors` and normalised BM25 scores `lexical`). `tokens` are the query's terms as
    the lexical index corrected them (`LexicalIndex.query_terms`); `hidden_fold`: a training
    query's fold, hidden from the memory."""
    with one_blas_thread():
        query_vector = np.asarray(query_vector, dtype=np.float32)
        product_vectors = np.asarray(product_vectors, dtype=np.float32)
        # Computed here rather than taken from retrieval: the same arithmetic on both sides.
        similarity = product_vectors @ query_vector
        remembered = memory.features(query_vector, product_vectors, rows, hidden_fold)
        term_matches = term_vectors.features(tokens, rows)
    query_terms = set(tokens)
    overlap, cover = titles.overlap(query_terms, rows)
    n = len(rows)
    query_length = np.full(n, len(tokens) / 10.0, dtype=np.float32)
    last = _has(titles, rows, tokens[-1:])
    first = _has(titles, rows, tokens[:1])
    pairs = set(pairwise(tokens))
    bigrams = (np.array([len(pairs & titles.bigrams[r]) for r in rows], dtype=np.float32)
               / len(pairs)) if pairs else np.zeros(n, dtype=np.float32)
    numbers = {t for t in tokens if any(c.isdigit() for c in t)}
    numeric = (np.array([len(numbers & titles.terms[r]) for r in rows], dtype=np.float32)
               / len(numbers)) if numbers else np.ones(n, dtype=np.float32)
    title_terms = np.array([len(titles.terms[r]) for r in rows], dtype=np.float32) / 20.0
    lexical_part = np.stack([similarity, lexical, overlap, cover, query_length,
                             priors.mean[rows] - 2.0, np.log1p(priors.count[rows]) / 3.0, last,
                             first, bigrams, numeric, title_terms,
                             titles.char_cosine(query, rows)], axis=1)
    return np.concatenate([lexical_part, titles.head_features(query_terms, rows), term_matches,
                           remembered], axis=1).astype(np.float32)


def _has(titles: TitleTerms, rows: np.ndarray, terms: list[str]) -> np.ndarray:
    if not terms:
        return np.zeros(len(rows), dtype=np.float32)
    return np.array([terms[0] in titles.terms[r] for r in rows], dtype=np.float32)
