"""Soak: a real server under a steady mix of calls for a bounded time, one catalogue rollout in
the middle, its memory and Triton's metrics sampled every 10 s.

    .venv/bin/python -m benchmarks.soak                  # 10 minutes on build/model_repository
    .venv/bin/python -m benchmarks.soak --seconds 60     # the short form

Serves a copy of the repository (`--repository`, built by `fusionrank build` with all three
ensembles) on free loopback ports, with `fusionrank serve`'s response cache; 8 callers
(`--concurrency`) call search (70 %: distinct real Home Depot search terms), recommend (25 %:
real Online Retail customers' last purchases) and sentiment (5 %: real reviews) through the
SDK with no retries, so that every failure counts. Halfway, `fusionrank deploy` rolls out the
catalogue re-priced (`--source`: a build of your own instead). Writes
benchmarks/reports/soak.md and .json: failures (the target: none), the rollout's phases and
the calls during it, latency percentiles per minute, and memory growth after the warm-up.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    Call,
    ClosedLoop,
    benchmark_queries,
    heading,
    latency_percentiles,
    process_rss_mib,
    save_report,
    stamp,
    table,
)
from fusionrank.app.deploy import deploy, only_version
from fusionrank.app.serve import TritonServer
from fusionrank.client import FusionRankClient, RetryPolicy
from fusionrank.core import artefacts as names
from fusionrank.core.contract import RequestError
from fusionrank.core.datasets import is_product_stock_code, read_online_retail
from fusionrank.core.sentiment.contract import check_review
from fusionrank.model_repository.config import compile_shim, model_of_step

MIX = {"search": 0.70, "recommend": 0.25, "sentiment": 0.05}
K = 10
CACHE_MIB = 256  # `fusionrank serve`'s default
METRICS = ("nv_inference_request_success", "nv_inference_request_failure",
           "nv_inference_pending_request_count", "nv_cache_num_hits_per_model",
           "nv_cache_num_entries")


def histories(count: int) -> list[list[tuple[str, int]]]:
    """Real customers' last purchases (up to 20), with their times."""
    frame = read_online_retail()
    frame = frame[frame.CustomerID.notna() & frame.StockCode.map(is_product_stock_code)]
    frame = frame.sort_values("InvoiceDate")
    seconds = frame.InvoiceDate.to_numpy("datetime64[s]").astype(np.int64)
    out = []
    for _, index in list(frame.groupby("CustomerID").indices.items())[:count]:
        index = index[-20:]
        out.append(list(zip(frame.StockCode.to_numpy()[index].tolist(),
                            seconds[index].tolist(), strict=True)))
    return out


def reviews(count: int) -> list[str]:
    from fusionrank.training.sentiment.data import read_reviews_frame

    frame, _ = read_reviews_frame()
    texts = frame["Review Text"].dropna().astype(str).tolist()
    valid = []
    for text in texts:
        try:
            valid.append(check_review(text))
        except RequestError:
            continue
        if len(valid) == count:
            break
    return valid


def repriced(serving: Path, out: Path) -> Path:
    """The serving repository with the search catalogue's prices up 5 %: a daily price update."""
    shutil.copytree(serving, out, ignore=shutil.ignore_patterns("__pycache__", "rollouts.jsonl"))
    ranker = model_of_step(out, "search", "Rank")
    products = out / ranker / str(only_version(out / ranker)) / names.PRODUCTS
    rows = [json.loads(line) for line in products.read_text().splitlines() if line.strip()]
    for row in rows:
        if row.get("price") is not None:
            row["price"] = round(row["price"] * 1.05, 2)
    products.unlink()  # never write through a hard link into the build
    products.write_text("".join(json.dumps(row) + "\n" for row in rows))
    # The new file's digest, as a build writes it: the model checks its files at load.
    manifest = products.parent / names.SHA256_MANIFEST
    listed = json.loads(manifest.read_text())
    manifest.unlink()
    names.write_manifest(products.parent, listed)
    return out


def metric_totals(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    totals = dict.fromkeys(METRICS, 0.0)
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def percentiles(ms: list[float]) -> dict[str, float]:
    """The calls and their latency percentiles; empty where there were none."""
    return {"calls": len(ms), **latency_percentiles(ms)} if ms else {}


def soak(args: argparse.Namespace, serving: Path, source: Path, log: Path) -> dict:
    queries = benchmark_queries(20_000)
    customers, texts = histories(2_000), reviews(500)
    samples: list[dict] = []
    rollout: dict = {}
    stop = threading.Event()
    next_query = iter(range(10**9))
    seeds = iter(range(args.concurrency))  # one random stream a caller
    with log.open("w") as server_log, TritonServer(serving, cache_mib=CACHE_MIB,
                                                   log=server_log) as server:
        start = time.monotonic()
        metrics_url = f"http://127.0.0.1:{server.ports.metrics}/metrics"

        def caller(loop: ClosedLoop) -> None:
            rng = np.random.default_rng(next(seeds))
            kinds, weights = list(MIX), list(MIX.values())
            with FusionRankClient(server.grpc_url, retry=RetryPolicy(attempts=1)) as client:
                while loop.running:
                    kind = kinds[rng.choice(len(kinds), p=weights)]
                    with loop.call(kind):  # every failure is counted and reported
                        if kind == "search":
                            client.search(queries[next(next_query) % len(queries)], k=K)
                        elif kind == "recommend":
                            client.recommend(customers[rng.integers(len(customers))], k=K)
                        else:
                            client.sentiment([texts[rng.integers(len(texts))]])

        def sampler() -> None:
            while not stop.is_set():
                tritonserver, tree = process_rss_mib(server.process.pid)
                samples.append({"at_s": round(time.monotonic() - start, 1),
                                "tritonserver_rss_mib": round(tritonserver, 1),
                                "with_models_rss_mib": round(tree, 1),
                                **metric_totals(metrics_url)})
                stop.wait(args.sample_s)

        def roll_out() -> None:
            if not stop.wait(args.seconds / 2):
                began = time.monotonic() - start
                record = deploy(server.grpc_url, serving, source)
                rollout.update(vars(record) | {"began_at_s": round(began, 1),
                                               "ended_at_s": round(time.monotonic() - start, 1)})

        watchers = [threading.Thread(target=sampler), threading.Thread(target=roll_out)]
        with ClosedLoop(args.concurrency, caller) as loop:
            for thread in watchers:
                thread.start()
            stop.wait(args.seconds)
            stop.set()
        for thread in watchers:
            thread.join()
    return summarise(args, loop.calls, start, samples, rollout)


def summarise(args: argparse.Namespace, calls: list[Call], start: float, samples: list[dict],
              rollout: dict) -> dict:
    """`start`: the soak's start (time.monotonic()); the times in the report count from it."""
    def at_s(call: Call) -> float:  # when it ended
        return call.end - start

    failures = [c for c in calls if c.error]
    minutes = []
    for minute in range(int(np.ceil(args.seconds / 60))):
        window = [c for c in calls if minute * 60 <= at_s(c) < (minute + 1) * 60 and not c.error]
        minutes.append({"minute": minute + 1, **{kind: percentiles(
            [c.seconds * 1000 for c in window if c.kind == kind]) for kind in MIX}})
    warm = [s for s in samples if s["at_s"] >= args.warmup_s] or samples
    growth = {key: round(100 * (warm[-1][key] - warm[0][key]) / warm[0][key], 2)
              for key in ("tritonserver_rss_mib", "with_models_rss_mib")}
    during = [c for c in calls if rollout and rollout["began_at_s"] <= at_s(c)
              <= rollout["ended_at_s"]]
    return {**stamp(), "seconds": args.seconds, "concurrency": args.concurrency,
            "warmup_s": args.warmup_s,
            "calls": {kind: sum(c.kind == kind for c in calls) for kind in MIX},
            "calls_per_s": round(len(calls) / args.seconds, 1),
            "failures": len(failures), "failure_examples": [c.error for c in failures[:5]],
            "rollout": rollout, "calls_during_rollout": len(during),
            "failures_during_rollout": sum(bool(c.error) for c in during),
            "memory_growth_after_warmup_percent": growth, "per_minute": minutes,
            "samples": samples}


def markdown(report: dict, source: str) -> str:
    r = report["rollout"]
    phases = ", ".join(f"{k} {v:.2f} s" for k, v in r.get("seconds", {}).items())
    rows = table(["minute", *MIX], [
        [m["minute"], *(f"{m[kind].get('p50_ms', '–')} / {m[kind].get('p95_ms', '–')} / "
                        f"{m[kind].get('p99_ms', '–')} ({m[kind].get('calls', 0)})"
                        for kind in MIX)] for m in report["per_minute"]])
    first, last = report["samples"][0], report["samples"][-1]
    growth = report["memory_growth_after_warmup_percent"]
    memory_rows = table(
        ["", "first sample", "last sample", f"growth after the {report['warmup_s']:.0f} s warm-up"],
        [[f"{label}, MiB", first[key], last[key], f"{growth[key]} %"]
         for label, key in (("tritonserver RSS", "tritonserver_rss_mib"),
                            ("with its model processes", "with_models_rss_mib"))])
    return heading(
        f"Soak: search, recommend and sentiment for {report['seconds']} s, one rollout", report,
        f"{report['concurrency']} callers through the SDK with no retries (every failure "
        f"counts),\n  mix {', '.join(f'{k} {v:.0%}' for k, v in MIX.items())}; response cache "
        f"{CACHE_MIB} MiB.", f"Rollout source: {source}") + f"""
**Failed calls: {report['failures']}** of {sum(report['calls'].values())}
({report['calls_per_s']} calls/s; {report['calls']}).
{''.join(f'{chr(10)}- {e}' for e in report['failure_examples'])}

## The rollout, under load

Outcome **{r.get('outcome', 'not run')}** at {r.get('began_at_s', '–')} s, models
{', '.join(f'{m} {a} → {b}' for m, (a, b) in r.get('models', {}).items())}; phases: {phases}.
Calls while it ran: {report['calls_during_rollout']}, of which failed:
**{report['failures_during_rollout']}**. The switch itself is the `switch` phase.

## Memory (sampled every 10 s)

{memory_rows}

tritonserver's own memory holds the response cache, which fills as distinct queries come
(entries: {first['nv_cache_num_entries']:.0f} at the first sample,
{last['nv_cache_num_entries']:.0f} at the last; at most {CACHE_MIB} MiB).

## Latency per minute: p50 / p95 / p99 ms (calls)

{rows}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repository", type=Path, default=Path("build/model_repository"))
    parser.add_argument("--source", type=Path,
                        help="the repository to roll out halfway (default: the serving one, "
                             "its search catalogue re-priced)")
    parser.add_argument("--warmup-s", type=float,
                        help="memory growth is measured from this time on (default: 60 s, or "
                             "a quarter of a shorter soak)")
    parser.add_argument("--sample-s", type=float, default=10)
    parser.add_argument("--report", default="soak", help="report name under benchmarks/reports")
    args = parser.parse_args()
    if args.warmup_s is None:
        args.warmup_s = min(60.0, args.seconds / 4)
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        serving = Path(folder) / "serving"
        shutil.copytree(args.repository, serving, ignore=shutil.ignore_patterns(
            "__pycache__", "rollouts.jsonl"))
        for shim in serving.glob("*/[0-9]*/model.py"):  # (a build before shims were compiled)
            compile_shim(shim.parent)
        source = args.source or repriced(serving, Path(folder) / "repriced")
        described = (str(args.source) if args.source
                     else f"`{args.repository}` with the search catalogue's prices up 5 %")
        report = soak(args, serving, source, Path(folder) / "tritonserver.log")
    save_report(args.report, report, markdown(report, described))
    return 0 if report["failures"] == 0 and report["rollout"].get("outcome") == "switched" else 1


if __name__ == "__main__":
    sys.exit(main())
