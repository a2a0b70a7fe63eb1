"""Small relevance files for the training tests, cut from the shared Home Depot file (every
judgement of a fixed sample of queries) or synthesised where the test needs control."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from fusionrank.training.search.data import normalise_query

HOMEDEPOT = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "homedepot" \
    / "relevance.csv.gz"


def sample_judgements(out: Path, queries: int = 48, salt: str = "fixture") -> Path:
    """Every judgement of `queries` real queries (picked by a stable hash), as a CSV."""
    import pytest

    if not HOMEDEPOT.is_file():
        pytest.skip(f"shared dataset not found at {HOMEDEPOT}")
    frame = pd.read_csv(HOMEDEPOT, dtype={"product_uid": str})
    norm = frame.search_term.map(normalise_query)
    ranked = sorted(norm.unique(), key=lambda q: hashlib.sha256(f"{salt}{q}".encode()).hexdigest())
    # Queries with several judgements give the fine-tuning something to learn.
    counts = norm.value_counts()
    chosen = [q for q in ranked if counts[q] >= 5][:queries]
    frame[norm.isin(chosen)].to_csv(out, index=False)
    return out


def synthetic_judgements(out: Path, rows: list[tuple[str, str, str, float]]) -> Path:
    """A CSV from (product_uid, product_title, search_term, relevance) tuples."""
    pd.DataFrame(rows, columns=["product_uid", "product_title", "search_term", "relevance"]
                 ).assign(id=range(1, len(rows) + 1)).to_csv(out, index=False)
    return out
