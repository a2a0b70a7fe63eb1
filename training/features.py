"""The feedback head's cheap interaction features, computed the same way offline and in the
server's `feedback` model (so this module imports numpy only, never torch).

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
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from fusionrank.training.lexical_index import lexical_tokens

FEATURES = ("similarity", "lexical", "overlap", "title_cover", "query_terms", "prior",
            "prior_count", "last_term", "first_term", "bigrams", "numbers", "title_terms",
            "char_cosine")
CHAR_BUCKETS = 1 << 20  # trigrams are hashed (crc32, stable across processes) into buckets
PRIOR_SMOOTHING = 3.0  # pseudo-judgements at the global mean: one rating says little


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

    def leave_one_out(self, rows: np.ndarray, grades: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Priors for training pairs without their own judgement (else the head learns to
        copy the label through the prior)."""
        count = self.count[rows].astype(np.float64)
        smoothed_total = self.mean[rows] * (count + PRIOR_SMOOTHING)
        mean = (smoothed_total - grades) / np.maximum(count - 1 + PRIOR_SMOOTHING, 1e-9)
        return mean.astype(np.float32), (count - 1).astype(np.float32)

    def save(self, path: str | Path) -> None:
        np.save(Path(path), np.stack([self.mean, self.count], axis=1).astype(np.float32))

    @classmethod
    def load(cls, path: str | Path) -> ProductPriors:
        table = np.load(Path(path))
        return cls(table[:, 0].copy(), table[:, 1].copy())


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


class TitleTerms:
    """Each catalogue title's term set, adjacent-term pairs and character-trigram vector,
    computed once (a couple of seconds for 50k titles)."""

    def __init__(self, titles: Sequence[str]):
        tokens = [lexical_tokens(t) for t in titles]
        self.terms = [frozenset(t) for t in tokens]
        self.bigrams = [frozenset(pairwise(t)) for t in tokens]
        grams = [char_trigrams(t) for t in titles]
        df = np.bincount(np.fromiter((g for gs in grams for g in set(gs)), dtype=np.int64),
                         minlength=CHAR_BUCKETS)
        self.idf = np.log((1 + len(titles)) / (1 + df)).astype(np.float32) + 1.0
        self.char_vectors = [_tfidf(gs, self.idf) for gs in grams]

    def char_cosine(self, query: str, rows: np.ndarray) -> np.ndarray:
        q = _tfidf(char_trigrams(query), self.idf)
        return np.array([sum(w * q.get(g, 0.0) for g, w in self.char_vectors[r].items())
                         for r in rows], dtype=np.float32)

    def overlap(self, query: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        query_terms = set(lexical_tokens(query))
        n = max(len(query_terms), 1)
        found = np.array([len(query_terms & self.terms[r]) for r in rows], dtype=np.float32)
        sizes = np.array([max(len(self.terms[r]), 1) for r in rows], dtype=np.float32)
        return found / n, found / sizes


def pair_features(query: str, rows: np.ndarray, similarity: np.ndarray, lexical: np.ndarray,
                  titles: TitleTerms, prior_mean: np.ndarray,
                  prior_count: np.ndarray) -> np.ndarray:
    """float32 [len(rows), len(FEATURES)] for one query's products."""
    tokens = lexical_tokens(query)
    overlap, cover = titles.overlap(query, rows)
    n = len(rows)
    query_terms = np.full(n, len(tokens) / 10.0, dtype=np.float32)
    last = _has(titles, rows, tokens[-1:])
    first = _has(titles, rows, tokens[:1])
    pairs = set(pairwise(tokens))
    bigrams = (np.array([len(pairs & titles.bigrams[r]) for r in rows], dtype=np.float32)
               / len(pairs)) if pairs else np.zeros(n, dtype=np.float32)
    numbers = {t for t in tokens if any(c.isdigit() for c in t)}
    numeric = (np.array([len(numbers & titles.terms[r]) for r in rows], dtype=np.float32)
               / len(numbers)) if numbers else np.ones(n, dtype=np.float32)
    title_terms = np.array([len(titles.terms[r]) for r in rows], dtype=np.float32) / 20.0
    return np.stack([similarity, lexical, overlap, cover, query_terms, prior_mean - 2.0,
                     np.log1p(prior_count) / 3.0, last, first, bigrams, numeric, title_terms,
                     titles.char_cosine(query, rows)], axis=1).astype(np.float32)


def _has(titles: TitleTerms, rows: np.ndarray, terms: list[str]) -> np.ndarray:
    if not terms:
        return np.zeros(len(rows), dtype=np.float32)
    return np.array([terms[0] in titles.terms[r] for r in rows], dtype=np.float32)
