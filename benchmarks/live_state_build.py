"""What one search process pays to build a live catalogue's state (core/search/live_view.py
`LiveSearch.build`), by the rows changed since the base: the cost each refresh charges the
searches under a stream of change sets.

    python -m benchmarks.live_state_build --build $TMPDIR/live/build-hd \
        --build $TMPDIR/live/build-1m

In process, from each build's search_steps version folder (as a search model loads it), over
one segment of N real products with a word added to each title (embeddings: random unit
vectors; the build does not read their values' meaning). Each size: the median of 5 builds
after one warm-up build (its caches: the base's rows, BM25 counts and title structures, the
segment's parsed titles). Then, as under a stream, five sets of 10 more, each state built on
the one before (`previous`): what a refresh costs once a second; and one more such build
under tracemalloc, for the memory a state's build allocates at its peak (numpy's arrays
included: it reports them to tracemalloc).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from benchmarks import harness
from fusionrank.core.live.changes import parse_changes
from fusionrank.core.live.segments import LiveBase, LiveFolder, Segment
from fusionrank.core.product_table import ProductTable
from fusionrank.core.search.live_view import BaseSearch, LiveSearch
from fusionrank.core.search.retrieval import served_retrieval
from fusionrank.core.search.runtime import SearchRuntime
from fusionrank.model_repository.config import served_version

NAME = "live_state_build"
SIZES = (100, 1000, 3000, 10_000, 20_000)
STREAM_SETS = 5


def write_segment(live: LiveFolder, table: ProductTable, rng: np.random.Generator, n: int,
                  sequence: int, first_row: int) -> Segment:
    """A segment of n real products, a word added to each title, random unit vectors."""
    picked = rng.choice(len(table), n, replace=False)
    changes = parse_changes("\n".join(json.dumps({"op": "upsert", "product": {
        "product_id": str(table.field(int(r), "product_id")),
        "title": f"{table.title(int(r))} deluxe", "price": float(sequence)}}) for r in picked))
    vectors = rng.normal(size=(n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    live.write_segment(sequence, changes, vectors)
    return live.read_segment(sequence, first_row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, action="append", required=True,
                        help="a build made with --live-catalogue (repeat for more catalogues)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="rows changed in the first segment, comma-separated")
    parser.add_argument("--out", type=Path, default=harness.REPORTS)
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    catalogues = [measure(build, sizes) for build in args.build]
    report = {**harness.stamp(), "catalogues": catalogues}
    text = harness.heading(
        "Building a live catalogue's state in one search process", report,
        "Catalogues: " + "; ".join(f"{c['build']}, {c['products']:,} products"
                                   for c in catalogues) + "; one segment of N upserts")
    for catalogue in catalogues:
        rows = catalogue["builds"]
        text += f"\n## {catalogue['build']}: {catalogue['products']:,} products\n\n"
        text += harness.table(
            ("changed rows", "from the base: median, s", "runs, s",
             "10 more, on the state before: median, s", "runs, s",
             "10 more: allocated at peak, MiB"),
            [(r["changed_rows"], r["median_s"], ", ".join(map(str, r["runs_s"])),
              r["next_median_s"], ", ".join(map(str, r["next_runs_s"])),
              r["next_peak_mib"]) for r in rows]) + "\n"
    harness.save_report(NAME, report, text, args.out)
    return 0


def measure(build: Path, sizes: list[int]) -> dict:
    folder = served_version(build / "model_repository", "search_steps")
    table = ProductTable.open(folder / "products.jsonl")
    base = BaseSearch(folder.name, table, LiveBase.read(folder / "live_base.json"),
                      served_retrieval(folder, 1), SearchRuntime.load(folder, 1))
    rng = np.random.default_rng(0)
    rows = []
    sequences = itertools.count(1)
    with tempfile.TemporaryDirectory() as scratch:
        for n in sizes:
            live = LiveFolder(Path(scratch) / str(n))
            # (a sequence names one segment in a search process's caches: fresh ones per size)
            first = next(sequences)
            segment = write_segment(live, table, rng, n, first, len(table))
            LiveSearch.build(base, [segment])  # warm: the caches a search process keeps
            seconds = []
            for _ in range(5):
                start = time.perf_counter()
                view = LiveSearch.build(base, [segment])
                seconds.append(time.perf_counter() - start)
            # A stream: sets of 10 more, each state built on the one before (as a search
            # process refreshes).
            segments, stream, peak = [segment], [], 0
            for traced in [False] * STREAM_SETS + [True]:
                sequence = next(sequences)
                segments.append(write_segment(live, table, rng, 10, sequence,
                                              segments[-1].first_row
                                              + len(segments[-1].changes.upserts)))
                if traced:  # (its time is tracemalloc's too: not among the runs)
                    tracemalloc.start()
                start = time.perf_counter()
                view = LiveSearch.build(base, segments, previous=view)
                if traced:
                    peak = tracemalloc.get_traced_memory()[1]
                    tracemalloc.stop()
                else:
                    stream.append(time.perf_counter() - start)
            rows.append({"changed_rows": n, "median_s": round(statistics.median(seconds), 3),
                         "runs_s": [round(s, 3) for s in seconds],
                         "next_median_s": round(statistics.median(stream), 3),
                         "next_runs_s": [round(s, 3) for s in stream],
                         "next_peak_mib": round(peak / 2**20, 1)})
            print(build.name, rows[-1], file=sys.stderr)
    return {"build": build.name, "products": len(table), "builds": rows}


if __name__ == "__main__":
    sys.exit(main())
