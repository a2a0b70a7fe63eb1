"""Serving options sweep of the fused search pipeline: one row per setting, each a fresh build of
the same trained run over the Home Depot catalogue, loaded by perf_analyzer over gRPC with
distinct real queries (response cache off) at concurrency 1 and 8.

    .venv/bin/python -m benchmarks.search_sweep --run runs/relevance --queries 300 --seconds 3

Writes benchmarks/reports/search_sweep.md and .json. The rows run one after the other on the
same machine; the defaults of `ServingOptions` are chosen from this table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from benchmarks.harness import (
    REPORTS,
    PeakMemory,
    benchmark_queries,
    heading,
    save_report,
    stamp,
    table,
)
from benchmarks.search_benchmark import perf_analyzer, perf_analyzer_input
from fusionrank.app.build import build_search_repository
from fusionrank.app.serve import TritonServer
from fusionrank.core.datasets import homedepot_catalogue
from fusionrank.core.model_folders import bundled_model_path
from fusionrank.model_repository.search.ensemble import ServingOptions

SWEPT = ("layout", "precision", "encoder_instances", "ranker_instances", "onnx_threads",
         "max_queue_delay_us")
# Each row: what it changes from BASE, the served default (the first row is BASE itself).
BASE = {name: getattr(ServingOptions(), name) for name in SWEPT}
SETTINGS: list[dict] = [
    {},
    {"onnx_threads": 2},
    {"ranker_instances": 1},
    {"ranker_instances": 1, "onnx_threads": 2},
    {"ranker_instances": 3},
    {"max_queue_delay_us": 200},
    {"max_queue_delay_us": 1000},
    {"precision": "fp32"},
    {"layout": "two"},
    {"layout": "two", "onnx_threads": 2},
    {"layout": "two", "encoder_instances": 2, "ranker_instances": 1},
    {"layout": "steps"},
]


@dataclass
class Row:
    options: dict
    c1_qps: float
    c1_p50_ms: float
    c8_qps: float
    c8_p99_ms: float
    peak_mib: float  # the server's resident memory, all its model processes, at peak


def measure(repository: Path, data: Path, seconds: float) -> tuple[float, ...]:
    with tempfile.TemporaryDirectory() as tmp, (Path(tmp) / "triton.log").open("w") as log, \
            TritonServer(repository, log=log, cache_mib=0) as server:
        memory = PeakMemory(server.process.pid)
        memory.start()
        one = perf_analyzer(server.grpc_url, data, 1, seconds, "c=1")
        eight = perf_analyzer(server.grpc_url, data, 8, seconds, "c=8")
        peak = memory.stop()
    return one.throughput_qps, one.p50_ms, eight.throughput_qps, eight.p99_ms, round(peak)


def markdown(report: dict) -> str:
    """The table, each row's changes from BASE in bold, and the row `fusionrank build` serves
    by default (ServingOptions now) marked."""
    defaults = ServingOptions()
    rows = []
    for row in report["rows"]:
        options = row["options"]
        cells = [f"**{options[k]}**" if options[k] != BASE[k] else str(options[k])
                 for k in SWEPT]
        if all(options[k] == getattr(defaults, k) for k in SWEPT):
            cells[0] = "(default) " + cells[0]
        rows.append([*cells, f"{row['c1_qps']:.1f}", f"{row['c1_p50_ms']:.1f}",
                     f"{row['c8_qps']:.1f}", f"{row['c8_p99_ms']:.1f}", f"{row['peak_mib']:.0f}"])
    header = [*SWEPT, "c=1 q/s", "c=1 p50 ms", "c=8 q/s", "c=8 p99 ms", "peak MiB"]
    return heading(
        "Serving options sweep of the fused search pipeline", report,
        f"Each row: a fresh `fusionrank build` of the trained run `{report['run']}` over the\n"
        f"  {report['products']} Home Depot products with the settings in bold changed from the "
        "first\n  row's, loaded by perf_analyzer over gRPC with "
        f"{report['queries']} distinct real queries,\n  K = 10, response cache off, "
        f"{report['seconds']} s windows. Rows ran one after the other on\n  the otherwise idle "
        "machine; repeated rows differ by up to ~10 %: smaller differences are\n  noise.") + f"""
{table(header, rows)}

The row marked (default) is what `fusionrank build` serves (`ServingOptions`).
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a trained run (needed unless --report-only)")
    parser.add_argument("--build", type=Path, default=Path("build/sweep"),
                        help="scratch build folder (rebuilt for every row)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rows", help="comma-separated row numbers to run (default: all)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite search_sweep.md from search_sweep.json (no measuring)")
    args = parser.parse_args()
    if args.report_only:
        report = json.loads((REPORTS / "search_sweep.json").read_text())
        (REPORTS / "search_sweep.md").write_text(markdown(report))
        return 0
    if args.run is None:
        parser.error("--run is required")

    catalogue, _ = homedepot_catalogue()
    queries = benchmark_queries(args.queries)
    wanted = [int(i) for i in args.rows.split(",")] if args.rows else range(len(SETTINGS))
    defaults = ServingOptions()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = perf_analyzer_input(queries, Path(tmp) / "queries.json")
        for i in wanted:
            options = replace(defaults, **(BASE | SETTINGS[i]))
            build_search_repository(catalogue, bundled_model_path(), args.build, options,
                                    run_dir=args.run)
            row = Row({k: getattr(options, k) for k in SWEPT},
                      *measure(args.build / "model_repository", data, args.seconds))
            print(row, file=sys.stderr)
            rows.append(asdict(row))
    report = {**stamp(), "run": str(args.run), "products": len(catalogue.ids),
              "queries": len(queries), "seconds": args.seconds, "rows": rows}
    save_report("search_sweep", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
