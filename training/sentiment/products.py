"""Product-level sentiment: a catalogue feature from the classifier's view of each review.

Each review scores s = P(positive) − P(negative) in [-1, 1] (neutral counts as 0). A product's
score is the Bayesian average of its reviews' scores with the catalogue mean μ as prior, worth
`prior_weight` (m) reviews:

    sentiment_score = (Σ s + m · μ) / (n + m)

so a product with one glowing review sits close to μ and one with hundreds sits at its own mean.
A product without reviews has no row; readers use μ, recorded in the sidecar JSON.

Files (`build_product_sentiment`):
    product_sentiment.csv   product_id, review_count, sentiment_score (best first)
    product_sentiment.json  prior_mean, prior_weight, reviews, products, skipped, source, model
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrank.core.sentiment.contract import SENTIMENT_CLASSES
from fusionrank.training.sentiment.data import load_reviews

FEATURE_FILE = "product_sentiment.csv"
FEATURE_COLUMNS = ("product_id", "review_count", "sentiment_score")
DEFAULT_PRIOR_WEIGHT = 10.0
NEGATIVE, POSITIVE = SENTIMENT_CLASSES.index("negative"), SENTIMENT_CLASSES.index("positive")


def review_scores(probabilities: np.ndarray) -> np.ndarray:
    """P(positive) − P(negative) for each row of [reviews, 3] probabilities."""
    return probabilities[:, POSITIVE] - probabilities[:, NEGATIVE]


def aggregate_product_sentiment(product_ids: pd.Series | list[str], scores: np.ndarray,
                                prior_weight: float = DEFAULT_PRIOR_WEIGHT
                                ) -> tuple[pd.DataFrame, float]:
    """One row per reviewed product (FEATURE_COLUMNS), best first, and the prior mean μ."""
    if prior_weight < 0:
        raise ValueError(f"prior_weight must be >= 0, got {prior_weight}")
    if len(scores) == 0:
        raise ValueError("no reviews to aggregate")
    frame = pd.DataFrame({"product_id": pd.Series(product_ids, dtype=str).to_numpy(),
                          "score": np.asarray(scores, dtype=float)})
    prior_mean = float(frame.score.mean())
    grouped = frame.groupby("product_id").score.agg(["sum", "count"])
    shrunk = (grouped["sum"] + prior_weight * prior_mean) / (grouped["count"] + prior_weight)
    out = pd.DataFrame({"product_id": grouped.index, "review_count": grouped["count"].to_numpy(),
                        "sentiment_score": shrunk.round(6).to_numpy()})
    out = out.sort_values(["sentiment_score", "product_id"], ascending=[False, True])
    return out.reset_index(drop=True), prior_mean


@dataclass
class ProductSentimentReport:
    path: str
    prior_mean: float
    prior_weight: float
    reviews: int
    products: int
    source: str
    model: str
    skipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        skipped = "".join(f"; skipped {n} {why}" for why, n in self.skipped.items())
        return (f"{self.path}: sentiment of {self.products} products from {self.reviews} "
                f"reviews (prior mean {self.prior_mean:+.3f}, weight {self.prior_weight:g})"
                f"{skipped}")


def build_product_sentiment(sentiment_dir: str | Path, out_dir: str | Path,
                            reviews: str | Path | None = None,
                            prior_weight: float = DEFAULT_PRIOR_WEIGHT,
                            threads: int | None = None,
                            progress: bool = True) -> ProductSentimentReport:
    """Classify every review with text (all splits: this is a feature, not an evaluation) with
    the exported classifier in `sentiment_dir`, aggregate per product and write the feature
    files into `out_dir`. `reviews`: a file with the dataset's columns (default: the shared
    dataset)."""
    from fusionrank.core.sentiment.runtime import SentimentRuntime

    review_set = load_reviews(reviews)
    probabilities = SentimentRuntime(sentiment_dir, threads)(review_set.frame.text.tolist(),
                                                             progress=progress)
    table, prior_mean = aggregate_product_sentiment(review_set.frame.product_id,
                                                    review_scores(probabilities), prior_weight)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FEATURE_FILE
    table.to_csv(path, index=False)
    report = ProductSentimentReport(
        str(path), round(prior_mean, 6), prior_weight, len(review_set.frame), len(table),
        review_set.source, str(sentiment_dir), review_set.skipped)
    path.with_suffix(".json").write_text(json.dumps(asdict(report), indent=2) + "\n",
                                         encoding="utf-8")
    return report


@dataclass(frozen=True)
class ProductSentiment:
    """The feature as the ranker reads it: a score for every product id, μ for the unreviewed."""

    scores: dict[str, float]
    counts: dict[str, int]
    prior_mean: float

    def score(self, product_id: str) -> float:
        return self.scores.get(product_id, self.prior_mean)

    def review_count(self, product_id: str) -> int:
        return self.counts.get(product_id, 0)


def load_product_sentiment(path: str | Path) -> ProductSentiment:
    """Read product_sentiment.csv and its sidecar JSON."""
    path = Path(path)
    if path.is_dir():
        path = path / FEATURE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"product sentiment file {path} not found")
    table = pd.read_csv(path, dtype={"product_id": str})
    missing = [c for c in FEATURE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: column(s) missing: {', '.join(missing)}")
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    return ProductSentiment(
        dict(zip(table.product_id, table.sentiment_score.astype(float), strict=True)),
        dict(zip(table.product_id, table.review_count.astype(int), strict=True)),
        float(meta["prior_mean"]))
