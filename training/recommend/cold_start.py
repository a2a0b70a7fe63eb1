"""Fit the cold-start path: where a cold product's logit lands on the warm score's scale, and how
much exposure cold products get.

Two steps, both on the validation window, never on the test window.

1. Calibration. The warm head and the cold head are each trained listwise over their own
   candidates, so their logits only order products within a shopper's warm or cold candidates;
   nothing says how a cold logit of 2 compares with a warm score of 2. Both are mapped to the
   chance the shopper buys the product in the next weeks by a logistic regression of "bought" on
   the score (Platt scaling) over the validation pools, one for the warm scores and one for the
   cold logits:

       P(bought | warm) = σ(α_w·S + β_w),   P(bought | cold) = σ(α_c·logit + β_c)

   Equal probabilities mean equal log-odds, so on S's scale a cold product scores

       (α_c·logit + β_c − β_w) / α_w = scale·logit + offset.

   Ranking by it ranks by the estimated purchase probability, and so maximises the expected
   recall of the list in that window. A new product's chance is small next to that of the
   20th warm product (it has no sales yet), so calibration alone shows almost none.

2. Exposure. The offset is then raised by the smallest δ at which cold products take as large
   a share of the validation top-K slots as they took of the validation purchases: new and
   rarely bought products are shown as often as shoppers buy them, each to the shoppers whose
   history reads most like it, and the ranking within each group is still the heads'. The
   share is measured, not chosen; what δ costs in recall is reported beside the calibrated
   point (benchmarks/reports/recommend.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusionrank.core.recommend.runtime import Candidates, ColdStart, Recommender

# δ is searched by bisection on [0, MAX_DELTA]: the cold share of the slots only grows with it.
MAX_DELTA = 20.0
DELTA_TOLERANCE = 0.01


@dataclass
class PoolScores:
    """Every validation candidate's score (S for warm products, the cold logit for cold ones),
    whether it is cold, and whether the shopper bought it in the window."""

    scores: np.ndarray  # float64 [n]
    cold: np.ndarray  # bool [n]
    bought: np.ndarray  # bool [n]


# Maps a cold logit onto itself: `Recommender.scores` with it gives S for the warm products
# and the cold head's raw logit for the cold ones.
IDENTITY = ColdStart(1.0, 0.0)


def pool_scores(recommender: Recommender, pools: dict[str, Candidates],
                targets: dict[str, set[str]]) -> PoolScores:
    parts = []
    for customer, pool in pools.items():
        scores = recommender.scores(pool, IDENTITY)
        bought = np.isin(pool.rows, [recommender.row_of[p] for p in targets[customer]
                                     if p in recommender.row_of])
        parts.append((scores, pool.cold, bought))
    return PoolScores(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def platt(scores: np.ndarray, bought: np.ndarray) -> tuple[float, float]:
    """(α, β) of P(bought) = σ(α·score + β), by unregularised logistic regression."""
    from sklearn.linear_model import LogisticRegression

    if bought.all() or not bought.any():
        raise ValueError(f"cannot calibrate on {len(bought)} candidates of which "
                         f"{int(bought.sum())} were bought: both outcomes are needed")
    model = LogisticRegression(C=np.inf, max_iter=1000)
    model.fit(scores.reshape(-1, 1), bought)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def cold_slot_share(recommender: Recommender, pools: dict[str, Candidates],
                    fit: ColdStart, k: int) -> float:
    """The share of the top-k slots that cold products take when ranked with `fit`."""
    cold_slots = slots = 0
    for pool in pools.values():
        scores = recommender.scores(pool, fit)
        top = np.argpartition(-scores, min(k, len(scores)) - 1)[:k]
        cold_slots += int(pool.cold[top].sum())
        slots += len(top)
    return cold_slots / max(slots, 1)


def cold_demand_share(recommender: Recommender, targets: dict[str, set[str]]) -> float:
    """The share of the window's (customer, product) purchases that were of cold products."""
    rows = [recommender.row_of[p] for items in targets.values() for p in items
            if p in recommender.row_of]
    return float(recommender.cold[rows].mean()) if rows else 0.0


def exposure_delta(recommender: Recommender, pools: dict[str, Candidates],
                   calibrated: ColdStart, share: float, k: int) -> float:
    """The smallest δ (to DELTA_TOLERANCE) at which cold products take `share` of the top-k
    slots with the offset raised by δ; 0 when calibration already gives them that much."""
    def reached(delta: float) -> bool:
        shifted = ColdStart(calibrated.scale, calibrated.offset + delta)
        return cold_slot_share(recommender, pools, shifted, k) >= share

    if reached(0.0):
        return 0.0
    low, high = 0.0, MAX_DELTA
    if not reached(high):
        return high
    while high - low > DELTA_TOLERANCE:
        middle = (low + high) / 2
        low, high = (low, middle) if reached(middle) else (middle, high)
    return round(high, 4)


@dataclass
class ColdStartFit:
    cold_start: ColdStart  # what is served: calibrated, then the exposure δ
    calibrated: ColdStart  # calibration alone (δ = 0)
    warm: tuple[float, float]  # (α_w, β_w)
    cold: tuple[float, float]  # (α_c, β_c)
    candidates: dict[str, int]  # warm / cold candidates and purchases among them
    demand_share: float  # cold products' share of the validation purchases
    delta: float


def fit_cold_start(recommender: Recommender, shoppers: dict, targets: dict[str, set[str]],
                   window: str, k: int) -> ColdStartFit:
    """`recommender`: both heads, statistics as of the validation cut."""
    pools = {c: recommender.candidates(s) for c, s in shoppers.items()}
    data = pool_scores(recommender, pools, targets)
    warm, cold = ~data.cold, data.cold
    alpha_w, beta_w = platt(data.scores[warm], data.bought[warm])
    alpha_c, beta_c = platt(data.scores[cold], data.bought[cold])
    if alpha_w <= 0 or alpha_c <= 0:
        raise ValueError(f"a head's score does not rise with purchases on validation "
                         f"(α warm {alpha_w:.3g}, α cold {alpha_c:.3g}): retrain before "
                         "calibrating")
    calibrated = ColdStart(alpha_c / alpha_w, (beta_c - beta_w) / alpha_w)
    share = cold_demand_share(recommender, targets)
    delta = exposure_delta(recommender, pools, calibrated, share, k)
    cold_start = ColdStart(
        calibrated.scale, calibrated.offset + delta,
        provenance=(f"Platt scaling of the warm score and the cold logit, then the offset "
                    f"raised by {delta:g} so that cold products take {share:.2%} of the top-{k} "
                    f"slots, their share of the purchases, on the validation window {window} "
                    f"({len(shoppers)} returning customers, {int(warm.sum())} warm and "
                    f"{int(cold.sum())} cold candidates); never fitted on the test window"))
    return ColdStartFit(cold_start, calibrated, (alpha_w, beta_w), (alpha_c, beta_c),
                        {"warm": int(warm.sum()), "warm_bought": int(data.bought[warm].sum()),
                         "cold": int(cold.sum()), "cold_bought": int(data.bought[cold].sum())},
                        share, delta)
