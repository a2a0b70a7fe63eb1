"""Ranking metrics through `ranx`, with the gain the dataset defines: relevance − 1.

ranx reads relevance judgements as integers, so the gain is stored as round(12·(grade − 1)):
12 is the smallest multiple that keeps every mean of 3 or 4 ratings exact, and NDCG's linear
gain, Recall and MRR do not change under a constant scale. Unjudged products count as gain 0;
a product is relevant for Recall/MRR when its grade is above 1.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

GAIN_SCALE = 12
METRICS = ("ndcg@10", "recall@100", "mrr@10")


def qrels_from(judged: Mapping[str, Mapping[int, float]]):
    from ranx import Qrels

    return Qrels({q: {str(r): round(GAIN_SCALE * (g - 1.0)) for r, g in rows.items()}
                  for q, rows in judged.items()})


def run_from(queries: list[str], rows: np.ndarray, scores: np.ndarray):
    """A ranx Run from ranked rows [queries, depth] and their scores (best first)."""
    from ranx import Run

    out: dict[str, dict[str, float]] = {}
    for query, row, score in zip(queries, rows, scores, strict=True):
        # ranx sorts by score; strictly decreasing pseudo-scores keep our order (and our
        # tie-breaking) exactly, whatever the real scores' ties.
        out[query] = {str(int(r)): float(len(row) - i) for i, r in enumerate(row)}
        del score
    return Run(out)


def evaluate_ranking(judged: Mapping[str, Mapping[int, float]], queries: list[str],
                     rows: np.ndarray, scores: np.ndarray,
                     metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
    """Mean metrics over `queries` (every one must have judgements)."""
    from ranx import evaluate

    subset = {q: judged[q] for q in queries}
    result = evaluate(qrels_from(subset), run_from(queries, rows, scores), list(metrics),
                      make_comparable=True)
    if isinstance(result, float):
        result = {metrics[0]: result}
    return {k: float(v) for k, v in result.items()}
