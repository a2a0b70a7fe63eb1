"""Overload: what the search server does when more callers come than it can serve, with a
bounded queue (each model holds at most `--max-queue-size` waiting requests and refuses more
at once: `fusionrank build --max-queue-size`) and without one (the default).

    .venv/bin/python -m benchmarks.search_overload --build build/homedepot_fused --seconds 10

`--build`: a `fusionrank build` output of a trained run over the Home Depot catalogue (its
`artefacts/` are served again, under each policy). Two kinds of load, through the SDK with
retries off (each call sees the server's own answer), cache off, distinct real queries:
closed loops of callers (each waits for its answer before the next call), and an open stream
at `--rate` requests a second whatever the server does (shoppers do not wait for each other),
where a queue with no bound grows for as long as the stream lasts.
Writes benchmarks/reports/search_overload.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from benchmarks.harness import (
    benchmark_queries,
    closed_loops_async,
    heading,
    latency_percentiles,
    save_report,
    stamp,
    table,
)
from fusionrank.app.serve import TritonServer
from fusionrank.client import (
    AsyncFusionRankClient,
    RequestTimeoutError,
    RetryPolicy,
    ServerOverloadedError,
)
from fusionrank.model_repository.search.ensemble import (
    SearchArtefacts,
    ServingOptions,
    search_ensemble,
)

K = 10
REFUSED_PAUSE_S = 0.1  # how long a refused caller waits before its next call


@dataclass
class Outcomes:
    """Every call's outcome and latency (s): served, refused (overloaded), timed out, other."""

    served: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    timed_out: int = 0
    other: list[str] = field(default_factory=list)

    async def call(self, client: AsyncFusionRankClient, query: str) -> bool:
        """One search; False if the server refused it."""
        tick = time.perf_counter()
        try:
            await client.search(query, k=K)
            self.served.append(time.perf_counter() - tick)
        except ServerOverloadedError:
            self.refused.append(time.perf_counter() - tick)
            return False
        except RequestTimeoutError:
            self.timed_out += 1
        except Exception as error:  # any other failure: counted and reported
            self.other.append(repr(error)[:200])
        return True

    def summary(self, elapsed: float) -> dict:
        calls = len(self.served) + len(self.refused) + self.timed_out + len(self.other)
        served = latency_percentiles([s * 1e3 for s in self.served], (50, 99), digits=1)
        refused = latency_percentiles([s * 1e3 for s in self.refused], (99,), digits=1)
        return {"served_qps": round(len(self.served) / elapsed, 1),
                "refused_share": round(len(self.refused) / max(calls, 1), 4),
                "timed_out_share": round(self.timed_out / max(calls, 1), 4),
                "served_p50_ms": served.get("p50_ms"), "served_p99_ms": served.get("p99_ms"),
                "refused_p99_ms": refused.get("p99_ms"), "other_errors": len(self.other),
                "other_examples": self.other[:3]}


async def load(url: str, queries: list[str], concurrency: int, seconds: float) -> dict:
    """`concurrency` callers in closed loops for `seconds` (after a second's warm-up)."""
    warm_up, outcomes = Outcomes(), Outcomes()
    async with AsyncFusionRankClient(url, timeout_s=60, retry=RetryPolicy(attempts=1)) as client:
        async def send(query: str, measured: bool) -> None:
            if not await (outcomes if measured else warm_up).call(client, query):
                await asyncio.sleep(REFUSED_PAUSE_S)  # a refused caller comes back later

        elapsed = await closed_loops_async(send, queries, concurrency, seconds)
        return {"concurrency": concurrency, **outcomes.summary(elapsed)}


async def stream(url: str, queries: list[str], rate: float, seconds: float,
                 timeout_s: float) -> dict:
    """Requests arriving at `rate` a second for `seconds`, each with a `timeout_s` deadline."""
    async with AsyncFusionRankClient(url, timeout_s=timeout_s,
                                     retry=RetryPolicy(attempts=1)) as client:
        for query in queries[:8]:  # warm up
            await client.search(query, k=K)
        outcomes, calls = Outcomes(), []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            calls.append(asyncio.create_task(outcomes.call(client, queries[i % len(queries)])))
        await asyncio.gather(*calls)
        return {"rate": rate, **outcomes.summary(time.perf_counter() - start)}


def markdown(report: dict) -> str:
    rows = table(["policy", "callers", "served q/s", "served p50 ms", "served p99 ms", "refused",
                  "refused p99 ms", "other errors"],
                 [[policy, r["concurrency"], r["served_qps"], r["served_p50_ms"],
                   r["served_p99_ms"], f"{r['refused_share']:.1%}", r["refused_p99_ms"],
                   r["other_errors"]]
                  for policy, results in report["policies"].items() for r in results])
    streams = table(["policy", "offered q/s", "served q/s", "served p50 ms", "served p99 ms",
                     "refused", "refused p99 ms", "timed out", "other errors"],
                    [[policy, f"{r['rate']:g}", r["served_qps"], r["served_p50_ms"],
                      r["served_p99_ms"], f"{r['refused_share']:.1%}", r["refused_p99_ms"],
                      f"{r['timed_out_share']:.1%}", r["other_errors"]]
                     for policy, r in report.get("streams", {}).items()])
    return heading(
        "Search under overload: bounded queues against unbounded ones", report,
        f"The build `{report['build']}` served again under each policy; {report['queries']} "
        f"distinct real\n  Home Depot search terms, K = {K}; closed loops of callers through "
        f"the SDK with retries off,\n  response cache off, {report['seconds']} s per row.",
        f"bounded: `{json.dumps(report['bounded'])}` (per model, `fusionrank build "
        "--max-queue-size`);\n  unbounded: no queue limit, no timeout (the default).") + f"""
{rows}

A refused call is answered at once with UNAVAILABLE "Exceeds maximum queue size" (the SDK's
`ServerOverloadedError`, which it retries with back-off by default); its caller waits
{int(REFUSED_PAUSE_S * 1000)} ms before the next call.

## An open stream above capacity

{report.get('stream_seconds')} s of requests arriving at a fixed rate whatever the server does, each
with a {report.get('stream_timeout_s')} s deadline (a call past it counts as timed out).

{streams}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=Path("build/homedepot_fused"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", default="8,64")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--max-queue-size", type=int, default=16,
                        help="the bounded policy's queue, per model")
    parser.add_argument("--rate", type=float, default=400.0,
                        help="the open stream's requests a second (0: no stream)")
    parser.add_argument("--stream-seconds", type=float, default=10.0)
    parser.add_argument("--stream-timeout-s", type=float, default=5.0)
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
    streams: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in policies.items():
            repository = Path(tmp) / name / "model_repository"
            search_ensemble(files, options).export(repository)
            with (Path(tmp) / f"{name}.log").open("w") as log, \
                    TritonServer(repository, log=log, cache_mib=0) as server:
                results[name] = [asyncio.run(load(server.grpc_url, queries, c, args.seconds))
                                 for c in levels]
                print(name, results[name], file=sys.stderr)
                if args.rate > 0:
                    streams[name] = asyncio.run(stream(server.grpc_url, queries, args.rate,
                                                       args.stream_seconds,
                                                       args.stream_timeout_s))
                    print(name, streams[name], file=sys.stderr)
    report = {**stamp(), "build": str(args.build), "queries": len(queries), "seconds": args.seconds,
              "bounded": {k: v for k, v in asdict(bounded).items()
                          if k in ("max_queue_size", "queue_timeout_ms")},
              "policies": results, "streams": streams, "stream_seconds": args.stream_seconds,
              "stream_timeout_s": args.stream_timeout_s}
    save_report("search_overload", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
