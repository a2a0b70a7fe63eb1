"""The live catalogue under measurement (issue 24): how soon a change set is searchable, what
searches get during a stream of change sets, what memory it takes, and that a kill -9 of
`fusionrank serve` loses no acknowledged change.

    fusionrank build --catalogue homedepot --run runs/relevance --live-catalogue \\
        --no-recommend --out $TMPDIR/live/build-hd
    python -m benchmarks.live_catalogue --build $TMPDIR/live/build-hd

The build's live folder is emptied first (every figure starts from the base). Searches are
distinct real Home Depot queries through the SDK in closed loops; the change sets change real
products of the catalogue (a new price, and for a share of them a word added to the title:
`STREAMS`), each set also prices the two products of a pair alike, which a search for the pair
checks (a request that saw half a set would show two prices). Each stream runs between two
shorter runs at rest (a third of its length): its throughput is compared with theirs, measured
minutes apart, not only with the run at rest at the start. The report holds one section a
catalogue (`--build` a 1M-product build with --live-catalogue for the other).
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
# The streams of change sets: report key → the share of each set's products retitled (the
# rest get a new price alone).
STREAMS = {"during_price_stream": 0.0, "during_mixed_stream": 0.1, "during_title_stream": 1.0}


class Changes:
    """Change sets over the real catalogue: each upsert a real product with a price no set used
    before (so a search tells whether it sees the change), retitled (a word added to its base
    title, other than the one it has now) or with the title it has."""

    def __init__(self, table: ProductTable, seed: int = 0):
        self.table, self.rng, self.serial = table, random.Random(seed), 0
        self.words = ["deluxe", "compact", "heavy", "classic", "premium", "outdoor", "steel"]
        self.titles: dict[str, str] = {}  # id → the title a set gave it

    def upsert(self, row: int, retitle: bool = True) -> dict:
        """The product of `row` with a new price and (`retitle`) a new title."""
        self.serial += 1
        record = self.table.record(row)
        product_id = record["product_id"]
        title = now = self.titles.get(product_id, record["title"])
        while retitle and title == now:
            title = f"{record['title']} {self.rng.choice(self.words)}"
        self.titles[product_id] = title
        return {"op": "upsert", "product": {"product_id": product_id, "title": title,
                                            "price": 10_000.0 + self.serial}}

    def set_of(self, size: int, retitled: float = 1.0) -> list[dict]:
        """`size` products, the first `retitled` share of them retitled, the rest repriced."""
        rows = self.rng.sample(range(len(self.table)), size)
        titles = round(size * retitled)
        return [self.upsert(row, i < titles) for i, row in enumerate(rows)]

    def pair(self, n: int) -> list[dict]:
        return [{"op": "upsert", "product": {"product_id": side, "title": f"Zorbex pair {side} "
                                             "lamp", "price": float(n)}} for side in PAIR]


def peak_memory(pid: int) -> harness.PeakMemoryShares:
    """The server tree's peak RSS and PSS from now: RSS sampled every 0.1 s (an apply of a few
    changes lasts less than the harness's default half second), PSS every second (a PSS sample
    at 0.1 s took a tenth of the searches' throughput, and only while this sampled: the
    streams'); `peak_of` stops it."""
    memory = harness.PeakMemoryShares(pid, every_s=0.1, pss_every_s=1.0)
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
             retitled: float = 1.0, until: threading.Event | None = None,
             answered_at: list[float] | None = None) -> dict:
    """Closed-loop searches for `seconds` (or, with `until`, until it is set, `seconds` at
    most), one caller of which checks the pair (and, with `stream`, change sets at `rate` a
    second meanwhile); q/s, latency, failures."""
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
                    answer = client.apply_changes(stream.set_of(set_size, retitled)
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
        if until is None:
            time.sleep(seconds)
        else:
            until.wait(seconds)
    elapsed = time.perf_counter() - start
    done.set()
    for thread in extra:
        thread.join()
    ok = [c.seconds * 1000 for c in loop.calls if c.error is None]
    if answered_at is not None:  # (the caller splits them by the phases it waited through)
        answered_at.extend(c.end for c in loop.calls if c.error is None)
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


def fresh_copy(build: Path, suffix: str) -> Path:
    """A copy of the build beside it (hard links) with no live folder: every figure starts from
    the base, and what a benchmark changes (a compaction's rollout) changes the copy."""
    work = build.with_name(build.name + suffix)
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(build, work, copy_function=link_large,
                    ignore=shutil.ignore_patterns(LIVE_FOLDER, "benchmark-logs", "*.lock"))
    return work


def link_large(source: str, target: str) -> None:
    """Artefacts hard-linked (never written in place), the small files a rollout rewrites in
    place (configs, fusionrank.json, rollouts.jsonl) copied."""
    if os.path.getsize(source) > 1 << 20:
        os.link(source, target)
    else:
        shutil.copy2(source, target)


def compaction(url: str, repository: Path, work: Path, queries: list[str], changes: Changes,
               args: argparse.Namespace, pid: int) -> dict:
    """`fusionrank catalogue compact` (its own process) while the callers search and a stream
    of price changes goes on (the pair checked): its phases, the searches' failures and mixed
    answers, the server's peak memory and the compaction process's."""
    before = harness.process_memory_mib(pid)
    memory = peak_memory(pid)
    finished, outcome = threading.Event(), {}

    def run() -> None:
        out = work.with_name(work.name + "-compacted")
        command = [sys.executable, "-m", "fusionrank.app.cli", "catalogue", "compact",
                   "--url", url, "--repository", str(repository), "--out", str(out), "--json"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
            outcome["report"] = json.loads(done.stdout) if done.returncode in (0, 1) else None
            outcome["error"] = done.stderr[-2000:] if done.returncode else ""
        finally:
            outcome["ended"] = time.monotonic()
            finished.set()

    thread = threading.Thread(target=run)
    started, answered_at = time.monotonic(), []
    thread.start()
    during = searches(url, queries, args.callers, 3600, changes, rate=2.0,
                      set_size=args.set_size, retitled=0.0, until=finished,
                      answered_at=answered_at)
    thread.join()
    if outcome.get("report") is None:
        raise RuntimeError(f"compaction failed: {outcome.get('error')}")
    # Searches a second in each phase of the compaction, the phases laid back from its end
    # by its own record of their seconds ("start": the process's start-up before them).
    ended, times = outcome["ended"], np.asarray(answered_at)
    spans = [(k, v) for k, v in outcome["report"]["seconds"].items() if k != "total"]
    bounds = ended - np.cumsum([0.0, *(v for _, v in reversed(spans))])[::-1]
    windows = [("start", started, bounds[0]),
               *((name, bounds[i], bounds[i + 1]) for i, (name, _) in enumerate(spans))]
    phases = {name: {"seconds": round(end - begin, 1),
                     "qps": round(float(((times >= begin) & (times < end)).sum())
                                  / max(end - begin, 1e-9), 1)}
              for name, begin, end in windows}
    during["phases"] = phases
    with FusionRankClient(url, timeout_s=60) as client:
        status = client.catalogue_status()
    return {"report": outcome["report"], "searches": during,
            "peak_memory_mib": peak_of(memory, before), "before_memory_mib": before,
            "after_memory_mib": harness.process_memory_mib(pid),
            "rows_after": status.rows, "segments_after": status.segments}


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
            # SIGTERM, serve's clean stop: a benchmark started in the background (nohup,
            # `&`) has SIGINT ignored, and its children too.
            restarted.send_signal(signal.SIGTERM)
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
    manifest = json.loads((args.build / "model_repository" / "fusionrank.json").read_text())
    if not manifest["serving"].get("live_catalogue"):
        parser.error(f"{args.build} was not built with --live-catalogue")
    work = fresh_copy(args.build, "-benchmark")
    repository = work / "model_repository"
    table = ProductTable.open(served_version(repository, "catalogue") / "products.jsonl")
    changes = Changes(table)
    queries = harness.benchmark_queries(2000)
    logs = args.build / "benchmark-logs"
    logs.mkdir(exist_ok=True)
    report = {**harness.stamp(), "products": len(table), "callers": args.callers,
              "embed_threads": os.cpu_count(),
              "catalogue_source": manifest["index"]["catalogue_source"],
              "retrieval": manifest["retrieval"]["kind"]}
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
        # From the lightest stream to the heaviest: each pays for the rows the ones before
        # it added (prices add none: an update in place).
        for kind, retitled in STREAMS.items():
            # Each stream between two runs at rest of the catalogue it finds and the one it
            # leaves: this machine's speed moves by a fifth within minutes, so the run at rest
            # at the start alone is no measure of what a stream costs later.
            bracket = args.seconds / 3
            rest_before = searches(server.grpc_url, queries, args.callers, bracket)
            before = harness.process_memory_mib(pid)
            memory = peak_memory(pid)
            report[kind] = searches(server.grpc_url, queries, args.callers, args.seconds,
                                    changes, args.rate, args.set_size, retitled)
            report[kind]["retitled"] = retitled
            report[kind]["peak_memory_mib"] = peak_of(memory, before)
            report[kind]["at_rest_around"] = [
                rest_before, searches(server.grpc_url, queries, args.callers, bracket)]
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
        report["compaction"] = compaction(server.grpc_url, repository, work, queries, changes,
                                          args, pid)
        print(report["compaction"], file=sys.stderr)
        report["at_rest_compacted"] = searches(server.grpc_url, queries, args.callers,
                                               args.seconds)
        print(report["at_rest_compacted"], file=sys.stderr)
    report["kill_serve"] = kill_serve(repository, table, logs / "serve.log")
    print(report["kill_serve"], file=sys.stderr)
    save(report, args.out)
    return 0


def save(report: dict, folder: Path) -> None:
    """The report holds one section per catalogue, each from its own run: this run's replaces
    its catalogue's (a report of the format before, one catalogue alone, is replaced)."""
    path = folder / f"{NAME}.json"
    runs = json.loads(path.read_text()).get("catalogues", {}) if path.exists() else {}
    runs[str(report["products"])] = report
    runs = dict(sorted(runs.items(), key=lambda item: int(item[0])))
    text = ("# Live catalogue: change sets applied while serving\n\n"
            "One section a catalogue, each measured by its own run (its command, machine and "
            "date are in it).\n\n")
    text += "\n".join(demoted(render(run)) for run in runs.values())
    harness.save_report(NAME, {"catalogues": runs}, text, folder)


def demoted(text: str) -> str:
    """Markdown with every heading one level lower (a report's sections in a larger one)."""
    return "\n".join(f"#{line}" if line.startswith("#") else line
                     for line in text.split("\n"))


def catalogue_line(report: dict) -> str:
    source = report.get("catalogue_source", "homedepot")
    what = (f"every Home Depot product ({report['products']:,})" if "homedepot" in source
            else f"the generated catalogue {Path(source).name} ({report['products']:,} "
                 "products, benchmarks/generate_catalogue.py)")
    retrieval = {"ann": "FAISS ANN retrieval", "exact": "exact retrieval"}.get(
        report.get("retrieval", "exact"), report.get("retrieval"))
    return (f"Catalogue: {what}, {retrieval}, a trained run, layout one (2 copies of "
            f"search_steps), the catalogue model embedding on {report['embed_threads']} "
            "threads; searches: distinct real Home Depot queries through the SDK, closed loops; "
            "the figures before the compaction pay for every row changed before them")


def targets(report: dict) -> str:
    """Issue 24's targets against this run's figures."""
    thousand = [r for r in report["apply"] if r["changes"] == 1000]
    streams = [report[kind] for kind in STREAMS]
    loaded = [*streams, report["compaction"]["searches"]]
    ratio = max(r["peak_rss_mib"] / r["before_rss_mib"] for r in report["apply"])
    kill = report["kill_serve"]
    rows = [
        ("apply → searchable, 1,000 upserts", "≤ 5 s",
         ", ".join(f"{r['searchable_s']:.2f} s" for r in thousand),
         all(r["searchable_s"] <= 5 for r in thousand)),
        ("failed requests, mixed answers (streams and compaction)", "0, 0",
         f"{sum(r['failed'] + r['set_failures'] for r in loaded)}, "
         f"{sum(r['mixed_answers'] for r in loaded)}",
         not any(r["failed"] or r["set_failures"] or r["mixed_answers"] for r in loaded)),
        ("search throughput during a stream", "≥ 0.8× at rest (just before and after)",
         ", ".join(f"{stream_ratio(r):.3f}× ({stream_name(r)})" for r in streams),
         all(stream_ratio(r) >= 0.8 for r in streams)),
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


def compaction_text(report: dict) -> str:
    run = report["compaction"]
    done, during = run["report"], run["searches"]
    before, peak = run["before_memory_mib"], run["peak_memory_mib"]
    rest, compacted = report["at_rest"], report["at_rest_compacted"]
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in done["seconds"].items())
    return (
        "\n## Compaction under load\n\n"
        f"`fusionrank catalogue compact` (its own process) while {during['callers']} callers "
        f"searched and price changes streamed ({during['sets_applied']} sets, "
        f"{during['sets_per_s']} a second): {done['rows_before']:,} rows "
        f"({done['segments_folded']} segments) folded into a base of {done['products']:,} "
        f"products through set {done['through']}, {done['titles_embedded']} titles embedded "
        f"again; rollout {done['outcome']}; {phases}.\n\n"
        f"- searches meanwhile: {during['qps']} q/s ({during['qps'] / rest['qps']:.2f}× at "
        f"rest), p99 {during.get('p99_ms')} ms, {during['failed']} failed, "
        f"{during['set_failures']} sets failed, {during['mixed_answers']} mixed answers in "
        f"{during['pair_checks']} pair checks over {during['pair_states_seen']} states; "
        "by phase: " + ", ".join(f"{name} {v['qps']} q/s over {v['seconds']} s"
                                 for name, v in during.get("phases", {}).items()) + ";\n"
        f"- the server's memory: RSS {before['rss']:,.0f} → peak {peak['rss']:,.0f} MiB "
        f"({peak['rss'] / before['rss']:.2f}×), PSS {before['pss']:,.0f} → {peak['pss']:,.0f} "
        f"MiB ({peak['pss'] / before['pss']:.2f}×), then {run['after_memory_mib']['rss']:,.0f} "
        "MiB RSS: the rollout loads the new base's search and catalogue models beside the "
        "serving ones, and drops the old ones after the drain;\n"
        f"- the compaction process's own peak RSS: {done['peak_rss_mib']:,.0f} MiB (the build: "
        "encoder export and parity check, the product rows and their vectors, BM25 and title "
        "features);\n"
        f"- after it, {run['rows_after']:,} rows in {run['segments_after']} segments, and "
        f"searches at rest {compacted['qps']} q/s: {compacted['qps'] / rest['qps']:.2f}× the "
        f"base's at the start (p99 {compacted.get('p99_ms')} ms).\n")


def stream_ratio(run: dict, rest: float | None = None) -> float:
    """A stream's q/s against the catalogue at rest: the mean of the runs at rest just before
    and after it (`rest`: against that figure instead, e.g. the start's)."""
    if rest is None:
        rest = float(np.mean([r["qps"] for r in run["at_rest_around"]]))
    return run["qps"] / rest


def stream_name(run: dict) -> str:
    share = run["retitled"]
    return {0.0: "prices only", 1.0: "every product retitled"}.get(
        share, f"{share:.0%} retitled, the rest repriced")


def render(report: dict) -> str:
    rest = report["at_rest"]
    streams = [report[kind] for kind in STREAMS]
    steady = report["steady_memory_mib"]
    text = harness.heading(f"{report['products']:,} products", report, catalogue_line(report))
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
         ("at rest, after the compaction", report["at_rest_compacted"]["qps"],
          report["at_rest_compacted"].get("p50_ms"), report["at_rest_compacted"].get("p99_ms"),
          report["at_rest_compacted"]["failed"]),
         *((f"{run['sets_per_s']} sets/s, {stream_name(run)}", run["qps"], run.get("p50_ms"),
            run.get("p99_ms"), run["failed"]) for run in streams)])
    for run in streams:
        around = " and ".join(f"{r['qps']} q/s" for r in run["at_rest_around"])
        text += (f"\n\n{stream_name(run)}: throughput {stream_ratio(run):.2f}× at rest (the "
                 f"catalogue at rest just before and after the stream: {around}; "
                 f"{stream_ratio(run, rest['qps']):.2f}× the figure at rest at the start); "
                 f"{run['sets_applied']} sets applied ({run['set_failures']} failed, server "
                 f"p50 {run['set_server_p50_s']} s a set), {run['pair_checks']} pair checks "
                 f"over {run['pair_states_seen']} states, {run['mixed_answers']} mixed "
                 f"answers; peak memory RSS {run['peak_memory_mib']['rss']:,.0f} MiB, PSS "
                 f"{run['peak_memory_mib']['pss']:,.0f} MiB.")
    text += "\n"
    text += compaction_text(report)
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
