"""Overload: what the search server does when more callers come than it can serve, with a
bounded queue (each model holds at most `--max-queue-size` waiting requests and refuses more
at once: `fusionrank build --max-queue-size`) and without one (the default).

    .venv/bin/python benchmarks/search_overload.py --build build/homedepot_fused --seconds 10

`--build`: a `fusionrank build` output of a trained run over the Home Depot catalogue (its
`artefacts/` are served again, under each policy). Closed loops of callers through the SDK,
retries off (each caller sees the server's own answer), cache off, distinct real queries.
Writes benchmarks/reports/search_overload.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from search_benchmark import benchmark_queries, machine, save_report

from fusionrank.app.serve import TritonServer
from fusionrank.client import AsyncFusionRankClient, RetryPolicy, ServerOverloadedError
from fusionrank.model_repository.search.ensemble import (
    SearchArtefacts,
    ServingOptions,
    search_ensemble,
)

K = 10
REFUSED_PAUSE_S = 0.1  # how long a refused caller waits before its next call


async def load(url: str, queries: list[str], concurrency: int, seconds: float) -> dict:
    """`concurrency` callers in closed loops for `seconds`: served and refused calls, and the
    latency of each kind."""
    served: list[float] = []
    refused: list[float] = []
    other: list[str] = []
    position = 0
    async with AsyncFusionRankClient(url, timeout_s=60, retry=RetryPolicy(attempts=1)) as client:
        async def caller(deadline: float) -> None:
            nonlocal position
            while time.perf_counter() < deadline:
                query = queries[position % len(queries)]
                position += 1
                tick = time.perf_counter()
                try:
                    await client.search(query, k=K)
                    served.append(time.perf_counter() - tick)
                except ServerOverloadedError:
                    refused.append(time.perf_counter() - tick)
                    await asyncio.sleep(REFUSED_PAUSE_S)  # a refused caller comes back later
                except Exception as error:  # any other failure: counted and reported
                    other.append(repr(error)[:200])

        await asyncio.gather(*(caller(time.perf_counter() + 1.0) for _ in range(concurrency)))
        served.clear(), refused.clear(), other.clear()  # the first second warms up
        start = time.perf_counter()
        await asyncio.gather(*(caller(start + seconds) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start

    def ms(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(np.array(values) * 1e3, q)), 1) if values else None

    calls = len(served) + len(refused) + len(other)
    return {"concurrency": concurrency, "served_qps": round(len(served) / elapsed, 1),
            "refused_share": round(len(refused) / max(calls, 1), 4),
            "served_p50_ms": ms(served, 50), "served_p99_ms": ms(served, 99),
            "refused_p99_ms": ms(refused, 99), "other_errors": len(other),
            "other_examples": other[:3]}


def markdown(report: dict) -> str:
    rows = "\n".join(
        f"| {policy} | {r['concurrency']} | {r['served_qps']} | {r['served_p50_ms']} | "
        f"{r['served_p99_ms']} | {r['refused_share']:.1%} | {r['refused_p99_ms']} | "
        f"{r['other_errors']} |"
        for policy, results in report["policies"].items() for r in results)
    return f"""# Search under overload: bounded queues against unbounded ones

- Command: `{report['command']}`
- Machine: {report['machine']}
- Date: {report['date']}
- The build `{report['build']}` served again under each policy; {report['queries']} distinct real
  Home Depot search terms, K = {K}; closed loops of callers through the SDK with retries off,
  response cache off, {report['seconds']} s per row.
- bounded: `{json.dumps(report['bounded'])}` (per model, `fusionrank build --max-queue-size`);
  unbounded: no queue limit, no timeout (the default).

| policy | callers | served q/s | served p50 ms | served p99 ms | refused | refused p99 ms | \
other errors |
| --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

A refused call is answered at once with UNAVAILABLE "Exceeds maximum queue size" (the SDK's
`ServerOverloadedError`, which it retries with back-off by default); its caller waits
{int(REFUSED_PAUSE_S * 1000)} ms before the next call.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=Path("build/homedepot_fused"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", default="8,64")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--max-queue-size", type=int, default=16,
                        help="the bounded policy's queue, per model")
    args = parser.parse_args()

    artefacts = args.build / "artefacts"
    files = SearchArtefacts(artefacts / "encoder", artefacts / "index",
                            artefacts / "ranking" if (artefacts / "ranking").is_dir() else None)
    unbounded = ServingOptions(response_cache=False)  # the defaults: no queue bound
    bounded = replace(unbounded, max_queue_size=args.max_queue_size)
    policies = {"bounded": bounded, "unbounded": unbounded}
    queries = benchmark_queries(args.queries)
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in policies.items():
            repository = Path(tmp) / name / "model_repository"
            search_ensemble(files, options).export(repository)
            with (Path(tmp) / f"{name}.log").open("w") as log, \
                    TritonServer(repository, log=log, cache_mib=0) as server:
                results[name] = [asyncio.run(load(server.grpc_url, queries, c, args.seconds))
                                 for c in levels]
                print(name, results[name], file=sys.stderr)
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": "python " + " ".join(sys.argv), "machine": machine(),
              "build": str(args.build), "queries": len(queries), "seconds": args.seconds,
              "bounded": {k: v for k, v in asdict(bounded).items()
                          if k in ("max_queue_size", "queue_timeout_ms")},
              "policies": results}
    save_report("search_overload", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
