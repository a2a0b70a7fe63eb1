"""What callers see when a model's process (its Python-backend stub) is killed under load:
`fusionrank serve` runs the repository, 8 callers search through the SDK without pause (each
query new, so the response cache answers none), one stub of a model is killed (SIGKILL), and the
server's model-process watch reloads that model (app/stub_watch.py). Once with the
SDK's retries, once without, for the model that scores the candidates and for the one that
encodes the queries (one and the same model, `search_steps`, in the default layout).

    .venv/bin/python -m benchmarks.stub_recovery build/model_repository \
        build/homedepot_fused/model_repository

Writes benchmarks/reports/stub_recovery.md and .json.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.harness import (
    ClosedLoop,
    FreshQueries,
    heading,
    latency_percentiles,
    save_report,
    stamp,
    table,
)
from benchmarks.serve_recovery import Serving, searcher, serving
from fusionrank.app.serve import child_process
from fusionrank.app.stub_watch import live_stubs
from fusionrank.client import FusionRankError, RetryPolicy
from fusionrank.client.retry import DEFAULT_RETRY
from fusionrank.core import artefacts
from fusionrank.model_repository.config import model_of_step, served_version

CONCURRENCY = 8
CALL_TIMEOUT_S = 10.0  # each call's deadline (the SDK's default), retries included
WARM_S, BASELINE_S, OBSERVE_S = 3.0, 3.0, 30.0
SLOW_S = 1.0  # a call this long met a dead process (Triton's 1 s wait) or is not normal
# New each time ("led bulb 17"): none repeats in a run, so the response cache answers none.
QUERIES = FreshQueries("cordless drill", "ceiling fan", "garden hose", "led bulb", "paint roller",
                       "door handle", "shower head", "wood screws")
VICTIMS = ("ScoreCandidates", "EncodeQueries")  # the models running these steps
COLUMNS = ["repository", "killed stub of", "SDK retries", "calls after the kill", "failed calls",
           "errors", "model reloaded after, s", "seconds until normal",
           "calls ≥ 1 s in the 3 s before", "p50 before, ms", "p99 after, ms",
           "slowest call after, s", "the watch said", "stubs of the model before → after"]


def scenario(served: Serving, model: str, retries: bool) -> dict:
    """Kill one serving stub of `model` under load; what the callers saw."""
    server = child_process(served.process.pid, "tritonserver")
    before = live_stubs(server, model)
    victim = max(before)  # the newest: serving (an earlier reload's old stubs may linger)
    retry = DEFAULT_RETRY if retries else RetryPolicy(attempts=1)
    with ClosedLoop(CONCURRENCY, searcher(served.url, QUERIES, retry, CALL_TIMEOUT_S),
                    failures=FusionRankError) as loop:
        time.sleep(WARM_S + BASELINE_S)
        seen = len(served.lines)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        reloaded_s = None
        while time.monotonic() - killed < OBSERVE_S:
            if reloaded_s is None and any(f"reloaded {model}" in line
                                          for line in served.lines[seen:]):
                reloaded_s = round(time.monotonic() - killed, 2)
            time.sleep(0.05)
    reloaded = served.wait_for(f"reloaded {model}", 120, since=seen).strip()
    time.sleep(3)  # the new instances serve; the replaced ones may never unload (see report)
    calls = [replace(c, start=c.start - killed, end=c.end - killed) for c in loop.calls]
    before_kill = [c for c in calls if -BASELINE_S <= c.start < 0]  # seconds from the kill
    after = [c for c in calls if c.end > 0]
    abnormal = [c.end for c in after if c.error or c.seconds >= SLOW_S]
    latencies = [c.seconds for c in after if not c.error]
    return {"model": model, "retries": retries, "killed_pid": victim,
            "calls_after_kill": len(after),
            "failed_calls": sum(1 for c in after if c.error),
            "errors": sorted({c.error_type for c in after if c.error}),
            "model_reloaded_after_s": reloaded_s,
            "seconds_until_normal": round(max(abnormal, default=0.0), 2),
            "slow_calls_before_kill": sum(1 for c in before_kill if c.seconds >= SLOW_S),
            "calls_before_kill": len(before_kill),
            "p50_before_kill_ms": latency_percentiles(
                [1000 * c.seconds for c in before_kill], (50,), 1)["p50_ms"],
            "p99_after_kill_ms": latency_percentiles(
                [1000 * s for s in latencies], (99,), 1)["p99_ms"],
            "max_after_kill_s": round(max(latencies), 2),
            "stubs_before": len(before), "stubs_after": len(live_stubs(server, model)),
            "watch": reloaded}


def hashing_cost(repository: Path) -> list[dict]:
    """What the SHA-256 check costs each Python model's load (each instance hashes its
    artefacts; the files' pages cached, as after a build or an earlier load)."""
    costs = []
    for config in sorted(repository.glob("*/config.pbtxt")):
        folder = served_version(repository, config.parent.name)
        files = [f for f in folder.iterdir() if f.is_file() and f.name != "model.py"]
        if 'backend: "python"' not in config.read_text() or not files:
            continue
        for path in files:  # once to cache the pages, then timed
            artefacts.file_sha256(path)
        start = time.perf_counter()
        for path in files:
            artefacts.file_sha256(path)
        costs.append({"repository": str(repository), "model": config.parent.name,
                      "megabytes": round(sum(f.stat().st_size for f in files) / 1e6, 1),
                      "ms": round(1000 * (time.perf_counter() - start))})
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repositories", type=Path, nargs="+")
    args = parser.parse_args()
    results, hashing = [], []
    for repository in args.repositories:
        hashing += hashing_cost(repository)
        with serving(repository) as served:
            models = dict.fromkeys(model_of_step(repository, "search", step) for step in VICTIMS)
            for model in models:
                for retries in (True, False):
                    result = {"repository": str(repository), **scenario(served, model, retries)}
                    print(result, flush=True)
                    results.append(result)
    report = {**stamp(), "concurrency": CONCURRENCY, "call_timeout_s": CALL_TIMEOUT_S,
              "retry_policy": DEFAULT_RETRY.__dict__, "observe_s": OBSERVE_S, "results": results,
              "manifest_check": hashing}
    save_report("stub_recovery", report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    rows = table(COLUMNS, [
        [f"`{r['repository']}`", r["model"], "on" if r["retries"] else "off",
         r["calls_after_kill"], r["failed_calls"], ", ".join(r["errors"]) or "-",
         r["model_reloaded_after_s"], r["seconds_until_normal"],
         f"{r['slow_calls_before_kill']} of {r['calls_before_kill']}", r["p50_before_kill_ms"],
         r["p99_after_kill_ms"], r["max_after_kill_s"],
         r["watch"].removeprefix("fusionrank serve: "), f"{r['stubs_before']} → {r['stubs_after']}"]
        for r in report["results"]])
    hashed = table(["repository", "model", "MB hashed", "ms"],
                   [[f"`{h['repository']}`", h["model"], h["megabytes"], h["ms"]]
                    for h in report["manifest_check"]])
    return heading("Callers' view of a model process killed under load", report, f"""\
`fusionrank serve` (Triton 2.51, explicit model control) on free loopback ports;
  {CONCURRENCY} callers search through the SDK without pause (k = 10, each query new so the
  response cache answers none), each call with a {CALL_TIMEOUT_S:.0f} s deadline, with the SDK's
  retries (until the deadline, back-off from {DEFAULT_RETRY.first_backoff_s * 1000:.0f}
  ms) or without (1 try). After {WARM_S + BASELINE_S:.0f} s one stub process of the model is
  killed (SIGKILL); the callers go on for {OBSERVE_S:.0f} s.""", f"""\
Triton 2.51 does not restart a dead stub: the requests its instance takes wait 1 s and fail
  with INTERNAL "Stub process '<instance>' is not healthy." (the SDK's ModelProcessError, retried
  as UNAVAILABLE is). `fusionrank serve`'s watch sees the zombie stub within 0.5 s and reloads
  the model (its config with a `reloaded_at` parameter, so Triton does not skip the load); the
  new instances serve once loaded (the search model loads two copies, each reading its
  catalogue's files, title_features.npz among them, and building its features graph, while
  the {CONCURRENCY} callers take the same 2 vCPU).""", f"""\
Model reloaded after: from the kill to the watch's "reloaded" line (the new instances
  serve from then on). Seconds until normal: from the kill to the end of the last call that
  failed or took {SLOW_S:.0f} s or more (what meeting a dead process costs); the calls that slow
  before the kill show the machine's own noise (other work shares its 2 vCPU).""", """\
Stubs before → after: the model's live stub processes. Where the dead instance took requests,
  Triton 2.51 never finishes unloading the replaced version (it leaks the dead instance's
  response factories), so the watch retires it: it stops the replaced copy's live stub and
  removes that copy's shared memory once the new copies serve, and the model keeps the copies
  its config asks for. The server's own shutdown still waits its 30 s for that version.""") + f"""
{rows}

## The SHA-256 check at each load

Each Python model checks its version folder's artefacts against the `sha256.json` written at
build before it loads them (`artefacts.check_manifest`), so a reload after a dead process
re-checks them too. Time to hash them, page cache warm:

{hashed}
"""


if __name__ == "__main__":
    raise SystemExit(main())
