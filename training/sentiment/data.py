"""Review sentiment data: star ratings → three classes, title + body → text, a split by review.

Rules (tests/test_sentiment_data.py checks each):
- classes from `Rating`: 1-2 negative (0), 3 neutral (1), 4-5 positive (2);
- text = `Title` and `Review Text` joined; a row with neither is skipped and counted;
- the split is by review: md5 of the review id decides, so a review lands in the same split on
  every machine and every run, and never in two (the dataset's own held-out part was cut the
  same way). Buckets 0-7 of 10 train, 8 dev, 9 test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fusionrank.core.datasets import REVIEWS_FILE, dataset_file
from fusionrank.core.sentiment.contract import SENTIMENT_CLASSES

REQUIRED_COLUMNS = ("review_id", "Clothing ID", "Title", "Review Text", "Rating")
SPLITS = ("train", "dev", "test")
SPLIT_BUCKETS = 10
DEV_BUCKET = 8
TEST_BUCKET = 9


class ReviewDataError(ValueError):
    """A reviews file that cannot be used: names the file and what is missing."""


def label_of_rating(rating: int) -> int:
    """Class index (see SENTIMENT_CLASSES) of a 1..5 star rating."""
    if rating in (1, 2):
        return 0
    if rating == 3:
        return 1
    if rating in (4, 5):
        return 2
    raise ValueError(f"rating {rating!r} is not 1..5")


def split_of(review_id: object) -> str:
    """train, dev or test, from the md5 of the review id's text (stable across machines,
    unlike Python's salted hash())."""
    bucket = int(hashlib.md5(str(review_id).encode("utf-8")).hexdigest(), 16) % SPLIT_BUCKETS
    if bucket == TEST_BUCKET:
        return "test"
    return "dev" if bucket == DEV_BUCKET else "train"


def review_text(title: object, body: object) -> str:
    """Title and body as one text; "" when both are missing or blank. A title without closing
    punctuation gets a full stop so the two do not read as one sentence."""
    parts = [str(p).strip() for p in (title, body) if isinstance(p, str) and p.strip()]
    if len(parts) == 2 and parts[0][-1] not in ".!?":
        parts[0] += "."
    return " ".join(parts)


@dataclass
class ReviewSet:
    """Labelled reviews (columns review_id, product_id, text, rating, label, split) and what
    loading skipped."""

    frame: pd.DataFrame
    source: str
    rows_read: int
    skipped: dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; one of {SPLITS}")
        return self.frame[self.frame.split == name].reset_index(drop=True)

    def class_counts(self, split: str) -> dict[str, int]:
        counts = self.split(split).label.value_counts()
        return {name: int(counts.get(i, 0)) for i, name in enumerate(SENTIMENT_CLASSES)}

    def summary(self) -> str:
        sizes = ", ".join(f"{s} {int((self.frame.split == s).sum())}" for s in SPLITS)
        text = f"{self.source}: {len(self.frame)} reviews from {self.rows_read} rows ({sizes})"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {why}" for why, n in self.skipped.items())
        return text


def read_reviews_frame(path: str | Path | None = None) -> tuple[pd.DataFrame, str]:
    """The raw reviews table (the shared dataset by default) and its path."""
    path = Path(path) if path else dataset_file(REVIEWS_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"reviews file {path} not found")
    frame = pd.read_csv(path, encoding="utf-8")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ReviewDataError(f"{path}: required column(s) missing: {', '.join(missing)} "
                              f"(expected {', '.join(REQUIRED_COLUMNS)})")
    return frame, str(path)


def load_reviews(path: str | Path | None = None) -> ReviewSet:
    """Labelled, split reviews; rows without text or with a rating outside 1..5 are skipped
    and counted in `ReviewSet.skipped`."""
    raw, source = read_reviews_frame(path)
    text = [review_text(t, b) for t, b in zip(raw["Title"], raw["Review Text"], strict=True)]
    rating = pd.to_numeric(raw["Rating"], errors="coerce")
    has_text = pd.Series([bool(t) for t in text], index=raw.index)
    valid_rating = rating.isin([1, 2, 3, 4, 5])
    frame = pd.DataFrame({
        "review_id": raw["review_id"].astype(str),
        "product_id": raw["Clothing ID"].astype(str),
        "text": text,
        "rating": rating,
    })[has_text & valid_rating].reset_index(drop=True)
    frame["rating"] = frame.rating.astype(int)
    frame["label"] = frame.rating.map(label_of_rating).astype(int)
    frame["split"] = frame.review_id.map(split_of)
    skipped = {"without title or text": int((~has_text).sum()),
               "with a rating outside 1..5": int((has_text & ~valid_rating).sum())}
    return ReviewSet(frame, source, len(raw), {k: v for k, v in skipped.items() if v})
