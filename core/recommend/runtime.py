"""Recommendation scoring shared by the offline evaluator and the served `recommend` models.

A shopper is the recency-weighted mean of the language-model embeddings of the products they
bought (each purchase weighs 2^(-days ago / half-life)), so a product nobody has bought yet is
still close to the shoppers whose purchases read alike. For each shopper a candidate pool is
gathered (their previous purchases + the most popular products + the embedding-nearest products
+ the products most often bought together with theirs), every candidate gets behavioural
features (how often and how recently this shopper bought it, its popularity and trend, its
co-purchase affinity), the feedback head (an ONNX MLP) scores them, and the final score fuses
the head's logit with the cosine similarity through `fusionrank.core.fusion.rank`.

Cold start. A product fewer than `cold_buyers` shoppers bought (new or rarely bought) has
almost no behaviour, and a head trained on what sells ranks it below everything popular. Such
products therefore compete through a head of their own: the pool also takes the `cold_pool`
cold products nearest the shopper's text vector, the cold head (same inputs, trained on cold
candidates only, so text decides among them) scores every cold candidate, and `ColdStart` maps
its logit onto the warm score's scale: a·logit + b, fitted on validation
(training/recommend/cold_start.py says how).

Server-side code: imports numpy and onnxruntime only (never torch or pandas).

An artefact folder holds
- `embeddings.npy`, `products.jsonl`: the catalogue index (row i = line i);
- `product_stats.npz`: per-product purchase counts as of the reference time (see ProductStats);
- `copurchase.npy`: item-item cosine over customers (float16 [products, products]);
- `recommend_head.onnx`: the feedback head; `ranking.json`: the fusion weights;
- `recommender.json`: RecommenderConfig (reference time, half-life, pool sizes);
- optionally `cold_head.onnx` and `cold_start.json` (ColdStart): the cold-start path.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.encoding import onnx_session
from fusionrank.core.fusion import FusionWeights, fuse, rank

HEAD_INPUTS = ("features", "shopper", "product")

SECONDS_PER_DAY = 86_400.0
# Behavioural features, in the order of the head's FEATURES input.
FEATURE_NAMES = (
    "bought_log_count",  # log(1 + purchases of this product by this shopper)
    "bought_recency",  # 2^(-days since this shopper last bought it / half-life); 0 if never
    "bought",  # 1 if the shopper bought it before
    "bought_share",  # this product's share of the shopper's purchases
    "bought_log_days",  # log(1 + days since this shopper last bought it); log(1 + 365) if never
    "similarity",  # cosine(shopper, product)
    "copurchase",  # recency-weighted mean co-purchase cosine with the shopper's products
    "copurchase_max",  # the largest co-purchase cosine with any one of them
    "popularity_4w",  # log(1 + distinct buyers in the 4 weeks before the reference time)
    "popularity_1w",  # same over 1 week
    "popularity_all",  # same over all the history
    "trend",  # log(1 + buyers last 4 weeks) - log(1 + buyers the 4 weeks before)
    "newness",  # 2^(-weeks since the product's first sale); 1 if never sold
    "repeat_rate",  # share of the product's buyers who bought it on two or more invoices
    "shopper_log_size",  # log(1 + the shopper's known purchases)
    "shopper_log_distinct",  # log(1 + distinct products the shopper bought)
    "shopper_log_idle_days",  # log(1 + days since the shopper's latest purchase of anything)
    "shopper_log_tenure_days",  # log(1 + days since the shopper's first known purchase)
    "bought_per_week",  # purchases of this product per week of the shopper's tenure
)
NEVER_DAYS = 365.0


@dataclass
class RecommenderConfig:
    reference_time: int  # unix seconds: "now" for the features (end of the training data)
    half_life_days: float = 30.0
    popular_pool: int = 100
    nearest_pool: int = 100
    copurchase_pool: int = 100
    cold_buyers: int = 5  # fewer distinct buyers before the reference time: a cold product
    cold_pool: int = 100  # cold products nearest the shopper added to the pool
    provenance: dict = field(default_factory=dict)  # what data, which cut, when trained

    @classmethod
    def load(cls, path: Path) -> RecommenderConfig:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


@dataclass
class ColdStart:
    """A cold product's score on the warm score's scale: scale · cold logit + offset."""

    scale: float
    offset: float
    provenance: str = ""  # the data and method of the fit

    @classmethod
    def load(cls, path: Path) -> ColdStart:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    def score(self, cold_logits: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(cold_logits, dtype=np.float64) + self.offset


@dataclass(frozen=True)
class ProductStats:
    """Distinct buyers per catalogue row, counted before the reference time."""

    buyers_4w: np.ndarray
    buyers_prev_4w: np.ndarray  # the 4 weeks before those
    buyers_1w: np.ndarray
    buyers_all: np.ndarray
    repeat_buyers: np.ndarray  # buyers who bought it on two or more invoices
    weeks_since_first_sale: np.ndarray  # 0 where never sold: a new product

    def save(self, path: Path) -> None:
        np.savez(path, **{k: np.asarray(v, dtype=np.float64) for k, v in asdict(self).items()})

    @classmethod
    def load(cls, path: Path) -> ProductStats:
        return cls(**artefacts.load_arrays(path, [f.name for f in fields(cls)]))

    def popularity_order(self) -> np.ndarray:
        """Catalogue rows, most bought in the last 4 weeks first (then all time, then row)."""
        rows = np.arange(len(self.buyers_4w))
        return np.lexsort((rows, -self.buyers_all, -self.buyers_4w))


@dataclass(frozen=True)
class Shopper:
    """What the ranker needs to know about one shopper."""

    vector: np.ndarray  # float32 [dim], unit length, or zero when nothing known was bought
    rows: np.ndarray  # int64 [m], distinct catalogue rows bought, ascending
    counts: np.ndarray  # float32 [m], purchases of each
    days: np.ndarray  # float32 [m], days since its latest purchase
    unknown: int = 0  # history entries ignored as unknown products

    @property
    def is_cold(self) -> bool:
        return len(self.rows) == 0


def recency_weights(days: np.ndarray, half_life_days: float) -> np.ndarray:
    """2^(-days / half-life): a purchase one half-life ago weighs half as much as one today."""
    return np.exp2(-np.maximum(days, 0.0) / half_life_days)


def days_before(times: np.ndarray, reference_time: int) -> np.ndarray:
    """Days between each purchase and the reference time; unknown (<= 0) or later times
    count as the reference time itself."""
    times = np.asarray(times, dtype=np.int64)
    days = (reference_time - times) / SECONDS_PER_DAY
    return np.where(times > 0, np.maximum(days, 0.0), 0.0)


def build_shopper(rows: np.ndarray, days: np.ndarray, embeddings: np.ndarray,
                  half_life_days: float, unknown: int = 0) -> Shopper:
    """A shopper from their known purchases: catalogue rows and days ago, one per purchase."""
    rows = np.asarray(rows, dtype=np.int64)
    days = np.asarray(days, dtype=np.float64)
    if len(rows) == 0:
        return Shopper(np.zeros(embeddings.shape[1], np.float32), rows,
                       np.zeros(0, np.float32), np.zeros(0, np.float32), unknown)
    weights = recency_weights(days, half_life_days)
    vector = (weights[:, None] * embeddings[rows].astype(np.float64)).sum(axis=0)
    vector /= max(np.linalg.norm(vector), 1e-12)
    distinct, inverse, counts = np.unique(rows, return_inverse=True, return_counts=True)
    latest = np.full(len(distinct), np.inf)
    np.minimum.at(latest, inverse, days)
    return Shopper(vector.astype(np.float32), distinct, counts.astype(np.float32),
                   latest.astype(np.float32), unknown)


@dataclass(frozen=True)
class Affinity:
    """How close every catalogue row is to one shopper (each array [products])."""

    similarity: np.ndarray  # cosine(shopper vector, product embedding): language-model taste
    copurchase: np.ndarray  # recency-weighted mean co-purchase cosine with what they bought
    copurchase_max: np.ndarray  # the strongest co-purchase cosine with any one of their products


def shopper_affinity(shopper: Shopper, embeddings: np.ndarray, copurchase: np.ndarray,
                     half_life_days: float) -> Affinity:
    similarity = embeddings @ shopper.vector
    if shopper.is_cold:
        zeros = np.zeros(len(embeddings), np.float32)
        return Affinity(similarity, zeros, zeros)
    bought = copurchase[shopper.rows].astype(np.float32)  # [bought, products]
    weights = recency_weights(shopper.days.astype(np.float64), half_life_days)
    mean = (weights @ bought) / weights.sum()
    return Affinity(similarity, mean.astype(np.float32), bought.max(axis=0))


def top_rows(scores: np.ndarray, n: int) -> np.ndarray:
    n = min(n, len(scores))
    return np.argpartition(-scores, n - 1)[:n] if n > 0 else np.zeros(0, np.int64)


def candidate_rows(shopper: Shopper, affinity: Affinity, popular: np.ndarray,
                   config: RecommenderConfig, need: int = 0) -> np.ndarray:
    """The shopper's pool, ascending: bought + popular + embedding-nearest + most co-purchased.
    `need` more popular products are added so that excluding the bought ones leaves enough."""
    n_popular = max(config.popular_pool, need + len(shopper.rows))
    parts = [shopper.rows, popular[:n_popular]]
    if not shopper.is_cold:
        parts.append(top_rows(affinity.similarity, config.nearest_pool))
        parts.append(top_rows(affinity.copurchase, config.copurchase_pool))
    return np.unique(np.concatenate(parts).astype(np.int64))


def nearest_cold_rows(affinity: Affinity, cold: np.ndarray, n: int) -> np.ndarray:
    """The n cold products (`cold` marks them) nearest the shopper's vector."""
    cold_rows = np.flatnonzero(cold)
    return cold_rows[top_rows(affinity.similarity[cold_rows], n)]


def candidate_features(shopper: Shopper, rows: np.ndarray, affinity: Affinity,
                       stats: ProductStats, half_life_days: float) -> np.ndarray:
    """float32 [len(rows), len(FEATURE_NAMES)]."""
    n = len(rows)
    count = np.zeros(n)
    days = np.full(n, np.inf)
    position = np.searchsorted(shopper.rows, rows)
    hit = position < len(shopper.rows)
    hit[hit] = shopper.rows[position[hit]] == rows[hit]
    count[hit] = shopper.counts[position[hit]]
    days[hit] = shopper.days[position[hit]]
    size = float(shopper.counts.sum())
    idle = float(shopper.days.min()) if len(shopper.days) else 0.0
    # Tenure: the oldest "latest purchase" is a lower bound of the first purchase's age, which
    # the ranker does not receive; it is the same offline and served.
    tenure = float(shopper.days.max()) if len(shopper.days) else 0.0
    b4 = stats.buyers_4w[rows]
    columns = (
        np.log1p(count),
        np.where(hit, recency_weights(np.where(hit, days, 0.0), half_life_days), 0.0),
        hit.astype(np.float64),
        count / max(size, 1.0),
        np.log1p(np.where(hit, days, NEVER_DAYS)),
        affinity.similarity[rows],
        affinity.copurchase[rows],
        affinity.copurchase_max[rows],
        np.log1p(b4),
        np.log1p(stats.buyers_1w[rows]),
        np.log1p(stats.buyers_all[rows]),
        np.log1p(b4) - np.log1p(stats.buyers_prev_4w[rows]),
        np.exp2(-stats.weeks_since_first_sale[rows]),
        stats.repeat_buyers[rows] / np.maximum(stats.buyers_all[rows], 1.0),
        np.full(n, np.log1p(size)),
        np.full(n, np.log1p(len(shopper.rows))),
        np.full(n, np.log1p(idle)),
        np.full(n, np.log1p(tenure)),
        count / max(tenure / 7.0, 1.0),
    )
    return np.stack(columns, axis=1).astype(np.float32)


@dataclass(frozen=True)
class Candidates:
    """One shopper's scored pool (every array [pool])."""

    rows: np.ndarray
    features: np.ndarray  # [pool, features]
    similarity: np.ndarray
    feedback: np.ndarray  # the head's logit (the cold head's for cold rows, when it exists)
    cold: np.ndarray  # bool: a cold product (scored by the cold head)


class OnnxRecommendHead:
    """The ONNX feedback head: (features, shopper, product embeddings) → purchase logit."""

    def __init__(self, path: Path, threads: int = 1):
        self.session = onnx_session(path, threads)

    def __call__(self, features: np.ndarray, shopper: np.ndarray,
                 products: np.ndarray) -> np.ndarray:
        shoppers = np.ascontiguousarray(np.broadcast_to(shopper, products.shape), np.float32)
        arrays = (features, shoppers, np.ascontiguousarray(products, np.float32))
        (logits,) = self.session.run(None, dict(zip(HEAD_INPUTS, arrays, strict=True)))
        return logits.reshape(-1)


class HistoryEncoder:
    """Product ids and purchase times → Shopper (the served `history` step runs this)."""

    def __init__(self, embeddings: np.ndarray, product_ids: list[str], config: RecommenderConfig):
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        self.row_of = {pid: row for row, pid in enumerate(product_ids)}
        self.config = config

    @classmethod
    def load(cls, folder: str | Path) -> HistoryEncoder:
        folder = Path(folder)
        lines = (folder / artefacts.PRODUCTS).read_text(encoding="utf-8").splitlines()
        return cls(artefacts.load_array(folder / artefacts.EMBEDDINGS,
                                        shape=(len(lines), None)),
                   [json.loads(line)["product_id"] for line in lines],
                   RecommenderConfig.load(folder / artefacts.RECOMMENDER_CONFIG))

    def __call__(self, product_ids: list[str], times: np.ndarray) -> Shopper:
        """Unknown ids are skipped and counted; times <= 0 mean "at the reference time"."""
        known = [(self.row_of[p], t) for p, t in zip(product_ids, times, strict=True)
                 if p in self.row_of]
        rows = np.array([r for r, _ in known], dtype=np.int64)
        stamps = np.array([t for _, t in known], dtype=np.int64)
        days = days_before(stamps, self.config.reference_time)
        return build_shopper(rows, days, self.embeddings, self.config.half_life_days,
                             unknown=len(product_ids) - len(known))


class Recommender:
    """A catalogue with its statistics, head and weights; `shopper()` then `recommend()` is the
    served path. `load()` reads an artefact folder; training code builds one in memory."""

    def __init__(self, embeddings: np.ndarray, product_json: list[str], stats: ProductStats,
                 copurchase: np.ndarray, config: RecommenderConfig, weights: FusionWeights,
                 head: OnnxRecommendHead | None = None,
                 cold_head: OnnxRecommendHead | None = None,
                 cold_fit: ColdStart | None = None):
        if len(product_json) != len(embeddings):
            raise ValueError(f"{len(product_json)} products but {len(embeddings)} embeddings")
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        self.product_json = product_json
        self.product_ids = [json.loads(line)["product_id"] for line in product_json]
        self.histories = HistoryEncoder(self.embeddings, self.product_ids, config)
        self.row_of = self.histories.row_of
        self.stats = stats
        self.copurchase = copurchase
        self.config = config
        self.weights = weights
        self.head = head
        self.cold_head = cold_head
        self.cold_fit = cold_fit  # where a cold logit lands on the warm scale
        # bool [products]: products fewer than cold_buyers shoppers bought
        self.cold = stats.buyers_all < config.cold_buyers
        self.popular = stats.popularity_order()

    @property
    def has_cold_head(self) -> bool:
        return self.cold_head is not None

    @classmethod
    def load(cls, folder: str | Path, threads: int = 1) -> Recommender:
        folder = Path(folder)
        missing = [f for f in artefacts.RECOMMEND_FILES if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a recommender artefact folder: missing "
                                    f"{', '.join(missing)} (run `fusionrank train-recommender`)")
        lines = (folder / artefacts.PRODUCTS).read_text(encoding="utf-8").splitlines()
        return cls(artefacts.load_array(folder / artefacts.EMBEDDINGS,
                                        shape=(len(lines), None)),
                   lines,
                   ProductStats.load(folder / artefacts.PRODUCT_STATS),
                   artefacts.load_array(folder / artefacts.COPURCHASE,
                                        shape=(len(lines), len(lines))),
                   RecommenderConfig.load(folder / artefacts.RECOMMENDER_CONFIG),
                   FusionWeights.load(folder / artefacts.FUSION_WEIGHTS),
                   OnnxRecommendHead(folder / artefacts.RECOMMEND_HEAD, threads),
                   *cold_start_files(folder, threads))

    def shopper(self, product_ids: list[str], times: np.ndarray) -> Shopper:
        return self.histories(product_ids, times)

    def pool(self, shopper: Shopper, need: int = 0, with_cold: bool | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Candidate rows, their features, the similarity to every catalogue row, and which
        rows the pool holds without the cold products added. Those (the `cold_pool` cold
        products nearest the shopper) join it when `with_cold` (default: when this recommender
        has a cold head) and the shopper bought something known."""
        affinity = shopper_affinity(shopper, self.embeddings, self.copurchase,
                                    self.config.half_life_days)
        with_cold = self.has_cold_head if with_cold is None else with_cold
        rows = candidate_rows(shopper, affinity, self.popular, self.config, need)
        base = np.ones(len(rows), bool)
        if with_cold and not shopper.is_cold:
            merged = np.union1d(rows, nearest_cold_rows(affinity, self.cold,
                                                        self.config.cold_pool))
            rows, base = merged, np.isin(merged, rows)
        features = candidate_features(shopper, rows, affinity, self.stats,
                                      self.config.half_life_days)
        return rows, features, affinity.similarity, base

    def candidates(self, shopper: Shopper, need: int = 0) -> Candidates:
        rows, features, similarity, _ = self.pool(shopper, need)
        if self.head is None:
            raise RuntimeError("this recommender has no feedback head yet")
        cold = self.cold[rows] if self.has_cold_head else np.zeros(len(rows), bool)
        feedback = np.empty(len(rows), np.float32)
        for head, part in ((self.head, ~cold), (self.cold_head, cold)):
            if part.any():
                feedback[part] = head(features[part], shopper.vector,
                                      self.embeddings[rows[part]])
        return Candidates(rows, features, similarity[rows].astype(np.float32), feedback, cold)

    def recommend(self, shopper: Shopper, k: int, exclude_purchased: bool = False,
                  withdrawn: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best catalogue rows for the shopper and their scores, best first; never a
        row `withdrawn` (bool [products]: deleted from a live catalogue) marks."""
        if shopper.is_cold:
            return self.cold_start(k, withdrawn)
        gone = 0 if withdrawn is None else int(withdrawn.sum())
        pool = self.candidates(shopper, need=k + gone if exclude_purchased or gone else 0)
        keep = np.ones(len(pool.rows), bool)
        if exclude_purchased:
            keep = ~np.isin(pool.rows, shopper.rows)
        if gone:
            keep &= ~withdrawn[pool.rows]
        rows, scores = rank(pool.rows[keep][None], [(1.0, self.scores(pool)[keep][None])], k)
        return rows[0], scores[0].astype(np.float32)

    def scores(self, pool: Candidates, cold_fit: ColdStart | None = None) -> np.ndarray:
        """float64 [pool]: S = Σ wᵢ·signalᵢ of a warm product; ColdStart's a·logit + b of a cold
        one (`cold_fit`, default this recommender's)."""
        cold_fit = cold_fit or self.cold_fit
        signals = {"SIMILARITY": pool.similarity[None], "FEEDBACK": pool.feedback[None]}
        scores = fuse(self.weights.signals(signals))[0]
        if pool.cold.any():
            if cold_fit is None:
                raise RuntimeError("this recommender has a cold head but no ColdStart fit yet")
            scores[pool.cold] = cold_fit.score(pool.feedback[pool.cold])
        return scores

    def cold_start(self, k: int,
                   withdrawn: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """No known purchase: the most popular products, scored by log(1 + recent buyers)."""
        popular = self.popular if withdrawn is None else self.popular[~withdrawn[self.popular]]
        rows = popular[:k]
        return rows.astype(np.int64), np.log1p(self.stats.buyers_4w[rows]).astype(np.float32)


def cold_start_files(folder: Path, threads: int = 1
                     ) -> tuple[OnnxRecommendHead | None, ColdStart | None]:
    """The cold head and its calibration, or (None, None) for a folder without them; one
    without the other is refused (a half-written cold-start path)."""
    head, fit = folder / artefacts.COLD_HEAD, folder / artefacts.COLD_START
    if head.is_file() != fit.is_file():
        present, missing = (head, fit) if head.is_file() else (fit, head)
        raise FileNotFoundError(f"{folder}: {present.name} without {missing.name}; the cold-start "
                                "path needs both (run `fusionrank train-recommender`)")
    if not head.is_file():
        return None, None
    return OnnxRecommendHead(head, threads), ColdStart.load(fit)
