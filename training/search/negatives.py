"""Hard negatives for each training query, mined from BM25 and from the current encoder.

A mined product is a candidate negative only if it passes the false-negative guards: it is not
judged above the negative threshold for that query (judged-relevant products are never
negatives), its title is not a near-copy of a positive's title (term Jaccard), and its
embedding (where the encoder's are given) is not nearly identical to a positive's. BM25
candidates must match at least one term. The products judged irrelevant for the query come
first: they are negatives a human confirmed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from fusionrank.core.search.lexical import LexicalIndex, top_k
from fusionrank.core.search.runtime import dense_candidates
from fusionrank.core.search.title_terms import TitleTerms


@dataclass(frozen=True)
class MiningConfig:
    depth: int = 30  # how far down each retriever's list to look
    per_source: int = 8  # negatives kept per query from each retriever
    # Only products every rater called irrelevant are confirmed negatives: a 1.33 or 1.67 is
    # still relevant to Recall@100 (gain = grade − 1), and pushing it away cost recall.
    negative_threshold: float = 1.0
    max_title_jaccard: float = 0.8  # a candidate this close to a positive title is skipped
    max_positive_cosine: float = 0.95  # ... or this close to a positive's embedding


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / max(len(a | b), 1)


def mine_negatives(judged: Mapping[str, Mapping[int, float]], lexical: LexicalIndex,
                   titles: TitleTerms, config: MiningConfig,
                   query_embeddings: np.ndarray | None = None,
                   catalogue_embeddings: np.ndarray | None = None) -> dict[str, list[int]]:
    """query → negative catalogue rows (judged irrelevant first, then BM25 and encoder ones
    interleaved). `query_embeddings` rows follow `judged`'s query order."""
    queries = list(judged)
    dense = None
    if query_embeddings is not None and catalogue_embeddings is not None:
        dense, _ = dense_candidates(catalogue_embeddings, query_embeddings, config.depth,
                                    block=256)
    out: dict[str, list[int]] = {}
    for i, query in enumerate(tqdm(queries, desc="mining negatives", unit="query")):
        grades = judged[query]
        confirmed = sorted(r for r, g in grades.items() if g <= config.negative_threshold)
        blocked = {r for r, g in grades.items() if g > config.negative_threshold}
        positive_rows = sorted(blocked)
        guard = _Guard(positive_rows, titles, config, catalogue_embeddings)
        bm25_rows, bm25_scores = top_k(lexical.scores(lexical.query_terms(query)), config.depth)
        from_bm25 = guard.keep(bm25_rows[bm25_scores > 0], blocked)  # only real matches
        from_dense = guard.keep(dense[i], blocked) if dense is not None else []
        mined = _interleave(from_bm25[: config.per_source], from_dense[: config.per_source])
        out[query] = list(dict.fromkeys(confirmed + mined))
    return out


class _Guard:
    def __init__(self, positive_rows: list[int], titles: TitleTerms, config: MiningConfig,
                 embeddings: np.ndarray | None):
        self.titles = titles
        self.config = config
        self.positive_terms = [titles.terms[r] for r in positive_rows]
        self.embeddings = embeddings
        self.positive_vectors = embeddings[positive_rows] if embeddings is not None else None

    def keep(self, rows: np.ndarray, blocked: set[int]) -> list[int]:
        kept = []
        for row in map(int, rows):
            if row in blocked:
                continue
            terms = self.titles.terms[row]
            if any(_jaccard(terms, p) >= self.config.max_title_jaccard
                   for p in self.positive_terms):
                continue
            if (self.positive_vectors is not None
                    and len(self.positive_vectors)
                    and float((self.positive_vectors @ self.embeddings[row]).max())
                    >= self.config.max_positive_cosine):
                continue
            kept.append(row)
        return kept


def _interleave(a: list[int], b: list[int]) -> list[int]:
    merged: list[int] = []
    for i in range(max(len(a), len(b))):
        merged.extend(x[i] for x in (a, b) if i < len(x))
    return list(dict.fromkeys(merged))
