"""Today's fused search against the cascade, and both against the peer, in one run (issue 25).

    fusionrank build --catalogue homedepot --run runs/relevance --cascade-depth off \\
        --student off --no-recommend --out build/homedepot_today
    fusionrank build --catalogue homedepot --run runs/relevance --student off \\
        --no-recommend --out build/homedepot_cascade
    fusionrank build --catalogue homedepot --run runs/relevance --no-recommend \\
        --student runs/relevance/student/best --out build/homedepot_student
    .venv/bin/python -m benchmarks.cascade --run runs/relevance \\
        --before build/homedepot_today \\
        --after build/homedepot_cascade build/homedepot_student \\
        --evaluation runs/relevance/evaluation/evaluation.json

For each build, taking turns (before, after…, before, after…: a machine that slows down
meanwhile slows each alike), the median of two rounds of:
- the in-process core time a query at batch 8, step by step (the served steps through
  `InProcessEnsemble`, as benchmarks/search_benchmark.py measures them);
- through Triton (no response cache, distinct real queries), perf_analyzer's p50 at
  concurrency 1 and its throughput at concurrency 8.
Then the peer (benchmarks/search_peer.py, FastAPI + sentence-transformers) serving each after
build's ranking (its query encoder included: a student build's peer encodes with the student),
at concurrency 1 and 8; its report is rewritten by this run (the last after build's). Quality comes
from one `fusionrank evaluate` run (`--evaluation`), which ranks the test queries with both.

Writes benchmarks/reports/cascade.md and .json, with issue 25's targets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.harness import REPORTS, benchmark_queries, heading, save_report, stamp, table
from benchmarks.search_benchmark import perf_analyzer, perf_analyzer_input, step_ceilings
from fusionrank.app.serve import TritonServer
from fusionrank.core.search.contract import SEARCH_MODEL
from fusionrank.model_repository.runner import InProcessEnsemble

NAME = "cascade"
ROUNDS = 2


def manifest(build: Path) -> dict:
    return json.loads((build / "model_repository" / "fusionrank.json").read_text())


def measure(build: Path, queries: list[str], seconds: float, tmp: Path) -> dict:
    """One round for one build: core time a query at batch 8 by step, served p50 at c=1 and
    q/s at c=8."""
    repository = build / "model_repository"
    pipeline = InProcessEnsemble(repository, SEARCH_MODEL)
    steps = {row["step"]: row["ms_per_query_batch8"]
             for row in step_ceilings(pipeline, queries[:400], batches=(8,))}
    del pipeline
    data = perf_analyzer_input(queries, tmp / "queries.json")
    with (tmp / f"{build.name}.log").open("w") as log, \
            TritonServer(repository, log=log, cache_mib=0) as server:
        one = perf_analyzer(server.grpc_url, data, 1, seconds, "c=1")
        eight = perf_analyzer(server.grpc_url, data, 8, seconds, "c=8")
    figures = {"steps_ms": steps, "core_ms": round(sum(steps.values()), 3),
               "p50_c1_ms": one.p50_ms, "qps_c8": round(eight.throughput_qps, 1),
               "p99_c8_ms": eight.p99_ms}
    print(build.name, figures, file=sys.stderr, flush=True)
    return figures


def median_of(rounds: list[dict]) -> dict:
    out = {key: round(float(np.median([r[key] for r in rounds])), 3)
           for key in ("core_ms", "p50_c1_ms", "qps_c8", "p99_c8_ms")}
    out["steps_ms"] = {step: round(float(np.median([r["steps_ms"][step] for r in rounds])), 3)
                       for step in rounds[0]["steps_ms"]}
    out["rounds"] = rounds
    return out


def measured_in_turns(builds: dict[str, Path], queries: list[str], seconds: float
                      ) -> dict[str, dict]:
    """Each build's figures, the median of ROUNDS rounds taken in turns (one build after the
    other, then again): a machine that slows down meanwhile slows each alike."""
    rounds: dict[str, list[dict]] = {who: [] for who in builds}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(ROUNDS):
            for who, build in builds.items():
                rounds[who].append(measure(build, queries, seconds, Path(tmp)))
    return {who: median_of(r) for who, r in rounds.items()}


def peer(run: Path, build: Path, queries: int, seconds: float) -> dict:
    subprocess.run([sys.executable, "-m", "benchmarks.search_peer", "--run", str(run),
                    "--build", str(build), "--queries", str(queries), "--seconds", str(seconds),
                    "--concurrency", "1,8"], check=True, timeout=3600)
    return json.loads((REPORTS / "search_peer.json").read_text())


def quality(evaluation: Path, depth: int | None) -> dict:
    """Test and dev NDCG@10 and Recall@100 of today's served ranking and the cascade's, with
    the teacher and with the student as the (INT8) query encoder."""
    report = json.loads(evaluation.read_text())["retrieval"]
    names = {"today": "fused, int8 query encoder",
             "cascade": f"fused, cascade {depth}, int8 query encoder",
             "cascade, student": f"fused, cascade {depth}, student int8 query encoder"}
    return {split: {who: {m: report[split][name][m] for m in ("ndcg@10", "recall@100")}
                    for who, name in names.items() if name in report[split]}
            for split in ("dev", "test")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/relevance"))
    parser.add_argument("--before", type=Path, required=True,
                        help="today's configuration: built with --cascade-depth off")
    parser.add_argument("--after", type=Path, nargs="+", required=True,
                        help="the cascade's builds (the peer serves each one's ranking)")
    parser.add_argument("--evaluation", type=Path, required=True,
                        help="a `fusionrank evaluate` report of the run (evaluation.json)")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args(argv)
    builds = {"before": args.before, **{build.name: build for build in args.after}}
    if len(builds) != len(args.after) + 1:
        parser.error("each build needs a folder name of its own")
    ranking = {who: manifest(build)["ranking"] for who, build in builds.items()}
    if ranking["before"].get("cascade"):
        parser.error(f"--before {args.before} ranks in a cascade: build it with "
                     "--cascade-depth off")
    depths = {(r.get("cascade") or {}).get("depth") for who, r in ranking.items()
              if who != "before"}
    if len(depths) != 1:
        parser.error(f"the after builds rank at different depths: {sorted(map(str, depths))}")
    depth = depths.pop()
    queries = benchmark_queries(args.queries)
    measured = measured_in_turns(builds, queries, args.seconds)
    compared = {who: peer(args.run, build, args.queries, args.seconds)
                for who, build in builds.items() if who != "before"}
    report = {**stamp(), "queries": len(queries), "seconds": args.seconds,
              "builds": {who: str(b) for who, b in builds.items()}, "ranking": ranking,
              "student": {who: manifest(b)["query_encoder"] is not None
                          for who, b in builds.items()},
              "measured": measured,
              "peer": {who: {"workers": c["peer_workers"],
                             **{f"qps_c{x['concurrency']}": x["throughput_qps"]
                                for x in c["peer"]},
                             **{f"p50_c{x['concurrency']}_ms": x["p50_ms"] for x in c["peer"]},
                             "triton_qps_c8": next(x["throughput_qps"] for x in c["triton"]
                                                   if x["concurrency"] == 8)}
                       for who, c in compared.items()},
              "quality": quality(args.evaluation, depth)}
    save_report(NAME, report, render(report), args.out)
    return 0


def targets(r: dict, who: str) -> list[list[str]]:
    """Issue 25's targets for the after build `who`."""
    before, after = r["measured"]["before"], r["measured"][who]
    peer = r["peer"][who]
    test = r["quality"]["test"]
    ranking = "cascade, student" if r["student"][who] else "cascade"
    throughput = after["qps_c8"] / before["qps_c8"]
    over_peer = after["qps_c8"] / peer["qps_c8"]
    p50 = after["p50_c1_ms"] / before["p50_c1_ms"]
    core = after["core_ms"] / before["core_ms"]
    got = test.get(ranking)
    loss = None if got is None else test["today"]["ndcg@10"] - got["ndcg@10"]
    rows = [
        ("throughput at c=8 vs today's", "≥ 2×", f"{throughput:.2f}× ({after['qps_c8']:.0f} vs "
         f"{before['qps_c8']:.0f} q/s)", throughput >= 2),
        ("throughput at c=8 vs the peer", "≥ 5×", f"{over_peer:.2f}× (peer ×{peer['workers']}: "
         f"{peer['qps_c8']:.0f} q/s)", over_peer >= 5),
        ("p50 at c=1 vs today's", "≤ 0.5×", f"{p50:.2f}× ({after['p50_c1_ms']:.2f} vs "
         f"{before['p50_c1_ms']:.2f} ms)", p50 <= 0.5),
        ("core time a query at batch 8 vs today's", "≤ 0.45×", f"{core:.2f}× "
         f"({after['core_ms']:.2f} vs {before['core_ms']:.2f} ms)", core <= 0.45),
        ("test NDCG@10", "≥ today's − 0.003", "n/a" if got is None else
         f"{got['ndcg@10']:.4f} vs {test['today']['ndcg@10']:.4f} ({-loss:+.4f})",
         loss is not None and loss <= 0.003),
        ("test Recall@100", "unchanged", "n/a" if got is None else
         f"{got['recall@100']:.4f} vs {test['today']['recall@100']:.4f}",
         got is not None and got["recall@100"] >= test["today"]["recall@100"]),
        ("throughput at c=8", "≥ 500 q/s", f"{after['qps_c8']:.0f}", after["qps_c8"] >= 500),
        ("p50 at c=1", "≤ 5 ms", f"{after['p50_c1_ms']:.2f} ms", after["p50_c1_ms"] <= 5),
    ]
    return [[what, aim, value, "yes" if met else "**no**"] for what, aim, value, met in rows]


def render(r: dict) -> str:
    measured = r["measured"]
    before = measured["before"]
    afters = [who for who in measured if who != "before"]
    steps = [[step, f"{before['steps_ms'][step]:.3f}",
              *(f"{measured[w]['steps_ms'].get(step, 0):.3f} "
                f"({measured[w]['steps_ms'].get(step, 0) / before['steps_ms'][step]:.2f}×)"
                for w in afters)]
             for step in before["steps_ms"]]
    steps.append(["**all**", f"{before['core_ms']:.3f}",
                  *(f"{measured[w]['core_ms']:.3f} "
                    f"({measured[w]['core_ms'] / before['core_ms']:.2f}×)" for w in afters)])
    served = [[who, "yes" if r["student"][who] else "no", f"{m['p50_c1_ms']:.2f}",
               f"{m['qps_c8']:.1f}", f"{m['p99_c8_ms']:.2f}",
               ", ".join(f"{x['qps_c8']:.0f}" for x in m["rounds"])]
              for who, m in measured.items()]
    served += [[f"peer ×{p['workers']} (the ranking of {who})",
                "yes" if r["student"][who] else "no", f"{p['p50_c1_ms']:.2f}",
                f"{p['qps_c8']:.1f}", "", ""] for who, p in r["peer"].items()]
    quality = [[split, who, f"{m['ndcg@10']:.4f}", f"{m['recall@100']:.4f}"]
               for split, by in r["quality"].items() for who, m in by.items()]
    cascade = r["ranking"][afters[0]].get("cascade")
    sections = []
    for who in afters:
        sections += [f"## Targets: {who}", "",
                     table(["target", "aimed at", "measured", "met"], targets(r, who)), ""]
    return "\n".join([
        heading("Search in a cascade: today's fused ranking against the cascade", r,
                f"{r['queries']} distinct real Home Depot search terms, K = 10; builds: "
                f"`{r['builds']['before']}` (today: S over the whole pool, the teacher "
                f"encodes queries), then " + ", ".join(f"`{r['builds'][w]}`" for w in afters)
                + f" (cascade depth {cascade['depth']}, first stage {cascade['first_stage']})"
                f"; measured in turns, the median of {ROUNDS} rounds each; perf_analyzer "
                f"windows of {r['seconds']} s, response cache off"),
        *sections,
        "## Core time a query at batch 8, in process, by step (ms)", "",
        table(["step", "today", *afters], steps), "",
        "## Through Triton", "",
        table(["build", "student encodes queries", "p50 at c=1, ms", "q/s at c=8",
               "p99 at c=8, ms", "q/s at c=8, rounds"], served), "",
        "## Quality (one `fusionrank evaluate` run; INT8 query encoders, as served)", "",
        table(["split", "ranking", "NDCG@10", "Recall@100"], quality), ""])


if __name__ == "__main__":
    raise SystemExit(main())
