"""Fitting the fused score S = α·similarity + β·feedback + γ·lexical on dev pools.

The pools are the search runtime's (`fusionrank.core.search.runtime.candidate_pool`, what the
server's `scoring` step builds), and ranking goes through `ranked`, the ranker step's function,
so the weights are fitted on the served ranking.

Weight search (documented, exhaustive): every (α, β, γ) on the simplex α + β + γ = 1 with step
`grid_step` (S's order does not change with a positive scale, so the simplex covers every
ranking a non-negative weighting can give), scored by mean NDCG@10 on dev; ties keep the
earlier grid point (more similarity weight). Signals a system does not use stay at 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fusionrank.core.fusion import Cascade, FusionWeights
from fusionrank.core.search.runtime import CandidatePool, ranked
from fusionrank.training.metrics import evaluate_ranking

SIGNALS = ("similarity", "feedback", "lexical")


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
                progress: Callable[[str], None] | None = None,
                cascade: Cascade | None = None) -> FitResult:
    """The grid point with the best dev NDCG@10 for the given signals; with `cascade`, of S
    over the cascade's head (the rest in the first stage's order below it)."""
    best: tuple[float, dict[str, float]] | None = None
    grid = simplex(step, signals)
    for point in grid:
        if not any(point.values()):
            continue
        used = {s: w for s, w in point.items() if w > 0}
        # A cascade's first stage may weigh a signal S gives no weight: S keeps it, at 0.
        rows, scores = ranked(pool, FusionWeights(used if cascade is None else point,
                                                  cascade=cascade), depth=10)
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
    return FitResult(FusionWeights(weights, provenance, cascade), ndcg, len(grid))
