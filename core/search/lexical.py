"""BM25 over product titles (the `bm25s` library), saved as ONE `.npz` file, and the query
speller built from the titles' vocabulary.

One file because the Triton model repository places artefacts as single files. `query_terms`
corrects a query once; BM25 (`scores`) and the feedback features both take those terms. This
module imports only numpy, bm25s and symspellpy (never torch).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np

from fusionrank.core.mapped_npz import load_mapped, save_mappable
from fusionrank.core.search.spelling import QuerySpeller
from fusionrank.core.search.text import lexical_tokens

K1, B, METHOD = 1.2, 0.75, "lucene"
EMPTY_TITLE = "<empty>"  # the one token of a title without terms (bm25s needs one)


def title_tokens(title: str) -> list[str]:
    """The tokens BM25 indexes for a title: an empty token list would break bm25s's
    vocabulary, so a title without terms gets one dummy token."""
    return lexical_tokens(title) or [EMPTY_TITLE]


class LexicalIndex:
    """BM25 scores of a query against every product title (row i = catalogue row i)."""

    def __init__(self, retriever: bm25s.BM25, counts: TitleCounts | None = None):
        self._retriever = retriever
        self.counts = counts  # the titles' term counts (None: an index saved without them)
        self.size = int(retriever.scores["num_docs"])
        frequency = np.diff(retriever.scores["indptr"])  # titles holding each term
        # (bm25s's vocabulary also holds "" for padding, with no column of its own.)
        self.speller = QuerySpeller({term: int(frequency[i])
                                     for term, i in retriever.vocab_dict.items()
                                     if i < len(frequency) and term not in ("", EMPTY_TITLE)})

    @classmethod
    def build(cls, titles: Sequence[str]) -> LexicalIndex:
        if not titles:
            raise ValueError("cannot build a BM25 index over an empty catalogue")
        corpus = [title_tokens(t) for t in titles]
        retriever = bm25s.BM25(k1=K1, b=B, method=METHOD, backend="numpy")
        retriever.index(corpus, show_progress=False)
        return cls(retriever, TitleCounts.of_corpus(corpus, retriever))

    def save(self, path: str | Path) -> None:
        scores = self._retriever.scores
        vocab = sorted(self._retriever.vocab_dict.items(), key=lambda item: item[1])
        if [i for _, i in vocab] != list(range(len(vocab))):
            raise RuntimeError("bm25s vocabulary ids are not contiguous; cannot save")
        params = {"k1": K1, "b": B, "method": METHOD, "num_docs": self.size}
        counts = {} if self.counts is None else {"tf": self.counts.tf,
                                                 "lengths": self.counts.lengths}
        save_mappable(path, {"data": scores["data"], "indices": scores["indices"],
                             "indptr": scores["indptr"], "vocab": np.array([t for t, _ in vocab]),
                             "params": np.array(json.dumps(params)), **counts})

    @classmethod
    def load(cls, path: str | Path) -> LexicalIndex:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"BM25 index {path} not found")
        # Memory-mapped (bm25s only reads the score matrix): the processes share its pages.
        saved = load_mapped(path, ["data", "indices", "indptr", "vocab", "params"],
                            optional=["tf", "lengths"])
        params = json.loads(str(saved["params"]))
        retriever = bm25s.BM25(k1=params["k1"], b=params["b"], method=params["method"],
                               backend="numpy")
        retriever.scores = {"data": saved["data"], "indices": saved["indices"],
                            "indptr": saved["indptr"], "num_docs": params["num_docs"]}
        retriever.vocab_dict = {str(t): i for i, t in enumerate(saved["vocab"])}
        retriever.unique_token_ids_set = set(retriever.vocab_dict.values())
        retriever.nonoccurrence_array = None  # only bm25l / bm25+ need it
        counts = TitleCounts(saved["tf"], saved["lengths"]) if "tf" in saved else None
        return cls(retriever, counts)

    def term_columns(self) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
        """The vocabulary (term → column) and the score matrix's `indptr` and `indices`: each
        column's titles, ascending, which `counts.tf` follows."""
        scores = self._retriever.scores
        return self._retriever.vocab_dict, scores["indptr"], scores["indices"]

    def query_terms(self, query: str) -> list[str]:
        """The query's terms, spelling-corrected against the titles: the one correction of a
        query, which BM25 and the feedback features both take."""
        return self.speller.correct(lexical_tokens(query))

    def scores(self, terms: list[str]) -> np.ndarray:
        """float32 [products]: BM25 of the (corrected) query terms against every title (0 where
        nothing matches)."""
        ids = self._retriever.get_tokens_ids(terms)
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._retriever.get_scores(ids), dtype=np.float32)

    def top(self, terms: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best rows (best first, ties by row) and their scores."""
        return top_k(self.scores(terms), k)


@dataclass(frozen=True)
class TitleCounts:
    """What BM25's scores are made of, kept beside them so that a live catalogue can score its
    base again with statistics that changed (core/search/live_lexical.py): `tf`, each stored
    score's term count (the same order as bm25s's `data`: a term's titles, ascending), and
    `lengths`, each title's tokens."""

    tf: np.ndarray  # uint16 [postings]
    lengths: np.ndarray  # uint16 [titles]

    @classmethod
    def of_corpus(cls, corpus: Sequence[Sequence[str]], retriever: bm25s.BM25) -> TitleCounts:
        vocab = retriever.vocab_dict
        titles, terms, counts = [], [], []
        for title, tokens in enumerate(corpus):
            for term, count in Counter(tokens).items():
                titles.append(title)
                terms.append(vocab[term])
                counts.append(count)
        # A term's postings in title order, as bm25s's CSC score matrix holds them.
        order = np.lexsort((titles, terms))
        tf = np.asarray(counts, dtype=np.uint16)[order]
        indices = np.asarray(titles, dtype=np.int64)[order]
        if len(tf) != len(retriever.scores["data"]) or \
                not np.array_equal(indices, retriever.scores["indices"]):
            raise RuntimeError("bm25s's score matrix is not in (term, title) order; the term "
                               "counts cannot be stored beside it")
        lengths = np.asarray([len(tokens) for tokens in corpus])
        if max(lengths.max(initial=0), tf.max(initial=0)) > np.iinfo(np.uint16).max:
            raise ValueError("a title of more than 65,535 tokens: its counts do not fit uint16")
        return cls(tf, lengths.astype(np.uint16))


# Rows a group of top_k's prefilter holds at most (of 64 to 512, 128 was fastest at 1M products).
BLOCK = 128
TIE_SCAN = 65_536  # rows compared a step when top_k looks for the lowest rows tied at its edge


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the k highest scores, best first, ties broken by the lower row (deterministic)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64), scores[:0]
    rows = _above_kth_group_max(scores, k)
    part = _top_k_of(scores[rows], k)
    return rows[part], scores[rows[part]]


def _above_kth_group_max(scores: np.ndarray, k: int) -> np.ndarray:
    """Ascending rows that hold the k best scores and, where the k-th is tied, the lowest rows
    tied with it, found without partitioning the whole array: at a million products a
    partition or a full `scores > 0` scan costs more than the rest of a query's BM25. The rows
    fall into groups of at most BLOCK, and the k-th largest of the groups' maxima is a lower
    bound on the k-th largest score (k groups each hold a score at least that high): every row
    above it is in a group whose maximum is above it, and the rows equal to it are taken lowest
    first, only as many as can be needed. A group is a stripe, rows j, j + G, j + 2G, … (G
    groups): its maxima are then an elementwise maximum over BLOCK contiguous slices, which
    numpy vectorises, 3× faster at a million rows than contiguous blocks' `reduceat`."""
    groups = -(-len(scores) // BLOCK)
    if groups < 4 * k:
        return np.arange(len(scores))
    bands = len(scores) // groups  # complete stripes' rows: group j holds j + groups · band
    maxima = scores[:bands * groups].reshape(bands, groups).max(axis=0)
    tail = scores[bands * groups:]  # the last, partial band: groups 0 .. len(tail) - 1
    np.maximum(maxima[:len(tail)], tail, out=maxima[:len(tail)])
    bound = np.partition(maxima, len(maxima) - k)[len(maxima) - k]
    above = _rows_of(np.flatnonzero(maxima > bound), len(scores))
    above = above[scores[above] > bound]
    # A row equal to the bound lies in a group whose maximum is at least the bound.
    tied = _lowest_equal(scores, np.flatnonzero(maxima >= bound), bound, k - len(above))
    return np.union1d(above, tied)


def _rows_of(groups: np.ndarray, size: int) -> np.ndarray:
    """The rows of the given groups (stripes of a catalogue of `size` rows), in no order."""
    stride = -(-size // BLOCK)
    rows = (groups[:, None] + stride * np.arange(BLOCK)).ravel()
    return rows[rows < size]


def _lowest_equal(scores: np.ndarray, groups: np.ndarray, value: float, n: int) -> np.ndarray:
    """The n lowest rows whose score equals `value`, all of which lie in `groups`. Few groups
    (a tie among a few titles): their rows are read. Many (a tie at BM25's zero, or among
    thousands of titles): the scores are read from row 0 on, TIE_SCAN at a time, until n are
    found, which the tie's frequency makes soon, without a pass over the whole catalogue."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if len(groups) * BLOCK <= TIE_SCAN:
        rows = _rows_of(groups, len(scores))
        return np.sort(rows[scores[rows] == value])[:n]
    found: list[np.ndarray] = []
    for start in range(0, len(scores), TIE_SCAN):
        rows = start + np.flatnonzero(scores[start:start + TIE_SCAN] == value)[:n]
        found.append(rows)
        n -= len(rows)
        if n <= 0:
            break
    return np.concatenate(found)


def _top_k_of(scores: np.ndarray, k: int) -> np.ndarray:
    """top_k over a (short) array: positions of its k highest, best first, ties by position."""
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    # argpartition picks arbitrarily among tied scores at the boundary: keep every position
    # above the boundary score, then the lowest positions that tie with it.
    edge = scores[part].min()
    above = part[scores[part] > edge]
    tied = np.flatnonzero(scores == edge)[:k - len(above)]
    part = np.concatenate([above, tied])
    return part[np.lexsort((part, -scores[part]))]


def normalised(scores: np.ndarray, rows: np.ndarray | None = None,
               best: float | None = None) -> np.ndarray:
    """BM25 / the query's best BM25 over the whole catalogue, in [0, 1]; the LEXICAL signal
    (of `rows` only, where given: the candidates need not pay for a million divisions).
    `best`: that best score where the caller knows it (top_k's first), saving a full scan.
    Per-query scaling makes the weight comparable across short and long queries."""
    best = float(scores.max(initial=0.0)) if best is None else float(best)
    picked = scores if rows is None else scores[rows]
    return (picked / best).astype(np.float32) if best > 0 else np.zeros_like(picked)


def lexical_pool(dense_rows: np.ndarray, scores: np.ndarray,
                 extra: int) -> tuple[np.ndarray, float]:
    """The hybrid pool of one query: its dense candidates, then the `extra` best BM25 rows not
    already among them (always len(dense_rows) + extra rows, the catalogue permitting, so
    pools of one batch stack into one tensor); and the query's best BM25 score (for
    `normalised`), both from one top_k."""
    extra = min(extra, len(scores) - len(dense_rows))
    best, best_scores = top_k(scores, len(dense_rows) + max(extra, 0))
    top = float(best_scores[0]) if len(best_scores) else 0.0
    if extra <= 0:
        return dense_rows.astype(np.int64), top
    added = best[~np.isin(best, dense_rows)][:extra]
    return np.concatenate([dense_rows.astype(np.int64), added]), top
