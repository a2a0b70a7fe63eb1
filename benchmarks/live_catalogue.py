"""The live catalogue under measurement (issue 24): how soon a change set is searchable, what
searches get during a stream of change sets, what memory it takes, and that a kill -9 of
`fusionrank serve` loses no acknowledged change.

    fusionrank build --catalogue homedepot --run runs/relevance --live-catalogue \\
        --no-recommend --out $TMPDIR/live/build-hd
    python -m benchmarks.live_catalogue --build $TMPDIR/live/build-hd

The build's live folder is emptied first (every figure starts from the base). Searches are
distinct real Home Depot queries through the SDK in closed loops; the change sets change real
products of the catalogue (a word added to the title, a new price), each set also prices the
two products of a pair alike, which a search for the pair checks (a request that saw half a
set would show two prices).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from benchmarks import harness
from fusionrank.app.serve import Ports, TritonServer
from fusionrank.client import FusionRankClient
from fusionrank.core.live.segments import LIVE_FOLDER
from fusionrank.core.product_table import ProductTable
from fusionrank.model_repository.config import served_version

NAME = "live_catalogue"
SIZES = (1, 100, 1000, 10_000)
PAIR = ("PAIR-A", "PAIR-B")
PAIR_QUERY = "zorbex pair lamp"


class Changes:
    """Change sets over the real catalogue: each upsert a real product with one word more in
    its title and a price no set used before (so a search tells whether it sees the change)."""

    def __init__(self, table: ProductTable, seed: int = 0):
        self.table, self.rng, self.serial = table, random.Random(seed), 0
        self.words = ["deluxe", "compact", "heavy", "classic", "premium", "outdoor", "steel"]

    def upsert(self, row: int, title: bool = True) -> dict:
        """The product of `row` with a new price and (`title`) a word more in its title."""
        self.serial += 1
        record = self.table.record(row)
        return {"op": "upsert", "product": {
            "product_id": record["product_id"],
            "title": f"{record['title']} {self.rng.choice(self.words)}" if title
            else record["title"], "price": 10_000.0 + self.serial}}

    def set_of(self, size: int, titles: bool = True) -> list[dict]:
        rows = self.rng.sample(range(len(self.table)), size)
        return [self.upsert(row, titles) for row in rows]

    def pair(self, n: int) -> list[dict]:
        return [{"op": "upsert", "product": {"product_id": side, "title": f"Zorbex pair {side} "
                                             "lamp", "price": float(n)}} for side in PAIR]


def peak_memory(pid: int) -> harness.PeakMemoryShares:
    """The server tree's peak RSS and PSS from now, sampled every 0.1 s (an apply of a few
    changes lasts less than the harness's default half second); `peak_of` stops it."""
    memory = harness.PeakMemoryShares(pid, every_s=0.1)
    memory.start()
    return memory


def peak_of(memory: harness.PeakMemoryShares, before: dict[str, float]) -> dict[str, float]:
    """The peak, the sample taken `before` the sampler started counting as its first."""
    memory.stop()
    return {k: max(before[k], memory.peak[k]) for k in before}


def visible(client: FusionRankClient, change: dict, deadline_s: float = 120.0) -> tuple[float,
                                                                                          int]:
    """Seconds until a search for the upsert's title returns it with its new price, and the
    searches it took."""
    product = change["product"]
    start, searches = time.perf_counter(), 0
    while time.perf_counter() - start < deadline_s:
        searches += 1
        for hit in client.search(product["title"], k=10, products=True):
            if hit.product_id == product["product_id"] and hit.product.price == product["price"]:
                return time.perf_counter() - start, searches
    raise RuntimeError(f"{product['product_id']} not searchable after {deadline_s} s")


def apply_to_searchable(client: FusionRankClient, changes: Changes, pid: int,
                        sizes: tuple[int, ...] = SIZES) -> list[dict]:
    """Per change set: the acknowledgement, the server's own times, and when a search first
    returns its last upsert with the new price; the server's peak memory meanwhile."""
    rows = []
    for size in sizes:
        for _ in range(3 if size <= 1000 else 1):
            change_set = changes.set_of(size)
            before = harness.process_memory_mib(pid)
            memory = peak_memory(pid)
            start = time.perf_counter()
            answer = client.apply_changes(change_set)
            acknowledged = time.perf_counter() - start
            after, searches = visible(client, change_set[-1])
            peak = peak_of(memory, before)
            rows.append({"changes": size, "acknowledged_s": round(acknowledged, 3),
                         "server_s": answer.applied.seconds,
                         "embed_s": answer.applied.embed_seconds,
                         "searchable_s": round(acknowledged + after, 3),
                         "searches_until_found": searches,
                         "before_rss_mib": round(before["rss"], 1),
                         "before_pss_mib": round(before["pss"], 1),
                         "peak_rss_mib": round(peak["rss"], 1),
                         "peak_pss_mib": round(peak["pss"], 1)})
            print(rows[-1], file=sys.stderr)
    return rows


def searches(url: str, queries: list[str], callers: int, seconds: float,
             stream: Changes | None = None, rate: float = 10.0, set_size: int = 10,
             titles: bool = True) -> dict:
    """Closed-loop searches for `seconds`, one caller of which checks the pair (and, with
    `stream`, change sets at `rate` a second meanwhile); q/s, latency, failures."""
    position = iter(range(10**9))
    mixed, pairs_seen, applied, apply_failures = [], [], [], []

    def caller(loop: harness.ClosedLoop) -> None:
        with FusionRankClient(url, timeout_s=60) as client:
            while loop.running:
                query = queries[next(position) % len(queries)]
                with loop.call("search"):
                    client.search(query, k=10)

    def pair_checker(loop: harness.ClosedLoop) -> None:
        with FusionRankClient(url, timeout_s=60) as client:
            while loop.running:
                hits = []
                with loop.call("pair"):
                    hits = client.search(PAIR_QUERY, k=5, products=True)
                prices = {h.product_id: h.product.price for h in hits if h.product_id in PAIR}
                if len(prices) == 2:
                    pairs_seen.append(prices[PAIR[0]])
                    if len(set(prices.values())) != 1:
                        mixed.append(prices)

    def streamer(done: threading.Event) -> None:
        with FusionRankClient(url, timeout_s=60) as client:
            start, n = time.perf_counter(), 0
            while not done.is_set():
                n += 1
                try:
                    answer = client.apply_changes(stream.set_of(set_size, titles)
                                                  + stream.pair(n))
                    applied.append(answer.applied.seconds)
                except Exception as error:  # counted, and the stream goes on
                    apply_failures.append(repr(error))
                time.sleep(max(0.0, start + n / rate - time.perf_counter()))

    done = threading.Event()
    extra = [threading.Thread(target=streamer, args=(done,))] if stream else []
    for thread in extra:
        thread.start()
    start = time.perf_counter()
    loop = harness.ClosedLoop(callers, caller)
    loop.threads[0] = threading.Thread(target=pair_checker, args=(loop,))
    with loop:
        time.sleep(seconds)
    elapsed = time.perf_counter() - start
    done.set()
    for thread in extra:
        thread.join()
    ok = [c.seconds * 1000 for c in loop.calls if c.error is None]
    result = {"callers": callers, "seconds": round(elapsed, 1),
              "searches": len(ok), "qps": round(len(ok) / elapsed, 1),
              **harness.latency_percentiles(ok),
              "failed": sum(c.error is not None for c in loop.calls)}
    if stream:
        result |= {"sets_applied": len(applied), "sets_per_s": round(len(applied) / elapsed, 1),
                   "set_server_p50_s": round(float(np.median(applied)), 3) if applied else None,
                   "set_failures": len(apply_failures), "pair_checks": len(pairs_seen),
                   "pair_states_seen": len(set(pairs_seen)), "mixed_answers": len(mixed)}
    return result


def serve(repository: Path, ports: Ports, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fusionrank.app.cli", "serve", "--repository", str(repository),
         "--grpc-port", str(ports.grpc), "--http-port", str(ports.http),
         "--metrics-port", str(ports.metrics), "--no-web", "--cache-mib", "0"],
        stdout=log, stderr=subprocess.STDOUT)


def kill_serve(repository: Path, table: ProductTable, log_path: Path,
               acknowledged_at: int = 20) -> dict:
    """Change sets (an upsert of one product, a delete of another; no product twice) streamed
    to `fusionrank serve`, which gets SIGKILL after `acknowledged_at` acknowledgements; then
    serve again: every acknowledged upsert must be found with its price, every acknowledged
    delete gone."""
    changes = Changes(table, seed=7)
    rows = changes.rng.sample(range(len(table)), 2 * (acknowledged_at + 50))
    acked: list[tuple[dict, int]] = []  # (the upsert's product, the deleted row)
    ports = Ports.free()
    url = f"127.0.0.1:{ports.grpc}"
    with log_path.open("w") as log:
        process = serve(repository, ports, log)
        with FusionRankClient(url, timeout_s=10) as client:
            client.wait_ready("catalogue", timeout_s=300)
            children = psutil.Process(process.pid).children(recursive=True)
            for n in range(acknowledged_at + 50):  # bounded; the kill ends it
                upsert, deleted = changes.upsert(rows[2 * n]), rows[2 * n + 1]
                if n == acknowledged_at:
                    os.kill(process.pid, signal.SIGKILL)
                try:
                    client.apply_changes([upsert, {"op": "delete", "product_id": table.record(
                        deleted)["product_id"]}], timeout_s=30)
                except Exception:  # the kill: this set was not acknowledged
                    break
                acked.append((upsert["product"], deleted))
        process.wait(timeout=60)
        killed_at = time.perf_counter()
        # Its tritonserver ends itself when serve dies (a parent-death signal), not at once:
        # a supervisor would wait for it to let go of the ports, and so does this.
        psutil.wait_procs(children, timeout=120)
        restarted = serve(repository, ports, log)
        try:
            with FusionRankClient(url, timeout_s=30) as client:
                client.wait_ready("search", timeout_s=300)
                ready_s = time.perf_counter() - killed_at
                found = sum(any(h.product_id == p["product_id"] and h.product.price == p["price"]
                                for h in client.search(p["title"], k=10, products=True))
                            for p, _ in acked)
                served_deleted = sum(
                    table.record(row)["product_id"] in
                    {h.product_id for h in client.search(table.record(row)["title"], k=10)}
                    for _, row in acked)
                status = client.catalogue_status()
        finally:
            restarted.send_signal(signal.SIGINT)
            restarted.wait(timeout=120)
    return {"acknowledged_sets": len(acked), "acknowledged_upserts_found": found,
            "acknowledged_upserts_lost": len(acked) - found,
            "acknowledged_deletes_still_served": served_deleted,
            "pending_after_restart": status.pending, "ready_after_kill_s": round(ready_s, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, required=True,
                        help="a `fusionrank build --live-catalogue` output folder")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--rate", type=float, default=10.0, help="change sets a second")
    parser.add_argument("--set-size", type=int, default=10, help="products a streamed set changes")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="change set sizes timed from apply to searchable")
    parser.add_argument("--out", type=Path, default=harness.REPORTS)
    args = parser.parse_args(argv)
    repository = args.build / "model_repository"
    manifest = json.loads((repository / "fusionrank.json").read_text())
    if not manifest["serving"].get("live_catalogue"):
        parser.error(f"{args.build} was not built with --live-catalogue")
    shutil.rmtree(args.build / LIVE_FOLDER, ignore_errors=True)  # from the base
    table = ProductTable.open(served_version(repository, "catalogue") / "products.jsonl")
    changes = Changes(table)
    queries = harness.benchmark_queries(2000)
    logs = args.build / "benchmark-logs"
    logs.mkdir(exist_ok=True)
    report = {**harness.stamp(), "products": len(table), "callers": args.callers,
              "embed_threads": os.cpu_count()}
    with (logs / "triton.log").open("w") as log, \
            TritonServer(repository, log=log, cache_mib=0) as server:
        pid = server.process.pid
        with FusionRankClient(server.grpc_url, timeout_s=60) as client:
            client.apply_changes(changes.pair(0))
            for query in queries[:200]:  # warm: every model process has answered
                client.search(query, k=10)
            report["steady_memory_mib"] = harness.process_memory_mib(pid)
        # Searches first on (nearly) the base, as a catalogue compacted now and then serves...
        report["at_rest"] = searches(server.grpc_url, queries, args.callers, args.seconds)
        print(report["at_rest"], file=sys.stderr)
        for kind, titles in (("during_stream", True), ("during_price_stream", False)):
            before = harness.process_memory_mib(pid)
            memory = peak_memory(pid)
            report[kind] = searches(server.grpc_url, queries, args.callers, args.seconds,
                                    changes, args.rate, args.set_size, titles)
            report[kind]["peak_memory_mib"] = peak_of(memory, before)
            print(report[kind], file=sys.stderr)
        with FusionRankClient(server.grpc_url, timeout_s=60) as client:
            report["apply"] = apply_to_searchable(
                client, changes, pid, tuple(int(n) for n in args.sizes.split(",")))
        # ...and again once every change above waits for a compaction that does not exist yet.
        report["at_rest_after"] = searches(server.grpc_url, queries, args.callers, args.seconds)
        with FusionRankClient(server.grpc_url, timeout_s=60) as client:
            status = client.catalogue_status()
        report["at_rest_after"]["changed_rows"] = status.rows - report["products"]
        print(report["at_rest_after"], file=sys.stderr)
    report["kill_serve"] = kill_serve(repository, table, logs / "serve.log")
    print(report["kill_serve"], file=sys.stderr)
    harness.save_report(NAME, report, render(report), args.out)
    return 0


def targets(report: dict) -> str:
    """Issue 24's targets against this run's figures."""
    thousand = [r for r in report["apply"] if r["changes"] == 1000]
    streams = [report["during_stream"], report["during_price_stream"]]
    rest = report["at_rest"]["qps"]
    ratio = max(r["peak_rss_mib"] / r["before_rss_mib"] for r in report["apply"])
    kill = report["kill_serve"]
    rows = [
        ("apply → searchable, 1,000 upserts", "≤ 5 s",
         ", ".join(f"{r['searchable_s']:.2f} s" for r in thousand),
         all(r["searchable_s"] <= 5 for r in thousand)),
        ("failed requests, mixed answers (apply and streams)", "0, 0",
         f"{sum(r['failed'] for r in streams)}, {sum(r['mixed_answers'] for r in streams)}",
         not any(r["failed"] or r["mixed_answers"] for r in streams)),
        ("search throughput during a stream", "≥ 0.8× at rest",
         ", ".join(f"{r['qps'] / rest:.2f}×" for r in streams),
         all(r["qps"] / rest >= 0.8 for r in streams)),
        ("peak memory during an apply", "≤ 1.2× before it", f"{ratio:.2f}× at most",
         ratio <= 1.2),
        ("acknowledged changes lost across kill -9 of serve", "0",
         f"{kill['acknowledged_upserts_lost'] + kill['acknowledged_deletes_still_served']} of "
         f"{kill['acknowledged_sets']} sets", not (kill["acknowledged_upserts_lost"]
                                                 or kill["acknowledged_deletes_still_served"])),
    ]
    return "\n## Targets\n\n" + harness.table(
        ("target", "aimed at", "measured", "met"),
        [(what, aim, got, "yes" if met else "no") for what, aim, got, met in rows]) + "\n"


def render(report: dict) -> str:
    rest, stream = report["at_rest"], report["during_stream"]
    prices = report["during_price_stream"]
    steady = report["steady_memory_mib"]
    text = harness.heading(
        "Live catalogue: change sets applied while serving", report,
        f"Catalogue: every Home Depot product ({report['products']:,}), a trained run, layout "
        "one (2 copies of search_steps), the catalogue model embedding on "
        f"{report['embed_threads']} threads; searches: distinct real queries through the SDK, "
        "closed loops; no compaction (not built yet): each figure pays for every row changed "
        "before it")
    text += "\n" + targets(report)
    text += "\n## From apply to searchable\n\n" + harness.table(
        ("changes", "acknowledged, s", "server, s", "embedding, s", "searchable, s",
         "RSS before → peak, MiB", "peak / before"),
        [(r["changes"], r["acknowledged_s"], r["server_s"], r["embed_s"], r["searchable_s"],
          f"{r['before_rss_mib']:,.0f} → {r['peak_rss_mib']:,.0f}",
          f"{r['peak_rss_mib'] / r['before_rss_mib']:.2f}×") for r in report["apply"]])
    text += (f"\n\nSteady state after warm-up: RSS {steady['rss']:,.0f} MiB, PSS "
             f"{steady['pss']:,.0f} MiB (the server and its model processes).\n")
    after = report["at_rest_after"]
    text += "\n## Searches at rest and during a stream of change sets\n\n" + harness.table(
        ("", "q/s", "p50, ms", "p99, ms", "failed"),
        [("at rest", rest["qps"], rest.get("p50_ms"), rest.get("p99_ms"), rest["failed"]),
         (f"at rest, {after['changed_rows']:,} rows changed since the base", after["qps"],
          after.get("p50_ms"), after.get("p99_ms"), after["failed"]),
         *((f"{run['sets_per_s']} sets/s, {what}", run["qps"], run.get("p50_ms"),
            run.get("p99_ms"), run["failed"])
           for what, run in (("titles changed", stream), ("prices only", prices)))])
    for what, run in (("titles changed", stream), ("prices only", prices)):
        text += (f"\n\n{what}: throughput {run['qps'] / rest['qps']:.2f}× at rest; "
                 f"{run['sets_applied']} sets applied ({run['set_failures']} failed, server "
                 f"p50 {run['set_server_p50_s']} s a set), {run['pair_checks']} pair checks "
                 f"over {run['pair_states_seen']} states, {run['mixed_answers']} mixed "
                 f"answers; peak memory RSS {run['peak_memory_mib']['rss']:,.0f} MiB, PSS "
                 f"{run['peak_memory_mib']['pss']:,.0f} MiB.")
    text += "\n"
    kill = report["kill_serve"]
    text += ("\n## kill -9 of `fusionrank serve` during a stream\n\n"
             f"{kill['acknowledged_sets']} sets acknowledged before the kill; after the "
             f"restart (ready in {kill['ready_after_kill_s']} s): "
             f"{kill['acknowledged_upserts_found']} of their upserts found with their price, "
             f"{kill['acknowledged_upserts_lost']} lost, "
             f"{kill['acknowledged_deletes_still_served']} deleted products still served, "
             f"{kill['pending_after_restart']} sets pending.\n")
    return text


if __name__ == "__main__":
    sys.exit(main())
