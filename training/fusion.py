"""Hybrid candidates and the fused score S = α·similarity + β·feedback + γ·lexical.

Candidates: the dense top-N by cosine over the whole catalogue, plus the best BM25 products
not among them (`merge_candidates`, the code the server's `lexical` model runs). Scoring and
ordering go through `fusionrank.ranking.rank`, the function the Triton ranker calls, so the
offline ranking is the served one.

Weight search (documented, exhaustive): every (α, β, γ) on the simplex α + β + γ = 1 with step
`grid_step` (S's order does not change with a positive scale, so the simplex covers every
ranking a non-negative weighting can give), scored by mean NDCG@10 on dev; ties keep the
earlier grid point (more similarity weight). Signals a system does not use stay at 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from fusionrank.ranking import FusionWeights, rank
from fusionrank.training.lexical_index import LexicalIndex, merge_candidates, normalised, top_k
from fusionrank.training.metrics import evaluate_ranking

SIGNALS = ("similarity", "feedback", "lexical")
DEPTH = 100  # rank depth kept for the metrics (Recall@100)


@dataclass
class CandidatePool:
    """Every query's pool and signals: arrays [queries, pool]."""

    queries: list[str]
    rows: np.ndarray  # int64 catalogue rows
    similarity: np.ndarray  # float32 cosine
    lexical: np.ndarray  # float32 BM25 / query's best
    feedback: np.ndarray | None = None  # float32 predicted grade

    def tensors(self) -> dict[str, np.ndarray]:
        out = {"CANDIDATES": self.rows, "SIMILARITY": self.similarity, "LEXICAL": self.lexical}
        if self.feedback is not None:
            out["FEEDBACK"] = self.feedback
        return out


def build_pools(queries: list[str], query_vectors: np.ndarray, catalogue: np.ndarray,
                lexical: LexicalIndex, dense: int, extra: int) -> CandidatePool:
    rows, sims, lexs = [], [], []
    for query, vector in zip(queries, query_vectors, strict=True):
        cosine = catalogue @ vector
        scores = lexical.scores(query)
        pool = merge_candidates(top_k(cosine, dense)[0], scores, extra)
        rows.append(pool)
        sims.append(cosine[pool])
        lexs.append(normalised(scores)[pool])
    return CandidatePool(queries, np.stack(rows), np.stack(sims).astype(np.float32),
                         np.stack(lexs).astype(np.float32))


def ranked(pool: CandidatePool, weights: FusionWeights,
           depth: int = DEPTH) -> tuple[np.ndarray, np.ndarray]:
    return rank(pool.rows, weights.signals(pool.tensors()), min(depth, pool.rows.shape[1]))


def simplex(step: float, signals: tuple[str, ...]) -> list[dict[str, float]]:
    n = round(1 / step)
    grid = []
    for parts in _compositions(n, len(signals)):
        grid.append({s: round(p * step, 6) for s, p in zip(signals, parts, strict=True)})
    return grid


def _compositions(total: int, parts: int):
    if parts == 1:
        yield (total,)
        return
    for first in range(total, -1, -1):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


@dataclass
class FitResult:
    weights: FusionWeights
    dev_ndcg10: float
    tried: int


def fit_weights(pool: CandidatePool, judged: Mapping[str, Mapping[int, float]],
                signals: tuple[str, ...], step: float, description: str,
                progress: Callable[[str], None] | None = None) -> FitResult:
    """The grid point with the best dev NDCG@10 for the given signals."""
    best: tuple[float, dict[str, float]] | None = None
    grid = simplex(step, signals)
    for point in grid:
        if not any(point.values()):
            continue
        used = {s: w for s, w in point.items() if w > 0}
        rows, scores = ranked(pool, FusionWeights(used), depth=10)
        ndcg = evaluate_ranking(judged, pool.queries, rows, scores, ("ndcg@10",))["ndcg@10"]
        if best is None or ndcg > best[0] + 1e-12:
            best = (ndcg, used)
    assert best is not None
    ndcg, used = best
    weights = {s: used.get(s, 0.0) for s in signals}
    provenance = (f"{description}: grid search over the simplex (step {step}) of "
                  f"{', '.join(signals)}; best mean dev NDCG@10 {ndcg:.4f} over "
                  f"{len(pool.queries)} dev queries, {len(grid)} points tried")
    if progress:
        progress(provenance)
    return FitResult(FusionWeights(weights, provenance), ndcg, len(grid))
