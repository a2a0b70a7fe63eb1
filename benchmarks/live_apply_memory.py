"""Where a live catalogue's apply takes memory, process by process (issue 24: peak memory during
an apply ≤ 1.2× steady state).

    fusionrank build --catalogue homedepot --run runs/relevance --live-catalogue \\
        --no-recommend --out $TMPDIR/live/build-hd
    python -m benchmarks.live_apply_memory --build $TMPDIR/live/build-hd

A fresh server on a copy of the build (no change applied yet), warmed by 300 real searches;
then change sets of `--sizes` upserts (real products, a word added to each title), one after
the other. For each: every server process's RSS before it and its peak (sampled every 50 ms)
from the call until 50 searches later have run on the new state. The
benchmarks/live_catalogue.py report gives the same apply's total beside its other figures;
this one says which process pays.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import psutil

from benchmarks import harness
from benchmarks.live_catalogue import Changes, fresh_copy
from fusionrank.app.serve import TritonServer
from fusionrank.client import FusionRankClient
from fusionrank.core.product_table import ProductTable
from fusionrank.model_repository.config import served_version

NAME = "live_apply_memory"


def role(process: psutil.Process, models: list[str]) -> str:
    """The model a process serves (a Python model's stub names its version folder), or
    tritonserver itself."""
    command = " ".join(process.cmdline())
    model = next((m for m in models if f"/{m}/" in command), None)
    if model is None and "tritonserver" in command:
        return "tritonserver"
    return model or "other"


class PeakRss(harness.PeakMemory):
    """harness.PeakMemory's sampling (every `every_s`, from `start()` to `stop()`), of each
    process's own RSS: `peak` and `before` (at the start), MiB by pid."""

    def __init__(self, processes: list[psutil.Process], every_s: float = 0.05):
        super().__init__(processes[0].pid, every_s)
        self.processes = processes
        self.peak = {p.pid: p.memory_info().rss / 2**20 for p in processes}
        self.before = dict(self.peak)

    def run(self) -> None:
        while not self._stop_event.wait(self.every_s):
            for process in self.processes:
                try:
                    rss = process.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.peak[process.pid] = max(self.peak[process.pid], rss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, required=True)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--out", type=Path, default=harness.REPORTS)
    args = parser.parse_args(argv)
    work = fresh_copy(args.build, "-memory")
    repository = work / "model_repository"
    table = ProductTable.open(served_version(repository, "catalogue") / "products.jsonl")
    changes = Changes(table)
    models = sorted(d.name for d in repository.iterdir() if (d / "config.pbtxt").is_file())
    queries = harness.benchmark_queries(300)
    report = {**harness.stamp(), "products": len(table), "applies": []}
    with (work / "triton.log").open("w") as log, \
            TritonServer(repository, log=log, cache_mib=0) as server, \
            FusionRankClient(server.grpc_url, timeout_s=300) as client:
        root = psutil.Process(server.process.pid)
        for query in queries:  # warm: every model process has answered
            client.search(query, k=10)
        for size in (int(n) for n in args.sizes.split(",")):
            processes = [root, *root.children(recursive=True)]
            memory = PeakRss(processes)
            memory.start()
            try:
                client.apply_changes(changes.set_of(size))
                for query in queries[:50]:
                    client.search(query, k=10)
                time.sleep(1.0)
            finally:
                memory.stop()
            rows = sorted(({"process": role(p, models), "pid": p.pid,
                            "before_mib": round(memory.before[p.pid], 1),
                            "peak_mib": round(memory.peak[p.pid], 1)} for p in processes),
                          key=lambda r: (r["process"], r["pid"]))
            before = sum(r["before_mib"] for r in rows)
            peak = sum(r["peak_mib"] for r in rows)
            report["applies"].append({"changes": size, "processes": rows,
                                      "before_mib": round(before, 1),
                                      "peak_mib": round(peak, 1)})
            print(report["applies"][-1], file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    text = harness.heading(
        "Memory of a live catalogue's apply, process by process", report,
        f"Catalogue: {len(table):,} products, a fresh server on a copy of `{args.build.name}`; "
        "each apply's peak is each process's largest RSS until 50 searches ran on its state")
    for apply in report["applies"]:
        text += (f"\n## {apply['changes']:,} changes: {apply['before_mib']:,.0f} → "
                 f"{apply['peak_mib']:,.0f} MiB ({apply['peak_mib'] / apply['before_mib']:.2f}×)"
                 "\n\n")
        text += harness.table(("process", "RSS before, MiB", "peak, MiB", "more"), [
            (r["process"], f"{r['before_mib']:,.0f}", f"{r['peak_mib']:,.0f}",
             f"+{r['peak_mib'] - r['before_mib']:,.0f}") for r in apply["processes"]]) + "\n"
    harness.save_report(NAME, report, text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
