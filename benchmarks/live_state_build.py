"""What one search process pays to build a live catalogue's state (core/search/live_view.py
`LiveSearch.build`), by the rows changed since the base: the cost each refresh charges the
searches under a stream of change sets.

    python -m benchmarks.live_state_build --build $TMPDIR/live/build-hd

In process, from the build's search_steps version folder (as a search model loads it), over
one segment of N real products with a word added to each title (embeddings: random unit
vectors; the build does not read their values' meaning). Each size: the median of 5 builds
after one warm-up build (its caches: the base's rows, BM25 counts and title structures, the
segment's parsed titles).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import harness
from fusionrank.core.live.changes import parse_changes
from fusionrank.core.live.segments import LiveFolder
from fusionrank.core.product_table import ProductTable
from fusionrank.core.search.live_view import BaseSearch, LiveSearch
from fusionrank.core.search.retrieval import served_retrieval
from fusionrank.core.search.runtime import SearchRuntime
from fusionrank.model_repository.config import served_version

NAME = "live_state_build"
SIZES = (100, 1000, 3000, 10_000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=harness.REPORTS)
    args = parser.parse_args(argv)
    folder = served_version(args.build / "model_repository", "search_steps")
    table = ProductTable.open(folder / "products.jsonl")
    base = BaseSearch(folder.name, table, served_retrieval(folder, 1),
                      SearchRuntime.load(folder, 1))
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for n in SIZES:
            picked = rng.choice(len(table), n, replace=False)
            changes = parse_changes("\n".join(json.dumps({"op": "upsert", "product": {
                "product_id": str(table.field(int(r), "product_id")),
                "title": f"{table.title(int(r))} deluxe", "price": 1.0}}) for r in picked))
            vectors = rng.normal(size=(n, 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            live = LiveFolder(Path(scratch) / str(n))
            live.write_segment(n, changes, vectors)
            segment = live.read_segment(n, len(table))
            LiveSearch.build(base, [segment])  # warm: the caches a search process keeps
            seconds = []
            for _ in range(5):
                start = time.perf_counter()
                LiveSearch.build(base, [segment])
                seconds.append(time.perf_counter() - start)
            rows.append({"changed_rows": n, "median_s": round(statistics.median(seconds), 3),
                         "runs_s": [round(s, 3) for s in seconds]})
            print(rows[-1], file=sys.stderr)
    report = {**harness.stamp(), "products": len(table), "builds": rows}
    text = harness.heading(
        "Building a live catalogue's state in one search process", report,
        f"Catalogue: {args.build.name}, {len(table):,} products; one segment of N upserts")
    text += "\n" + harness.table(("changed rows", "median, s", "runs, s"),
                                 [(r["changed_rows"], r["median_s"],
                                   ", ".join(map(str, r["runs_s"]))) for r in rows]) + "\n"
    harness.save_report(NAME, report, text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
