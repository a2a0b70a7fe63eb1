"""BM25 over a base and delta segments (the live catalogue, docs/live_catalogue.md), scored at
query time so that it equals a BM25 index built afresh over the live titles.

`LexicalIndex` stores bm25s's precomputed scores: each depends on the catalogue's document
count, each term's document frequency and the mean title length, which any change set moves.
Here each segment keeps what does not move, its titles' term counts and lengths, and a query
combines them over the live rows (`CatalogueRows.live`): the same BM25 as bm25s's "lucene"
method (`lexical.METHOD`, with its K1 and B), over the same tokens (`lexical.title_tokens`).
Dead rows score 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fusionrank.core.search.lexical import K1, B, LexicalIndex, title_tokens, top_k


@dataclass(frozen=True)
class TermCounts:
    """One segment's titles as term counts: rows first_row.. first_row + len(lengths) - 1."""

    first_row: int
    lengths: np.ndarray  # float32 [segment rows]: tokens per title
    postings: dict[str, tuple[np.ndarray, np.ndarray]]  # term → (int64 rows, float32 counts)

    @classmethod
    def of_titles(cls, titles: Sequence[str], first_row: int = 0) -> TermCounts:
        rows: dict[str, list[int]] = {}
        counts: dict[str, list[int]] = {}
        lengths = np.empty(len(titles), dtype=np.float32)
        for offset, title in enumerate(titles):
            tokens = title_tokens(title)
            lengths[offset] = len(tokens)
            for term, count in Counter(tokens).items():
                rows.setdefault(term, []).append(first_row + offset)
                counts.setdefault(term, []).append(count)
        return cls(first_row, lengths, {
            term: (np.asarray(rows[term], dtype=np.int64),
                   np.asarray(counts[term], dtype=np.float32)) for term in rows})

    @classmethod
    def of_index(cls, index: LexicalIndex) -> TermCounts:
        """A base segment from a saved BM25 index's term counts (`LexicalIndex.counts`),
        without reading its titles again."""
        if index.counts is None:
            raise ValueError("this BM25 index was saved without its term counts; rebuild it "
                             "to serve a live catalogue")
        vocabulary, indptr, indices = index.term_columns()
        tf = index.counts.tf
        return cls(0, index.counts.lengths.astype(np.float32), {
            term: (indices[indptr[i]:indptr[i + 1]].astype(np.int64),
                   tf[indptr[i]:indptr[i + 1]].astype(np.float32))
            for term, i in vocabulary.items()
            if i + 1 < len(indptr) and indptr[i + 1] > indptr[i]})


    def extended(self, others: Sequence[TermCounts]) -> TermCounts:
        """These rows, then those of `others` (each beginning where the last ends), as one:
        the segments a state serves, merged once so that a query looks each term up once."""
        postings = dict(self.postings)
        for other in others:
            for term, (rows, counts) in other.postings.items():
                if term in postings:
                    held_rows, held_counts = postings[term]
                    rows = np.concatenate([held_rows, rows])
                    counts = np.concatenate([held_counts, counts])
                postings[term] = (rows, counts)
        return TermCounts(self.first_row,
                          np.concatenate([self.lengths, *(other.lengths for other in others)]),
                          postings)


# Postings whose scores a state keeps once computed (12 bytes each): a state serves for a second
# or more, and its queries share their common terms.
CACHED_POSTINGS = 1_000_000


class LiveLexical:
    """BM25 of query terms against the live rows of a base and its deltas."""

    def __init__(self, segments: Sequence[TermCounts], live: np.ndarray):
        self.segments, self.live = list(segments), live
        self._scored: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # term → its live rows, BM25
        self._cached = 0  # postings in _scored
        lengths = np.concatenate([s.lengths for s in self.segments])
        if len(lengths) != len(live):
            raise ValueError(f"the segments hold {len(lengths)} rows, the live mask "
                             f"{len(live)}")
        self.documents = int(live.sum())
        self.mean_length = float(lengths[live].mean()) if self.documents else 0.0
        self._norm = (K1 * ((1 - B) + B * lengths / self.mean_length)
                      if self.documents else lengths)

    def frequency(self, term: str) -> int:
        """Live titles holding `term` (what the speller counts)."""
        return sum(int(np.count_nonzero(self.live[posting[0]])) for segment in self.segments
                   if (posting := segment.postings.get(term)) is not None)

    def new_terms(self, known: frozenset[str]) -> dict[str, int]:
        """The terms of the delta segments' titles that `known` lacks, with their live
        titles (0s left out)."""
        terms = {term for segment in self.segments[1:] for term in segment.postings
                 if term not in known}
        counts = {term: self.frequency(term) for term in sorted(terms)}
        return {term: count for term, count in counts.items() if count}

    def scores(self, terms: Sequence[str]) -> np.ndarray:
        """float32 [rows]: BM25 of the terms against every live row (0 elsewhere)."""
        out = np.zeros(len(self.live), dtype=np.float32)
        for term in terms:
            rows, scores = self._term_scores(term)
            out[rows] += scores
        return out

    def _term_scores(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """The live rows holding `term` and their BM25 for it (float32), computed once a
        state while CACHED_POSTINGS allows."""
        if (scored := self._scored.get(term)) is not None:
            return scored
        found = [posting for segment in self.segments
                 if (posting := segment.postings.get(term)) is not None]
        rows = np.concatenate([np.zeros(0, dtype=np.int64), *(r for r, _ in found)])
        counts = np.concatenate([np.zeros(0, dtype=np.float32), *(c for _, c in found)])
        keep = self.live[rows]
        rows, counts = rows[keep], counts[keep]
        frequency = len(rows)
        idf = np.log(1 + (self.documents - frequency + 0.5) / (frequency + 0.5))
        scored = rows, (idf * counts / (self._norm[rows] + counts)).astype(np.float32)
        if self._cached + frequency <= CACHED_POSTINGS:
            self._scored[term] = scored
            self._cached += frequency
        return scored

    def top(self, terms: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best live rows (best first, ties by the lower row) and their scores: where
        fewer than k rows match, the filler of zero scores is live rows too, never a replaced
        or deleted product's."""
        scores = self.scores(terms)
        scores[~self.live] = -np.inf
        return top_k(scores, min(k, self.documents))
