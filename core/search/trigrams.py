"""Character-trigram TF-IDF vectors (the `char_cosine` feature), which still match misspelt or
run-together words ("toliet", "2x4x8") where whole terms do not."""

from __future__ import annotations

import functools
import zlib

import numpy as np
from scipy import sparse

CHAR_BUCKETS = 1 << 20  # trigrams are hashed (crc32, stable across processes) into buckets


def char_trigrams(text: str) -> list[int]:
    """Hashed character trigrams of each word padded with spaces (" drill " → " dr", "dri", …)."""
    grams: list[int] = []
    for word in text.lower().split():
        grams.extend(word_trigrams(word))
    return grams


# A million titles hold a few hundred thousand distinct words: hashing each once, not once a
# title, takes most of the trigram work out of a build. Bounded, as queries pass through too.
@functools.lru_cache(maxsize=1 << 18)
def word_trigrams(word: str) -> tuple[int, ...]:
    padded = f" {word} "
    return tuple(zlib.crc32(padded[i:i + 3].encode()) % CHAR_BUCKETS
                 for i in range(len(padded) - 2))


def tfidf(grams: list[int], idf: np.ndarray) -> dict[int, float]:
    """Sub-linear TF × IDF, L2-normalised, as {bucket: weight}."""
    weights = tf_weights(gram_counts(grams), idf)
    norm = norm_of(weights)
    return {g: w / norm for g, w in weights.items()}


def gram_counts(grams: list[int]) -> dict[int, int]:
    """{bucket: how many times it occurs}, buckets in the order they first occur."""
    counts: dict[int, int] = {}
    for g in grams:
        counts[g] = counts.get(g, 0) + 1
    return counts


def tf_weights(counts: dict[int, int], idf: np.ndarray) -> dict[int, float]:
    """{bucket: sub-linear TF × IDF}, before normalisation."""
    return {g: (1.0 + np.log(c)) * float(idf[g]) for g, c in counts.items()}


def norm_of(weights: dict[int, float]) -> float:
    """The L2 norm `tfidf` divides by (1 for an empty vector)."""
    return float(np.sqrt(sum(w * w for w in weights.values()))) or 1.0


def norms_of(indptr: np.ndarray, buckets: np.ndarray, counts: np.ndarray,
             idf: np.ndarray) -> np.ndarray:
    """float64 [rows]: `norm_of(tf_weights(...))` of every row of a ragged table of (bucket,
    count) entries at once, with its very bits: each weight as `tf_weights` computes it, and
    the squares summed in row order from 0, one entry position at a time across all rows
    (numpy's own row sums add in another order)."""
    squares = (1.0 + log_table(int(counts.max(initial=1)))[counts]) * idf[buckets].astype(
        np.float64)
    squares *= squares
    starts, lengths = indptr[:-1].astype(np.int64), np.diff(indptr)
    totals = np.zeros(len(lengths), dtype=np.float64)
    rows = np.arange(len(lengths))
    for position in range(int(lengths.max(initial=0))):
        rows = rows[lengths[rows] > position]
        totals[rows] += squares[starts[rows] + position]
    norms = np.sqrt(totals)
    norms[norms == 0] = 1.0
    return norms


def log_table(largest: int) -> np.ndarray:
    """float64 [largest + 1]: np.log(c) of each count c ≥ 1, computed as `tf_weights` computes
    it (one scalar np.log of a Python int), so weights rebuilt from counts keep its bits."""
    return np.array([0.0, *(np.log(c) for c in range(1, largest + 1))], dtype=np.float64)


def sparse_rows(vectors: list[dict[int, float]]) -> sparse.csr_matrix:
    """{bucket: weight} vectors as the rows of one CSR matrix [len(vectors), CHAR_BUCKETS]."""
    indptr = np.cumsum([0] + [len(v) for v in vectors])
    indices = np.fromiter((g for v in vectors for g in v), dtype=np.int64, count=indptr[-1])
    data = np.fromiter((w for v in vectors for w in v.values()), dtype=np.float64,
                       count=indptr[-1])
    return sparse.csr_matrix((data, indices, indptr), shape=(len(vectors), CHAR_BUCKETS))


def idf_of(grams: list[list[int]]) -> np.ndarray:
    """float32 [CHAR_BUCKETS]: smoothed IDF of each bucket over these documents' trigrams."""
    df = np.bincount(np.fromiter((g for gs in grams for g in set(gs)), dtype=np.int64),
                     minlength=CHAR_BUCKETS)
    return np.log((1 + len(grams)) / (1 + df)).astype(np.float32) + 1.0
