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
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from itertools import pairwise
from pathlib import Path

import numpy as np
from scipy import sparse
from threadpoolctl import ThreadpoolController

from fusionrank.core import artefacts
from fusionrank.core.search.feature_graph import (
    GRAPH_FEATURES,
    MEMORY_FEATURES,
    FeatureGraph,
    feature_model,
)
from fusionrank.core.search.text import STOPWORDS, lexical_tokens, light_stem, query_words

HEAD_FEATURES = ("brand_match", "kind_match", "kind_pair", "all_found", "missing_terms",
                 "head_overlap", "head_terms")
TERM_VECTOR_FEATURES = ("weakest_term", "term_match", "kind_similarity", "last_term_match",
                        "first_term_match", "weak_terms", "idf_term_match", "head_cover",
                        "second_weakest")
FEATURES = ("similarity", "lexical", "overlap", "title_cover", "query_terms", "prior",
            "prior_count", "last_term", "first_term", "bigrams", "numbers", "title_terms",
            "char_cosine", *HEAD_FEATURES, *TERM_VECTOR_FEATURES, *MEMORY_FEATURES)
CHAR_BUCKETS = 1 << 20  # trigrams are hashed (crc32, stable across processes) into buckets
PRIOR_SMOOTHING = 3.0  # pseudo-judgements at the global mean: one rating says little
FOLDS = 5  # out-of-fold features for training pairs
HEAD_END = re.compile(r"\s(?:in|with|for|by|-)\s|\(|,", re.IGNORECASE)
TABLE_LIMIT = 1 << 22  # entries of a dense lookup table at most (PairTable, _distinct)
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
    def load(cls, path: str | Path, products: int | None = None) -> ProductPriors:
        table = artefacts.load_array(path, shape=(products, 2))
        return cls(table[:, 0].copy(), table[:, 1].copy())


@dataclass
class JudgementMemory:
    """The training judgements, kept to describe pairs no one judged: what the training
    queries most like this one said about the products most like this one.

    For a query vector q and a candidate product p, every judgement (q', p', grade) of the
    training queries nearest to q (30 of them, at most 256 judgements) is weighted by
    softmax(20 · (cos(q, q') + cos(p, p'))): `feature_graph`, which computes them, has the
    constants. Features (MEMORY_FEATURES):
      neighbour_grade  the weighted mean grade, minus 2
      neighbour_match  the best cos(q, q') + cos(p, p'), minus 2
      nearest_grade    the grade of that best judgement, minus 2
      judged_before    1 if p itself was judged for one of those queries
      judged_grade     its grades there, weighted by exp(20 · (cos(q, q') − 1)), / 3 (0 if
                       none)
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

    @functools.cached_property
    def graph(self) -> FeatureGraph:
        """The numeric features graph holding this memory (built once, ~0.5 s for 47k
        judgements)."""
        return FeatureGraph(feature_model(self.query_vectors, self.folds, self.offsets,
                                          self.product_rows, self.grades), self.product_vectors)

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
        return cls(**artefacts.load_arrays(path, [f.name for f in fields(cls)]))


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


@dataclass(frozen=True)
class Ragged:
    """Rows of ids (and optional weights) of varying length, stored flat: row r is
    ids[indptr[r]:indptr[r + 1]]. `gather` takes many rows at once, without a Python loop."""

    indptr: np.ndarray  # int64 [rows + 1]
    ids: np.ndarray  # int64 [entries]
    weights: np.ndarray | None = None  # float64 [entries]

    @classmethod
    def of(cls, rows: Sequence[Sequence[int]]) -> Ragged:
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        return cls(indptr, np.fromiter((i for r in rows for i in r), dtype=np.int64,
                                       count=int(indptr[-1])))

    @staticmethod
    def names(name: str, weighted: bool = False) -> tuple[str, ...]:
        """The keys `arrays(name)` writes: name.indptr, name.ids (and name.weights)."""
        return (f"{name}.indptr", f"{name}.ids", *((f"{name}.weights",) if weighted else ()))

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        parts = (self.indptr, self.ids) if self.weights is None else \
            (self.indptr, self.ids, self.weights)
        return dict(zip(self.names(name, self.weights is not None), parts, strict=True))

    @classmethod
    def from_arrays(cls, saved: Mapping[str, np.ndarray], name: str) -> Ragged:
        return cls(saved[f"{name}.indptr"], saved[f"{name}.ids"], saved.get(f"{name}.weights"))

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """How many entries each of `rows` holds."""
        return self.indptr[rows + 1] - self.indptr[rows]

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The entries of `rows`, row after row: (their positions in the flat arrays, the
        index in `rows` each entry belongs to)."""
        starts, lengths = self.indptr[rows], self.lengths(rows)
        owner = np.repeat(np.arange(len(rows)), lengths)
        shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        return np.arange(len(owner)) + shift, owner


class PairTable:
    """Values of the (query, id) pairs of a batch, to look up many pairs at once: a dense
    [queries, ids] table where that is small (served batches), sorted keys otherwise."""

    def __init__(self, query: np.ndarray, ids: np.ndarray, values: np.ndarray, queries: int,
                 space: int):
        """`values[j]` of pair (query[j], ids[j]); ids in [0, space)."""
        self.space, self.dense = space, queries * space <= TABLE_LIMIT
        keys = np.asarray(query, dtype=np.int64) * space + np.asarray(ids, dtype=np.int64)
        values = np.asarray(values)
        if self.dense:  # one more entry: where pairs with id -1 look
            self.table = np.zeros(queries * space + 1, dtype=values.dtype)
            self.table[keys] = values
        else:
            self.keys, first = np.unique(keys, return_index=True)
            self.values = np.concatenate([values[first], np.zeros(1, values.dtype)])

    @classmethod
    def holding(cls, per_query: Sequence[Sequence[int]], space: int) -> PairTable:
        """Which ids each query holds (True; False for any other pair)."""
        query = np.repeat(np.arange(len(per_query)), [len(ids) for ids in per_query])
        ids = np.fromiter((i for ids in per_query for i in ids), dtype=np.int64,
                          count=len(query))
        return cls(query, ids, np.ones(len(ids), dtype=bool), len(per_query), space)

    def __call__(self, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The value of each pair (query[j], ids[j]); 0 / False where the batch has none, or
        ids[j] is -1."""
        keys = np.where(ids >= 0, query * self.space + ids, -1)
        if self.dense:
            return self.table[keys]
        position, found = _find(self.keys, keys)
        return self.values[np.where(found, position, -1)]


def _find(ordered: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of `values` is in the sorted array `ordered`, and whether it is there at all
    (where not, the position is meaningless)."""
    position = np.minimum(np.searchsorted(ordered, values), max(len(ordered) - 1, 0))
    found = (ordered[position] == values) if len(ordered) else np.zeros(len(values), bool)
    return position, found


class TitleTerms:
    """Each catalogue title's terms, head phrase, adjacent-term pairs and character-trigram
    vector, as id arrays, computed once (a few seconds for 50k titles; `fusionrank build`
    saves them, see title_features.py). `term_features` then compares a batch of queries with
    all their candidates in array operations."""

    # What `arrays` holds (and `from_arrays` reads back): the vocabulary, each term's
    # commonest written form (`surface`, as two parallel arrays) and these attributes.
    ARRAYS = ("title_sizes", "head_sizes", "first_id", "kind_id", "kind_before_id",
              "bigram_keys", "idf")
    RAGGED = ("title_ids", "head_ids", "head_tokens", "bigram_ids", "char_vectors")
    SAVED = ("vocabulary", "surface_terms", "surface_words", *ARRAYS,
             *(key for name in RAGGED for key in Ragged.names(name, name == "char_vectors")))

    def __init__(self, titles: Sequence[str]):
        tokens = [lexical_tokens(t) for t in titles]
        heads = [lexical_tokens(HEAD_END.split(t, 1)[0]) for t in titles]
        self.vocabulary = sorted({t for terms in tokens for t in terms}
                                 | {t for head in heads for t in head})
        # Each term's commonest written form in the titles ("christma" → "christmas"), to
        # show a corrected query in words a shopper reads.
        written = Counter((light_stem(w), w) for t in titles for w in query_words(t)
                          if w not in STOPWORDS)
        self.surface: dict[str, str] = {}
        for (term, word), _ in written.most_common():
            self.surface.setdefault(term, word)
        self.index = {term: i for i, term in enumerate(self.vocabulary)}
        index = self.index
        self.title_ids = Ragged.of([sorted({index[t] for t in terms}) for terms in tokens])
        self.head_ids = Ragged.of([sorted({index[t] for t in head}) for head in heads])
        self.head_tokens = Ragged.of([[index[t] for t in head] for head in heads])  # in order
        self.title_sizes = np.array([len(set(t)) for t in tokens], dtype=np.float32)
        self.head_sizes = np.array([len(h) for h in heads], dtype=np.float64)
        self.first_id = np.array([index[t[0]] if t else -1 for t in tokens],  # usually the brand
                                 dtype=np.int64)
        self.kind_id = np.array([index[h[-1]] if h else -1 for h in heads], dtype=np.int64)
        self.kind_before_id = np.array([index[h[-2]] if len(h) > 1 else -1 for h in heads],
                                       dtype=np.int64)
        # A pair of adjacent terms is one int64 key; its id, the key's place among all titles'.
        pair_keys = [np.unique(self._pair_keys(t)) for t in tokens]
        self.bigram_keys = np.unique(np.concatenate(pair_keys)) if pair_keys else \
            np.zeros(0, np.int64)
        self.bigram_ids = Ragged.of([np.searchsorted(self.bigram_keys, k) for k in pair_keys])
        grams = [char_trigrams(t) for t in titles]
        df = np.bincount(np.fromiter((g for gs in grams for g in set(gs)), dtype=np.int64),
                         minlength=CHAR_BUCKETS)
        self.idf = np.log((1 + len(titles)) / (1 + df)).astype(np.float32) + 1.0
        vectors = _sparse_rows([_tfidf(gs, self.idf) for gs in grams])
        self._keep_char_vectors(Ragged(vectors.indptr.astype(np.int64),
                                       vectors.indices.astype(np.int64), vectors.data))

    def _keep_char_vectors(self, vectors: Ragged) -> None:
        """The titles' trigram vectors with each bucket as its column among the buckets the
        titles hold (`char_buckets`, ~15k of the 2²⁰): a query trigram is then looked up in a
        table that small."""
        self.char_buckets, columns = np.unique(vectors.ids, return_inverse=True)
        self.char_vectors = Ragged(vectors.indptr, columns.astype(np.int32), vectors.weights)

    def arrays(self) -> dict[str, np.ndarray]:
        """The SAVED arrays: strings as unicode arrays, `surface` as two parallel ones."""
        out = {"vocabulary": np.array(self.vocabulary, dtype=str),
               "surface_terms": np.array(list(self.surface), dtype=str),
               "surface_words": np.array(list(self.surface.values()), dtype=str)}
        out |= {name: getattr(self, name) for name in self.ARRAYS}
        for name in self.RAGGED:
            out |= getattr(self, name).arrays(name)
        out["char_vectors.ids"] = self.char_buckets[self.char_vectors.ids]  # as buckets
        return out

    @classmethod
    def from_arrays(cls, saved: Mapping[str, np.ndarray]) -> TitleTerms:
        """What `__init__` computed, read back from `arrays()` instead of recomputed."""
        self = cls.__new__(cls)  # without __init__: nothing is computed
        self.vocabulary = saved["vocabulary"].tolist()
        self.index = {term: i for i, term in enumerate(self.vocabulary)}
        self.surface = dict(zip(saved["surface_terms"].tolist(), saved["surface_words"].tolist(),
                                strict=True))
        for name in cls.ARRAYS:
            setattr(self, name, saved[name])
        for name in cls.RAGGED:
            setattr(self, name, Ragged.from_arrays(saved, name))
        self._keep_char_vectors(self.char_vectors)
        return self

    @property
    def products(self) -> int:
        return len(self.title_sizes)

    @functools.cached_property
    def terms(self) -> list[frozenset[str]]:
        """Each title's distinct terms (TermVectors.fit and negative mining read them)."""
        return [frozenset(self._words(self.title_ids, row)) for row in range(self.products)]

    @functools.cached_property
    def heads(self) -> list[list[str]]:
        """Each title's head phrase, its terms in order ("makita", "cordless", "drill", "kit")."""
        return [self._words(self.head_tokens, row) for row in range(self.products)]

    def _words(self, ragged: Ragged, row: int) -> list[str]:
        ids = ragged.ids[ragged.indptr[row]:ragged.indptr[row + 1]].tolist()
        return [self.vocabulary[i] for i in ids]

    def _pair_keys(self, tokens: Sequence[str]) -> np.ndarray:
        """int64 keys of the adjacent pairs of `tokens` whose terms are both known."""
        ids = [self.index.get(t, -1) for t in tokens]
        return np.array([a * len(self.index) + b for a, b in pairwise(ids) if a >= 0 and b >= 0],
                        dtype=np.int64)

    def bigram_id_list(self, pairs: set[tuple[str, str]]) -> list[int]:
        """The ids of the pairs some title holds (the others match nothing)."""
        keys = np.array([self.index[a] * len(self.index) + self.index[b] for a, b in pairs
                         if a in self.index and b in self.index], dtype=np.int64)
        position, held = _find(self.bigram_keys, keys)
        return position[held].tolist()

    def char_cosine(self, queries: Sequence[str], rows: np.ndarray,
                    owner: np.ndarray) -> np.ndarray:
        """float32 [len(rows)]: cosine of each candidate's title and its query (`owner`) in
        character-trigram TF-IDF space, which still matches misspelt or run-together words."""
        query_vectors = [_tfidf(char_trigrams(q), self.idf) for q in queries]
        buckets = np.fromiter((g for v in query_vectors for g in v), dtype=np.int64)
        weights = np.fromiter((w for v in query_vectors for w in v.values()), dtype=np.float64,
                              count=len(buckets))
        query = np.repeat(np.arange(len(queries)), [len(v) for v in query_vectors])
        # The query trigrams some title holds, by their column of char_vectors.
        column, held = _find(self.char_buckets, buckets)
        table = PairTable(query[held], column[held], weights[held], len(queries),
                          len(self.char_buckets))
        entries, candidate = self.char_vectors.gather(rows)
        products = self.char_vectors.weights[entries] * table(owner[candidate],
                                                              self.char_vectors.ids[entries])
        return np.bincount(candidate, weights=products, minlength=len(rows)).astype(np.float32)

    def term_features(self, tokens: Sequence[list[str]], rows: np.ndarray,
                      owner: np.ndarray) -> dict[str, np.ndarray]:
        """The term-match features of every candidate (catalogue `rows`, each of query
        `owner[j]`, whose corrected terms are `tokens[owner[j]]`), by name: overlap,
        title_cover, query_terms, last_term, first_term, bigrams, numbers, title_terms and the
        HEAD_FEATURES (the query terms against the title's first term and head phrase)."""
        index, n = self.index, len(rows)
        distinct = [set(t) for t in tokens]
        query_size = np.array([len(d) for d in distinct], dtype=np.int64)[owner]
        terms = PairTable.holding([[index[t] for t in d if t in index] for d in distinct],
                                  len(index))
        numbers = [{t for t in d if any(c.isdigit() for c in t)} for d in distinct]
        numeric = PairTable.holding([[index[t] for t in d if t in index] for d in numbers],
                                    len(index))
        pairs = [set(pairwise(t)) for t in tokens]
        bigrams = PairTable.holding([self.bigram_id_list(d) for d in pairs],
                                    len(self.bigram_keys))

        def gathered(ragged: Ragged) -> tuple[np.ndarray, np.ndarray]:
            """The ids every candidate holds, flat, and the candidate of each."""
            entries, candidate = ragged.gather(rows)
            return ragged.ids[entries], candidate

        title, head, bigram = (gathered(r) for r in (self.title_ids, self.head_ids,
                                                      self.bigram_ids))

        def count(held_ids: tuple[np.ndarray, np.ndarray], queries: PairTable) -> np.ndarray:
            ids, candidate = held_ids
            held = queries(owner[candidate], ids)
            return np.bincount(candidate, weights=held, minlength=n)

        def single(term_of_query: list[int]) -> np.ndarray:
            """Whether each candidate's title holds one term of its query (-1: none)."""
            ids, candidate = title
            wanted = np.array(term_of_query, dtype=np.int64)[owner[candidate]]
            return np.bincount(candidate, weights=ids == wanted, minlength=n).astype(np.float32)

        found = count(title, terms).astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            pair_count = np.array([len(p) for p in pairs], dtype=np.float32)[owner]
            number_count = np.array([len(d) for d in numbers], dtype=np.float32)[owner]
            bigram_share = np.where(pair_count > 0, count(bigram, bigrams).astype(
                np.float32) / pair_count, 0.0).astype(np.float32)
            number_share = np.where(number_count > 0, count(title, numeric).astype(
                np.float32) / number_count, 1.0).astype(np.float32)
        kind = terms(owner, self.kind_id[rows])
        kind_before = terms(owner, self.kind_before_id[rows])
        pair_size = np.maximum(np.minimum(self.head_sizes[rows], 2), 1)
        found_all = found.astype(np.int64)
        return {
            "overlap": found / np.maximum(query_size, 1).astype(np.float32),
            "title_cover": found / np.maximum(self.title_sizes[rows], 1),
            "query_terms": np.array([len(t) / 10.0 for t in tokens], np.float32)[owner],
            "last_term": single([index.get(t[-1], -1) if t else -1 for t in tokens]),
            "first_term": single([index.get(t[0], -1) if t else -1 for t in tokens]),
            "bigrams": bigram_share,
            "numbers": number_share,
            "title_terms": self.title_sizes[rows] / 20.0,
            "brand_match": terms(owner, self.first_id[rows]).astype(np.float32),
            "kind_match": kind.astype(np.float32),
            "kind_pair": ((kind.astype(np.float64) + kind_before) / pair_size).astype(np.float32),
            "all_found": ((query_size > 0) & (found_all == query_size)).astype(np.float32),
            "missing_terms": ((query_size - found_all) / 5.0).astype(np.float32),
            "head_overlap": (count(head, terms) / np.maximum(query_size, 1)
                             ).astype(np.float32),
            "head_terms": (self.head_sizes[rows] / 10.0).astype(np.float32),
        }


@dataclass
class TermVectors:
    """A unit vector for every term of the catalogue's titles: the mean embedding of the
    titles that hold it. Made from the catalogue embeddings alone (under a second for 50k
    titles; `fusionrank build` saves them beside TitleTerms, see title_features.py), so no
    word needs encoding at query time. A query term no title holds has none,
    and matches nothing."""

    index: dict[str, int]  # term → row of `vectors`
    vectors: np.ndarray  # float32 [terms, d]
    idf: np.ndarray  # float32 [terms]
    title_terms: Ragged  # per catalogue row: its terms' rows in `vectors`, ascending
    head_terms: Ragged  # per catalogue row: its head phrase's, in order

    SAVED = ("vocabulary", "vectors", "idf", *Ragged.names("title_terms"),
             *Ragged.names("head_terms"))  # what `arrays` holds

    @classmethod
    def fit(cls, titles: TitleTerms, catalogue: np.ndarray) -> TermVectors:
        vocabulary = sorted({term for terms in titles.terms for term in terms})
        index = {term: i for i, term in enumerate(vocabulary)}
        title_terms = Ragged.of([sorted(index[t] for t in terms) for terms in titles.terms])
        head_terms = Ragged.of([[index[t] for t in head if t in index] for head in titles.heads])
        holders = sparse.csr_matrix(
            (np.ones(len(title_terms.ids), dtype=np.float32),
             (title_terms.ids, np.repeat(np.arange(len(titles.terms)),
                                         np.diff(title_terms.indptr)))),
            shape=(len(vocabulary), len(titles.terms)))
        vectors = np.asarray(holders @ np.asarray(catalogue, dtype=np.float32))
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        titles_holding = np.asarray(holders.sum(axis=1)).ravel()
        idf = np.log((1.0 + len(titles.terms)) / (1.0 + titles_holding)).astype(np.float32)
        return cls(index, vectors.astype(np.float32), idf, title_terms, head_terms)

    def arrays(self) -> dict[str, np.ndarray]:
        """The SAVED arrays; `index` as its terms in row order."""
        return {"vocabulary": np.array(sorted(self.index, key=self.index.__getitem__), dtype=str),
                "vectors": self.vectors, "idf": self.idf,
                **self.title_terms.arrays("title_terms"), **self.head_terms.arrays("head_terms")}

    @classmethod
    def from_arrays(cls, saved: Mapping[str, np.ndarray]) -> TermVectors:
        return cls({term: i for i, term in enumerate(saved["vocabulary"].tolist())},
                   saved["vectors"], saved["idf"], Ragged.from_arrays(saved, "title_terms"),
                   Ragged.from_arrays(saved, "head_terms"))

    def features(self, tokens: Sequence[list[str]], rows: np.ndarray,
                 sizes: Sequence[int]) -> np.ndarray:
        """float32 [len(rows), len(TERM_VECTOR_FEATURES)] for the candidates of a batch of
        queries: query i's (corrected) terms are `tokens[i]`, its candidates the next
        `sizes[i]` catalogue `rows`. Array operations over the whole batch, but for one
        matrix product per query: its term vectors against every distinct term its candidates'
        titles hold. That product has the same operands whatever the batch, so a query's
        features do not depend on the queries beside it, bit for bit (the head's trees split
        on them)."""
        n, width = len(rows), len(TERM_VECTOR_FEATURES)
        terms = [list(dict.fromkeys(t)) for t in tokens]
        term_count = np.array([len(t) for t in terms], dtype=np.int64)
        longest = int(term_count.max(initial=0))
        if n == 0 or longest == 0:
            return np.zeros((n, width), dtype=np.float32)
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        owner = np.repeat(np.arange(len(terms)), sizes)
        title_entries, title_owner = self.title_terms.gather(rows)
        head_entries, head_owner = self.head_terms.gather(rows)
        held, head_size = self.title_terms.lengths(rows), self.head_terms.lengths(rows)
        kind = np.where(head_size > 0, self.head_terms.ids[np.maximum(
            self.head_terms.indptr[rows + 1] - 1, 0)], 0)
        # Every distinct (query, term) among the candidates' titles, head phrases and kinds,
        # as a key sorted by query, then term (each query's terms as np.unique of its own
        # would give them), and each entry's key.
        wanted = np.concatenate([self.title_terms.ids[title_entries],
                                 self.head_terms.ids[head_entries], kind])
        wanted_owner = np.concatenate([owner[title_owner], owner[head_owner], owner])
        keys, position = _distinct(wanted_owner * len(self.vectors) + wanted,
                                   len(terms) * len(self.vectors))
        key_owner, key_term = np.divmod(keys, len(self.vectors))
        key_bounds = np.searchsorted(key_owner, np.arange(len(terms) + 1))
        # cosine[t, key]: query term t against the key's term; -inf below a query's last term.
        cosine = np.full((longest, len(keys)), -np.inf, dtype=np.float32)
        unseen = np.log1p(len(self.title_terms.indptr) - 1)  # the idf of a term no title holds
        weights = []
        for i, query_terms in enumerate(terms):
            known = np.array([self.index.get(t, -1) for t in query_terms], dtype=np.int64)
            weights.append(np.where(known >= 0, self.idf[known], unseen).astype(np.float32))
            part = slice(key_bounds[i], key_bounds[i + 1])
            if len(known) and part.start < part.stop:
                query = np.where(known[:, None] >= 0, self.vectors[known], 0.0
                                 ).astype(np.float32)
                cosine[:len(known), part] = query @ self.vectors[key_term[part]].T
        title_keys, head_keys, kind_keys = np.split(
            position, np.cumsum([len(title_entries), len(head_entries)]))
        nearest = cosine.max(axis=0)  # each key's nearest query term
        best = _segment_reduce(np.maximum, cosine[:, title_keys], held)  # [longest, candidates]
        count = term_count[owner]
        valid = np.arange(longest)[:, None] < count
        ordered = np.sort(np.where(valid, best, np.inf), axis=0)
        found = np.where(valid, best, 0.0)
        columns = np.arange(n)
        last = np.maximum(count - 1, 0)
        # Each head term's nearest query term, averaged over the head.
        head_cover = _segment_reduce(np.add, nearest[head_keys][None], head_size)[0] / \
            np.maximum(head_size, 1)
        with np.errstate(invalid="ignore", divide="ignore"):  # queries without terms: zeroed
            divisor = count.astype(np.float32)
            idf_match = np.concatenate([
                weights[i] @ np.ascontiguousarray(best[:term_count[i], bounds[i]:bounds[i + 1]])
                / max(float(weights[i].sum()), 1e-6) for i in range(len(terms))])
            # In TERM_VECTOR_FEATURES order: weakest_term, term_match, kind_similarity,
            # last_term_match, first_term_match, weak_terms, idf_term_match, head_cover,
            # second_weakest.
            out = np.stack([ordered[0], found.sum(axis=0) / divisor,
                            np.where(head_size > 0, nearest[kind_keys], 0),
                            best[last, columns], best[0],
                            ((best < WEAK_MATCH) & valid).sum(axis=0) / count,
                            idf_match, head_cover, ordered[np.minimum(1, last), columns]],
                           axis=1).astype(np.float32)
        out[(held == 0) | (count == 0)] = 0.0  # a title without terms matches nothing
        return out


def _distinct(keys: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(keys, return_inverse=True) for keys in [0, space): by marking a table rather
    than sorting where the table is small (a few times faster for the ~30k keys of a served
    batch), by sorting for the millions of keys of every training query at once."""
    if space > TABLE_LIMIT:
        return np.unique(keys, return_inverse=True)
    marked = np.zeros(space, dtype=bool)
    marked[keys] = True
    distinct = np.flatnonzero(marked)
    place = np.empty(space, dtype=np.int32)
    place[distinct] = np.arange(len(distinct))
    return distinct, place[keys]


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


def batch_features(queries: Sequence[str], tokens: Sequence[list[str]],
                   query_vectors: np.ndarray, sizes: Sequence[int], rows: np.ndarray,
                   product_vectors: np.ndarray, lexical: np.ndarray, titles: TitleTerms,
                   term_vectors: TermVectors, priors: Sequence[ProductPriors],
                   memory: JudgementMemory,
                   hidden_folds: Sequence[int | None] | None = None) -> np.ndarray:
    """float32 [len(rows), len(FEATURES)] for the candidates of a batch of queries: query i's
    are the next `sizes[i]` entries of `rows` (catalogue rows), `product_vectors` and
    `lexical` (normalised BM25). `tokens[i]` are its terms as the lexical index corrected them
    (`LexicalIndex.query_terms`), `priors[i]` the priors it sees and `hidden_folds[i]` the
    memory fold it must not see (a training query's own; None for any other query).

    The cosine, the priors and the memory come from the memory's ONNX graph, over the whole
    batch; the term features are array operations over the whole batch. The term vectors'
    products run query by query (`TermVectors.features`) on one BLAS thread: like the
    graph's, a query's features then do not depend on the batch it arrives in, bit for bit
    (the head's trees split on them, and the server and the evaluator batch differently)."""
    owner = np.repeat(np.arange(len(queries)), sizes)
    numeric = graph_features(memory.graph, np.asarray(query_vectors, dtype=np.float32), sizes,
                             rows, product_vectors, priors, hidden_folds)
    with one_blas_thread():
        term_matches = term_vectors.features(tokens, rows, sizes)
    columns = (titles.term_features(tokens, rows, owner)
               | dict(zip(GRAPH_FEATURES, numeric.T, strict=True))
               | dict(zip(TERM_VECTOR_FEATURES, term_matches.T, strict=True))
               | {"lexical": np.asarray(lexical, dtype=np.float32),
                  "char_cosine": titles.char_cosine(queries, rows, owner)})
    return np.stack([columns[name] for name in FEATURES], axis=1).astype(np.float32)


def graph_features(graph: FeatureGraph, query_vectors: np.ndarray, sizes: Sequence[int],
                   rows: np.ndarray, product_vectors: np.ndarray,
                   priors: Sequence[ProductPriors],
                   hidden_folds: Sequence[int | None] | None = None,
                   chunk: int = 64) -> np.ndarray:
    """float32 [len(rows), len(GRAPH_FEATURES)]: the graph's features of every candidate, one
    call per `chunk` queries. Queries with fewer candidates than the longest are padded (row
    -1), and the padding is dropped again."""
    queries, n = len(sizes), len(rows)
    if n == 0:
        return np.zeros((0, len(GRAPH_FEATURES)), dtype=np.float32)
    width = max(sizes)
    if len({id(p) for p in priors}) == 1:  # served and evaluated queries: the same priors
        prior = np.stack([priors[0].mean[rows], priors[0].count[rows]], axis=1)
    else:
        prior = np.concatenate([np.stack([p.mean[r], p.count[r]], axis=1) for p, r in zip(
            priors, np.split(rows, np.cumsum(sizes)[:-1]), strict=True)])
    ragged = n != queries * width  # training's pools; served ones have one size
    if not ragged:
        padded_rows = rows.reshape(queries, width)
        padded_products = product_vectors.reshape(queries, width, -1)
        padded_priors = prior.reshape(queries, width, 2)
    else:
        owner = np.repeat(np.arange(queries), sizes)
        slot = np.arange(n) - np.repeat(np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
        padded_rows = np.full((queries, width), -1, dtype=np.int64)
        padded_rows[owner, slot] = rows
        padded_products = np.zeros((queries, width, product_vectors.shape[1]), np.float32)
        padded_products[owner, slot] = product_vectors
        padded_priors = np.zeros((queries, width, 2), dtype=np.float32)
        padded_priors[owner, slot] = prior
    folds = np.array([-1 if f is None else f for f in hidden_folds] if hidden_folds
                     else [-1] * queries, dtype=np.int64)
    out = np.concatenate([
        graph(query_vectors[part], padded_products[part], padded_rows[part],
              padded_priors[part], folds[part])
        for part in (slice(start, start + chunk) for start in range(0, queries, chunk))])
    return out[owner, slot] if ragged else out.reshape(n, -1)
