"""Relevance judgements: loading, validation, and the train / dev / test split by query.

A judgement file has the Home Depot columns `product_uid`, `product_title`, `search_term`,
`relevance` (1 = irrelevant .. 3 = highly relevant; means of several ratings). Queries are
identified by their normalised text, so "Drill " and "drill" are one query and always land in
the same split: the split is a hash of (seed, normalised query), independent of row order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrank.core.catalogue import Catalogue
from fusionrank.core.datasets import HOMEDEPOT_FILE, dataset_file, homedepot_catalogue

REQUIRED_COLUMNS = ("product_uid", "product_title", "search_term", "relevance")
MIN_GRADE, MAX_GRADE = 1.0, 3.0
SPLITS = ("train", "dev", "test")


def normalise_query(text: str) -> str:
    """The query's identity: trimmed, lower-cased, inner whitespace collapsed."""
    return " ".join(str(text).strip().lower().split())


@dataclass(frozen=True)
class SplitConfig:
    seed: int = 13
    dev_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not (0 < self.dev_fraction < 1 and 0 < self.test_fraction < 1
                and self.dev_fraction + self.test_fraction < 1):
            raise ValueError("dev and test fractions must be in (0, 1) and sum to less than 1")


def split_of(query: str, config: SplitConfig) -> str:
    """train, dev or test for a normalised query: a stable hash, not a random draw."""
    digest = hashlib.sha256(f"{config.seed}|{query}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < config.dev_fraction:
        return "dev"
    if u < config.dev_fraction + config.test_fraction:
        return "test"
    return "train"


@dataclass
class Judgements:
    """Every judgement, keyed to catalogue rows, with each query's split."""

    frame: pd.DataFrame  # query, row, grade, split (one row per distinct query-product pair)
    catalogue: Catalogue
    source: str
    sha256: str
    split_config: SplitConfig
    rows_of: dict[str, int] = field(repr=False, default_factory=dict)  # product_uid → row

    def queries(self, split: str) -> list[str]:
        """The split's normalised queries, sorted (a stable order for every consumer)."""
        return sorted(self.frame.loc[self.frame.split == split, "query"].unique())

    def ranked_queries(self, split: str) -> list[str]:
        """The split's queries with at least one product judged above 1: the only ones whose
        ranking metrics are defined (a query with nothing relevant scores 0 whatever the
        ranking)."""
        best = self.of(split).groupby("query").grade.max()
        return sorted(best.index[best > MIN_GRADE])

    def of(self, split: str) -> pd.DataFrame:
        return self.frame[self.frame.split == split]

    def qrels(self, split: str) -> dict[str, dict[int, float]]:
        """query → {catalogue row: grade}."""
        out: dict[str, dict[int, float]] = {}
        for query, row, grade in self.of(split)[["query", "row", "grade"]].itertuples(index=False):
            out.setdefault(query, {})[int(row)] = float(grade)
        return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_data_file(path: str | Path | None) -> Path:
    """The judgement file: the given path or the shared Home Depot file; fails if absent."""
    if path is None:
        return dataset_file(HOMEDEPOT_FILE)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"relevance file {path} not found")
    return path


def read_judgement_file(path: Path) -> pd.DataFrame:
    """The raw file, checked: required columns present, grades numeric and within 1..3."""
    try:
        frame = pd.read_csv(path, encoding="utf-8", dtype={"product_uid": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise ValueError(f"{path}: not a readable UTF-8 CSV file ({error})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: required column(s) missing: {', '.join(missing)} "
                         f"(found: {', '.join(map(str, frame.columns))})")
    if frame.empty:
        raise ValueError(f"{path}: no judgements (the file has a header but no rows)")
    grades = pd.to_numeric(frame.relevance, errors="coerce")
    bad = frame.index[grades.isna() | (grades < MIN_GRADE) | (grades > MAX_GRADE)]
    if len(bad):
        first = bad[0]
        raise ValueError(f"{path}: {len(bad)} relevance label(s) outside "
                         f"{MIN_GRADE:g}..{MAX_GRADE:g} or not numbers; "
                         f"first on data row {first + 1}: "
                         f"{frame.relevance[first]!r}")
    empty = frame.index[frame.search_term.fillna("").astype(str).str.strip() == ""]
    if len(empty):
        raise ValueError(f"{path}: {len(empty)} row(s) with an empty search_term; "
                         f"first on data row {empty[0] + 1}")
    frame["relevance"] = grades
    return frame


def load_judgements(path: str | Path | None = None,
                    split_config: SplitConfig | None = None) -> Judgements:
    """Read, validate and split a judgement file; every split must hold at least one query."""
    path = resolve_data_file(path)
    split_config = split_config or SplitConfig()
    raw = read_judgement_file(path)
    catalogue, _ = homedepot_catalogue(path)
    rows_of = {pid: i for i, pid in enumerate(catalogue.ids)}
    frame = pd.DataFrame({
        "query": raw.search_term.map(normalise_query),
        "row": raw.product_uid.astype(str).str.strip().map(rows_of),
        "grade": raw.relevance.astype(np.float64),
    })
    if frame.row.isna().any():
        raise ValueError(f"{path}: products missing from its own catalogue (empty titles?)")
    # The same pair judged twice (e.g. two spellings of one query): one judgement, mean grade.
    frame = frame.groupby(["query", "row"], as_index=False, sort=True).grade.mean()
    frame["row"] = frame.row.astype(np.int64)
    frame["split"] = frame["query"].map(lambda q: split_of(q, split_config))
    counts = frame.groupby("split")["query"].nunique()
    empty = [s for s in SPLITS if counts.get(s, 0) == 0]
    if empty:
        raise ValueError(f"{path}: the {', '.join(empty)} split would be empty "
                         f"({frame['query'].nunique()} distinct queries); use a larger file "
                         "or larger dev/test fractions")
    return Judgements(frame, catalogue, str(path), file_sha256(path), split_config, rows_of)


def positives(judgements: Judgements, split: str, threshold: float) -> dict[str, dict[int, float]]:
    """query → {row: grade} for the judgements at or above `threshold`."""
    return {q: {r: g for r, g in rows.items() if g >= threshold}
            for q, rows in judgements.qrels(split).items()
            if any(g >= threshold for g in rows.values())}


def assert_disjoint(groups: Iterable[Iterable[str]]) -> None:
    seen: set[str] = set()
    for group in groups:
        group = set(group)
        if seen & group:
            raise AssertionError(f"queries in two splits: {sorted(seen & group)[:5]}")
        seen |= group
