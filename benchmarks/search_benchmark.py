"""Search serving benchmark: perf_analyzer against the served `search` ensemble at each
concurrency, with distinct queries (response cache off) and with a Zipf replay of the same
queries (response cache on); the same queries through the in-process runner as the reference;
where the time goes per step (Triton's per-model statistics); the server's resident memory.

    .venv/bin/python -m benchmarks.search_benchmark                  # pretrained encoder, dense
    .venv/bin/python -m benchmarks.search_benchmark --run runs/relevance  # a trained, fused run
    .venv/bin/python -m benchmarks.search_benchmark --queries 200 --seconds 3  # quick look

Writes benchmarks/reports/search.md, .json and .png (search_fused.* with --run). Compare
figures within one run: the machine is shared and noisy. Three stages: `build` (the model
repositories, where missing), `measure` (in process, then through Triton) and `summarise` /
`write_report`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    REPORTS,
    PeakMemory,
    benchmark_queries,
    heading,
    latency_percentiles,
    process_tree_rss_mib,
    save_report,
    stamp,
    table,
    zipf_replay,
)
from fusionrank.app.build import build_search_repository
from fusionrank.app.serve import TritonServer
from fusionrank.core.datasets import homedepot_catalogue
from fusionrank.core.model_folders import bundled_model_path
from fusionrank.core.search.contract import SEARCH_MODEL, search_request
from fusionrank.model_repository.runner import InProcessEnsemble, read_config
from fusionrank.model_repository.search.ensemble import LAYOUTS, ServingOptions

K = 10


@dataclass
class LoadResult:
    mode: str  # "triton c=N" or "in-process ..."
    throughput_qps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float




def perf_analyzer_input(queries: list[str], path: Path) -> Path:
    """perf_analyzer's --input-data JSON: one request per query (in order), K fixed."""
    data = [{"QUERY": {"content": [q], "shape": [1]}, "K": {"content": [K], "shape": [1]}}
            for q in queries]
    path.write_text(json.dumps({"data": data}))
    return path


def perf_analyzer(url: str, data: Path, concurrency: int, seconds: float,
                  mode: str) -> LoadResult:
    venv_bin = Path(sys.executable).parent  # scripts/setup.sh installs it beside python
    binary = shutil.which("perf_analyzer", path=f"{venv_bin}{os.pathsep}{os.environ['PATH']}")
    if binary is None:
        raise FileNotFoundError("perf_analyzer not found: run scripts/setup.sh")
    # A noisy shared machine: when three windows in a row do not agree within 25 %, try once
    # more with windows twice as long and a 50 % band (the report says which rows needed it).
    for window, band in ((seconds, 25), (2 * seconds, 50)):
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "pa.csv"
            command = [binary, "-m", "search", "-u", url, "-i", "grpc", "--input-data",
                       str(data), "--concurrency-range", str(concurrency),
                       "--measurement-mode", "time_windows",
                       "--measurement-interval", str(int(window * 1000)),
                       "--stability-percentage", str(band), "--max-trials", "6",
                       "-f", str(report)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            if done.returncode == 0:
                row = next(csv.DictReader(report.open()))
                break
            mode += " (unsteady: 50 % band)"
    else:
        raise RuntimeError(f"perf_analyzer failed:\n{done.stdout[-3000:]}\n{done.stderr}")
    return LoadResult(mode, float(row["Inferences/Second"]),
                      int(row["p50 latency"]) / 1e3, int(row["p95 latency"]) / 1e3,
                      int(row["p99 latency"]) / 1e3)




def in_process(pipeline: InProcessEnsemble, queries: list[str], batch: int, seconds: float
               ) -> LoadResult:
    """Queries through the in-process pipeline, `batch` per call, for about `seconds`."""
    latencies_ms: list[float] = []
    served = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(0, len(queries), batch):
            tick = time.perf_counter()
            pipeline(search_request(queries[i:i + batch], K))
            latencies_ms.append((time.perf_counter() - tick) * 1e3)
            served += len(queries[i:i + batch])
            if time.perf_counter() - start >= seconds:
                break
    elapsed = time.perf_counter() - start
    p = latency_percentiles(latencies_ms, digits=6)
    return LoadResult(f"in-process batch={batch}", served / elapsed, p["p50_ms"], p["p95_ms"],
                      p["p99_ms"])


def step_ceilings(pipeline: InProcessEnsemble, queries: list[str],
                  batches: tuple[int, ...] = (1, 8)) -> list[dict]:
    """Each step's own time per query in process (one thread of work, no server), at each
    batch size; 1000 / that is the most queries a second one core could give the step."""
    rows: dict[str, dict] = {}
    for batch in batches:
        for _ in range(2):  # the first pass warms up
            timings: dict[str, float] = {}
            for i in range(0, len(queries), batch):
                pipeline(search_request(queries[i:i + batch], K), timings)
        for step, seconds in timings.items():
            rows.setdefault(step, {"step": step})[f"ms_per_query_batch{batch}"] = round(
                seconds / len(queries) * 1e3, 3)
    return list(rows.values())


def retrieval_agreement(repository: Path, queries: list[str], batch: int = 8) -> dict:
    """The served retrieval step's candidates (the INT8 shortlist rescored, with precision
    int8) against the exact ones the offline evaluator computes (`dense_candidates`: numpy,
    float32), for the same query vectors, `batch` queries a call."""
    from fusionrank.core import artefacts
    from fusionrank.core.encoding import (
        MAX_QUERY_TOKENS,
        OnnxEncoder,
        TextEncoder,
        TextTokenizer,
    )
    from fusionrank.core.search.runtime import dense_candidates
    from fusionrank.model_repository.config import model_of_step, served_version
    from fusionrank.model_repository.runner import step_parameters
    from fusionrank.model_repository.search.steps import Retrieve

    encoding = served_version(repository, model_of_step(repository, SEARCH_MODEL,
                                                        "EncodeQueries"))
    vectors = TextEncoder(TextTokenizer(encoding / artefacts.TOKENIZER, MAX_QUERY_TOKENS),
                          OnnxEncoder(encoding / artefacts.ENCODER)).encode(queries)
    model = model_of_step(repository, SEARCH_MODEL, "Retrieve")
    retrieve = Retrieve(served_version(repository, model),
                        step_parameters(read_config(repository, model)))
    served = [retrieve([{"EMBEDDING": vectors[i:i + batch],
                         "K": np.full((len(vectors[i:i + batch]), 1), K, np.int32)}])[0]
              for i in range(0, len(vectors), batch)]
    rows = np.concatenate([s["CANDIDATES"] for s in served])
    similarity = np.concatenate([s["SIMILARITY"] for s in served])
    manifest = json.loads((repository / artefacts.REPOSITORY_MANIFEST).read_text())
    embeddings = artefacts.load_array(manifest["index"]["embeddings"], mmap=True)
    exact_rows, exact_similarity = dense_candidates(embeddings, vectors, rows.shape[1])
    return {"graph": sorted(p.name for p in served_version(repository, model).glob(
                "retrieval*.onnx")),
            "queries": len(queries), "candidates": int(rows.shape[1]),
            "same_products": int(sum(set(a) == set(b) for a, b in zip(
                rows.tolist(), exact_rows.tolist(), strict=True))),
            "same_order": int((rows == exact_rows).all(axis=1).sum()),
            "max_cosine_difference": float(np.abs(similarity - exact_similarity).max())}


def at(results: list[LoadResult], mode: str) -> LoadResult:
    return next(r for r in results if r.mode.split(" (")[0] == mode)


def model_statistics(url: str) -> dict[str, dict]:
    """Triton's cumulative statistics of every model, by name."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics("", as_json=True)
    finally:
        client.close()
    return {m["name"]: m for m in stats.get("model_stats", [])}


def _ns(stats: dict, *path: str) -> float:
    for key in path:
        stats = stats.get(key, {})
    return float(stats or 0)


def step_times(before: dict[str, dict], after: dict[str, dict]) -> list[dict]:
    """Per model, over the window between two statistics: requests, executions (dynamic
    batches), mean batch, mean queue wait per request and mean compute per execution."""
    rows = []
    for name, now in after.items():
        then = before.get(name, {})
        requests = _ns(now, "inference_stats", "success", "count") - _ns(
            then, "inference_stats", "success", "count")
        executions = _ns(now, "execution_count") - _ns(then, "execution_count")
        if requests <= 0 or executions <= 0:
            continue
        compute = sum(_ns(now, "inference_stats", part, "ns") - _ns(then, "inference_stats",
                                                                       part, "ns")
                      for part in ("compute_input", "compute_infer", "compute_output"))
        queue = _ns(now, "inference_stats", "queue", "ns") - _ns(then, "inference_stats",
                                                                 "queue", "ns")
        inferences = _ns(now, "inference_count") - _ns(then, "inference_count")
        rows.append({"model": name, "requests": int(requests), "executions": int(executions),
                     "mean_batch": round(inferences / executions, 2),
                     "queue_ms_per_request": round(queue / requests / 1e6, 3),
                     "compute_ms_per_execution": round(compute / executions / 1e6, 3),
                     "compute_ms_per_query": round(compute / max(inferences, 1) / 1e6, 3)})
    return sorted(rows, key=lambda r: -r["compute_ms_per_query"])


def cache_hit_rate(before: dict[str, dict], after: dict[str, dict]) -> dict:
    then, now = before.get(SEARCH_MODEL, {}), after.get(SEARCH_MODEL, {})
    hits = _ns(now, "inference_stats", "cache_hit", "count") - _ns(
        then, "inference_stats", "cache_hit", "count")
    misses = _ns(now, "inference_stats", "cache_miss", "count") - _ns(
        then, "inference_stats", "cache_miss", "count")
    return {"cache_hits": int(hits), "cache_misses": int(misses),
            "hit_rate": round(hits / max(hits + misses, 1), 4)}


def plot(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    precision = s["serving"]["precision"].upper()
    series = [("distinct", f"{precision} encoder, distinct queries, no cache"),
              *((f"{p} distinct", f"{p.upper()} encoder, distinct queries, no cache")
                for p in ("fp32", "int8")),
              ("zipf cached", f"{precision}, Zipf({s['zipf']['exponent']}) replay, cached")]
    for prefix, label in series:
        rows = [r for r in s["results"] if r["mode"].startswith(prefix + " c=")]
        if not rows:
            continue
        levels = [int(r["mode"].split("c=")[1].split()[0]) for r in rows]
        left.plot(levels, [r["throughput_qps"] for r in rows], marker="o", label=label)
        right.plot(levels, [r["p99_ms"] for r in rows], marker="o", label=label)
    peer = s.get("peer")
    if peer:
        label = f"FastAPI + PyTorch peer, {peer['workers']} workers (search_peer.md)"
        left.plot(peer["levels"], peer["qps"], marker="s", linestyle="--", label=label)
        right.plot(peer["levels"], peer["p99_ms"], marker="s", linestyle="--", label=label)
    for axis, title in ((left, "queries / s"), (right, "p99 latency, ms")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("concurrency")
        axis.set_title(title)
        axis.grid(alpha=0.3, which="both")
    left.legend(fontsize=7)
    figure.suptitle(f"search over {s['catalogue_products']} products ({served_model(s)})")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --- build ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path,
                        help="serve this trained run (fused pipeline) instead of the pretrained "
                             "encoder alone")
    parser.add_argument("--build", type=Path,
                        help="build folder (default build/homedepot, build/homedepot_fused)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the model repository")
    parser.add_argument("--max-queue-delay-us", type=int, default=ServingOptions.max_queue_delay_us,
                        help="dynamic batching delay of the batched steps (with --rebuild)")
    parser.add_argument("--onnx-threads", type=int, default=ServingOptions.onnx_threads,
                        help="ONNX Runtime threads per model copy (with --rebuild)")
    parser.add_argument("--encoder-instances", type=int,
                        default=ServingOptions.encoder_instances, help="(with --rebuild)")
    parser.add_argument("--ranker-instances", type=int,
                        default=ServingOptions.ranker_instances, help="(with --rebuild)")
    parser.add_argument("--layout", choices=LAYOUTS, default=ServingOptions.layout,
                        help="how the steps are grouped into models (with --rebuild)")
    parser.add_argument("--precision", choices=["fp32", "int8"],
                        default=ServingOptions.precision,
                        help="query encoder precision (with --rebuild)")
    parser.add_argument("--compare-precision", choices=["fp32", "int8"],
                        help="also build BUILD_<precision> with the query encoder in this "
                             "precision and load it with the same distinct queries")
    parser.add_argument("--evaluation", type=Path,
                        help="the run's `fusionrank evaluate` report (evaluation.json): its "
                             "fused FP32 and INT8 rows go into the report")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement window")
    parser.add_argument("--concurrency", default="1,2,4,8,16",
                        help="comma-separated concurrency levels (must include 8)")
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of the replay")
    parser.add_argument("--zipf-requests", type=int, default=20_000)
    parser.add_argument("--cache-mib", type=int, default=256,
                        help="the response cache of the Zipf replay's server")
    parser.add_argument("--refresh-peer", action="store_true",
                        help="only rewrite search_fused.md/.png with the peer's latest report "
                             "(after python -m benchmarks.search_peer ran)")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> list[Path]:
    """The model repositories to load, built first where missing (or with --rebuild): the one
    measured, and with --compare-precision the same with the other query encoder."""
    folder = args.build or Path("build/homedepot_fused" if args.run else "build/homedepot")
    options = ServingOptions(max_queue_delay_us=args.max_queue_delay_us,
                             onnx_threads=args.onnx_threads,
                             encoder_instances=args.encoder_instances,
                             ranker_instances=args.ranker_instances,
                             layout=args.layout, precision=args.precision)
    builds = [(folder, options)]
    if args.compare_precision:
        builds.append((folder.with_name(f"{folder.name}_{args.compare_precision}"),
                       replace(options, precision=args.compare_precision)))
    catalogue = None
    for folder, folder_options in builds:
        if args.rebuild or not (folder / "model_repository" / "search" / "config.pbtxt").is_file():
            if catalogue is None:
                catalogue, report = homedepot_catalogue()
                print(report.summary(), file=sys.stderr)
            build_search_repository(catalogue, bundled_model_path(), folder, folder_options,
                                    run_dir=args.run)
    return [folder / "model_repository" for folder, _ in builds]


# --- measure ----------------------------------------------------------------------------------


@dataclass
class Measured:
    """Everything one run measures, before it is summarised."""

    reference: list[LoadResult]  # in process, one query a call and 8
    ceilings: list[dict]  # each step alone, in process
    agreement: dict  # served retrieval against the exact one
    results: list[LoadResult]  # through Triton: distinct queries, then the Zipf replay
    steps: list[dict]  # per model, at the highest concurrency, distinct queries
    idle_mib: float
    peak_mib: float
    replay: list[str]
    cache: dict


def measure_in_process(repository: Path, queries: list[str], seconds: float
                       ) -> tuple[list[LoadResult], list[dict], dict]:
    """The in-process reference (batch 1 and 8), each step's ceiling and the retrieval check."""
    pipeline = InProcessEnsemble(repository, SEARCH_MODEL)
    reference = [in_process(pipeline, queries, batch, seconds) for batch in (1, 8)]
    ceilings = step_ceilings(pipeline, queries[:512])
    del pipeline  # its models' memory, before a server loads them again
    return reference, ceilings, retrieval_agreement(repository, queries)


def load_levels(server: TritonServer, data: Path, levels: list[int], seconds: float,
                mode: str) -> list[LoadResult]:
    """perf_analyzer at each concurrency, the rows named `{mode} c=N`."""
    results = []
    for concurrency in levels:
        results.append(perf_analyzer(server.grpc_url, data, concurrency, seconds,
                                     f"{mode} c={concurrency}"))
        print(results[-1], file=sys.stderr)
    return results


def measure_served(args: argparse.Namespace, repositories: list[Path], queries: list[str],
                   tmp: Path) -> tuple[list[LoadResult], dict]:
    """Through Triton: distinct queries without a cache (what computing an answer costs; the
    other precision's build too, with --compare-precision), then the Zipf replay of the same
    queries through the response cache. The rows, and the figures beside them."""
    levels = [int(c) for c in args.concurrency.split(",")]
    data = perf_analyzer_input(queries, tmp / "queries.json")
    with (tmp / "triton.log").open("w") as log, \
            TritonServer(repositories[0], log=log, cache_mib=0) as server:
        figures = {"idle_mib": process_tree_rss_mib(server.process.pid)}
        memory = PeakMemory(server.process.pid)
        memory.start()
        results = load_levels(server, data, levels[:-1], args.seconds, "distinct")
        before = model_statistics(server.grpc_url)  # the last level's window
        results += load_levels(server, data, levels[-1:], args.seconds, "distinct")
        figures["steps"] = step_times(before, model_statistics(server.grpc_url))
        figures["peak_mib"] = memory.stop()
    for other in repositories[1:]:
        with (tmp / "triton_other.log").open("w") as log, \
                TritonServer(other, log=log, cache_mib=0) as server:
            results += load_levels(server, data, levels, args.seconds,
                                   f"{args.compare_precision} distinct")
    figures["replay"] = zipf_replay(queries, args.zipf_requests, args.zipf)
    with (tmp / "triton_cached.log").open("w") as log, \
            TritonServer(repositories[0], log=log, cache_mib=args.cache_mib) as server:
        data = perf_analyzer_input(figures["replay"], tmp / "zipf.json")
        before = model_statistics(server.grpc_url)
        results += load_levels(server, data, levels, args.seconds, "zipf cached")
        figures["cache"] = cache_hit_rate(before, model_statistics(server.grpc_url))
    return results, figures


def measure(args: argparse.Namespace, repositories: list[Path], queries: list[str]
            ) -> Measured:
    reference, ceilings, agreement = measure_in_process(repositories[0], queries, args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        results, figures = measure_served(args, repositories, queries, Path(tmp))
    return Measured(reference, ceilings, agreement, results, **figures)


# --- report -----------------------------------------------------------------------------------


def summarise(args: argparse.Namespace, repository: Path, queries: list[str], m: Measured
              ) -> dict:
    manifest = json.loads((repository / "fusionrank.json").read_text())
    c8 = at(m.results, "distinct c=8").throughput_qps
    summary = {
        **stamp(),
        "catalogue_products": manifest["index"]["products"],
        "queries": len(queries), "k": K,
        "serving": manifest["serving"],
        "results": [asdict(r) for r in [*m.results, *m.reference]],
        "zipf": {"exponent": args.zipf, "requests": len(m.replay),
                 "distinct_in_replay": len(set(m.replay)), "cache_mib": args.cache_mib,
                 **m.cache},
        f"steps_at_c{int(args.concurrency.split(',')[-1])}": m.steps,
        "step_ceilings": m.ceilings,
        "retrieval_agreement": m.agreement,
        "server_rss_idle_mib": round(m.idle_mib, 1),
        "server_rss_peak_mib": round(m.peak_mib, 1),
        "c8_over_in_process_one_by_one": round(c8 / m.reference[0].throughput_qps, 3),
        "c8_over_best_in_process": round(c8 / max(r.throughput_qps for r in m.reference), 3),
    }
    if args.evaluation:
        summary["quality"] = served_quality(args.evaluation, manifest)
    if manifest.get("training_run"):  # the peer serves a trained run
        summary["peer"] = peer_summary()
    summary["pipeline"] = " → ".join(s.model_name for s in
                                     read_config(repository, "search").ensemble_scheduling.step)
    summary["training_run"] = manifest.get("training_run")
    summary["plot"] = f"{report_name(summary)}.png"
    return summary


def served_quality(evaluation_file: Path, manifest: dict) -> dict:
    """The evaluation's rows of the ranking the build serves (a cascade's, where it ranks in
    one), with the FP32 and the INT8 query encoder: the student's where the build serves one
    (an evaluation with `--student`)."""
    evaluation = json.loads(evaluation_file.read_text())
    cascade = (manifest.get("ranking") or {}).get("cascade")
    fused = f"fused, cascade {cascade['depth']}" if cascade else "fused"
    names = (f"{fused}, student query encoder", f"{fused}, student int8 query encoder") \
        if manifest.get("query_encoder") else (fused, f"{fused}, int8 query encoder")
    return {"source": str(evaluation_file), "run": evaluation["run"],
            "splits": {split: {name: evaluation["retrieval"][split][name] for name in names}
                       for split in ("dev", "test")}}


def report_name(summary: dict) -> str:
    return "search_fused" if summary.get("training_run") else "search"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.refresh_peer:
        summary = json.loads((REPORTS / "search_fused.json").read_text())
        summary["peer"] = peer_summary()
    else:
        repositories = build(args)
        queries = benchmark_queries(args.queries)
        summary = summarise(args, repositories[0], queries,
                            measure(args, repositories, queries))
    write_report(summary, report_name(summary))
    return 0


def peer_summary() -> dict | None:
    """The peer's figures from its own report (benchmarks/search_peer.py), for the plot."""
    report = REPORTS / "search_peer.json"
    if not report.is_file():
        return None
    peer = json.loads(report.read_text())
    return {"date": peer["date"], "workers": peer["peer_workers"],
            "levels": [r["concurrency"] for r in peer["peer"]],
            "qps": [r["throughput_qps"] for r in peer["peer"]],
            "p99_ms": [r["p99_ms"] for r in peer["peer"]],
            # Triton in the peer's run: the same client program, the same minutes.
            "triton_qps": [r["throughput_qps"] for r in peer["triton"]]}


def write_report(summary: dict, name: str) -> None:
    save_report(name, summary, markdown(summary))
    plot(summary, REPORTS / f"{name}.png")


def served_model(s: dict) -> str:
    run = s["training_run"]
    return f"trained run {run['run']}" if run else "pretrained all-MiniLM-L6-v2"


def targets(s: dict) -> list[tuple[str, str, bool]]:
    """Issue 10's serving targets for the fused pipeline: (target, measured, met)."""
    results = {r["mode"].split(" (")[0]: r for r in s["results"]}
    c1, c8 = results.get("distinct c=1"), results.get("distinct c=8")
    zipf8 = results.get("zipf cached c=8")
    rows = []
    if c8:
        rows += [("distinct queries, concurrency 8: ≥ 500 q/s", f"{c8['throughput_qps']:.0f}",
                  c8["throughput_qps"] >= 500),
                 ("distinct queries, concurrency 8: p99 ≤ 30 ms", f"{c8['p99_ms']:.1f} ms",
                  c8["p99_ms"] <= 30)]
    if c1:
        rows.append(("distinct queries, concurrency 1: p50 ≤ 5 ms", f"{c1['p50_ms']:.1f} ms",
                     c1["p50_ms"] <= 5))
    rows.append(("Triton ≥ 0.8 × the in-process pipeline's best",
                 f"{s['c8_over_best_in_process']:.2f}×", s["c8_over_best_in_process"] >= 0.8))
    if zipf8:
        rows.append(("Zipf replay, cached, concurrency 8: ≥ 3,000 q/s",
                     f"{zipf8['throughput_qps']:.0f}", zipf8["throughput_qps"] >= 3000))
    if s.get("peer") and 8 in s["peer"]["levels"]:
        at8 = s["peer"]["levels"].index(8)
        peer, triton = s["peer"]["qps"][at8], s["peer"]["triton_qps"][at8]
        rows.append(("≥ 3 × the peer's q/s at concurrency 8 (search_peer.md: both in one run)",
                     f"{triton / peer:.2f}× (Triton {triton:.0f}, peer {peer:.0f} q/s, "
                     f"{s['peer']['workers']} worker(s))", triton >= 3 * peer))
    rows.append(("server memory at peak ≤ 1.5 GiB", f"{s['server_rss_peak_mib']:.0f} MiB",
                 s["server_rss_peak_mib"] <= 1536))
    return rows




def quality_section(s: dict) -> str:
    """The served run's ranking quality (with --evaluation) and the retrieval check."""
    text = ""
    if s.get("quality"):
        rows = [[split, name, f"{m['ndcg@10']:.4f}", f"{m['recall@100']:.4f}"]
                for split, systems in s["quality"]["splits"].items()
                for name, m in systems.items()]
        text = ("Ranking quality of the served ranking, FP32 against INT8 query encoder (one "
                f"`fusionrank evaluate` run: `{s['quality']['source']}`):\n\n"
                + table(["split", "system", "NDCG@10", "Recall@100"], rows) + "\n\n")
    a = s.get("retrieval_agreement")
    if a:
        text += (f"Served retrieval (`{', '.join(a['graph'])}`) against the exact float32 "
                 f"top {a['candidates']} by cosine that `fusionrank evaluate` computes, for "
                 f"the same {a['queries']} query vectors, 8 a call: the same products for "
                 f"**{a['same_products']}** of them, in the same order for "
                 f"{a['same_order']} (elsewhere two cosines within float32 rounding of "
                 "each other swap places); largest cosine difference "
                 f"{a['max_cosine_difference']:.1e}.\n\n")
    if s.get("training_run"):
        rows = [[target, measured, "yes" if met else "**no**"]
                for target, measured, met in targets(s)]
        text += ("Issue 10's targets for the fused pipeline:\n\n"
                 + table(["target", "measured", "met"], rows) + "\n\n")
    return text


def markdown(s: dict) -> str:
    results = table(["mode", "queries / s", "p50 ms", "p95 ms", "p99 ms"],
                    [[r["mode"], f"{r['throughput_qps']:.1f}", f"{r['p50_ms']:.2f}",
                      f"{r['p95_ms']:.2f}", f"{r['p99_ms']:.2f}"] for r in s["results"]])
    step_key = next(k for k in s if k.startswith("steps_at_c"))
    steps = table(["model", "requests", "executions", "mean batch", "queue ms / request",
                   "compute ms / batch", "compute ms / query"],
                  [[r["model"], r["requests"], r["executions"], r["mean_batch"],
                    r["queue_ms_per_request"], r["compute_ms_per_execution"],
                    r["compute_ms_per_query"]] for r in s[step_key]])
    total1 = sum(r["ms_per_query_batch1"] for r in s["step_ceilings"])
    total8 = sum(r["ms_per_query_batch8"] for r in s["step_ceilings"])
    ceilings = table(["step", "ms / query, batch 1", "ms / query, batch 8"],
                     [[r["step"], r["ms_per_query_batch1"], r["ms_per_query_batch8"]]
                      for r in s["step_ceilings"]]
                     + [["**all steps**", f"**{total1:.3f}**", f"**{total8:.3f}**"]])
    zipf = s["zipf"]
    return heading(
        "Search serving benchmark", s,
        f"Catalogue: {s['catalogue_products']} Home Depot products; {s['queries']} distinct real "
        f"search\n  terms, K = {s['k']}; perf_analyzer over gRPC against the `search` ensemble.",
        f"Pipeline: {s['pipeline']} ({served_model(s)})",
        f"Serving options: `{json.dumps(s['serving'])}`") + f"""
{results}

{quality_section(s)}Throughput at concurrency 8 over the in-process pipeline's:
**{s['c8_over_in_process_one_by_one']:.2f}** against one query per call (a stream of single
queries),
**{s['c8_over_best_in_process']:.2f}** against its best, 8 queries per call.

Resident memory of tritonserver with all its model processes: {s['server_rss_idle_mib']:.0f} MiB
when ready, {s['server_rss_peak_mib']:.0f} MiB at peak under load.

The Zipf replay: {zipf['requests']} requests drawn from the {s['queries']} queries with
P(rank r) ∝ r^-{zipf['exponent']} ({zipf['distinct_in_replay']} distinct), against a
server with a {zipf['cache_mib']} MiB response cache: hit rate
**{zipf['hit_rate']:.1%}** ({zipf['cache_hits']} hits, {zipf['cache_misses']}
misses over all its concurrency levels). perf_analyzer loops over the replay, so after its first
pass every query of it is cached; one pass alone would miss once per distinct query
({1 - zipf['distinct_in_replay'] / zipf['requests']:.1%} hits). Distinct-query rows
ran with the cache off.

![throughput and p99 against concurrency]({s['plot']})

Where the time goes at the highest concurrency, distinct queries (Triton's per-model
statistics; an execution is one dynamic batch):

{steps}

Each step alone, in process (the ceiling it sets: one core gives it at most 1000 / ms
queries a second; two cores at most twice that, for all steps together):

{ceilings}

The ceiling these set: two cores running every step with no server at all would serve at most
2 × 1000 / {total8:.2f} = **{2000 / total8:.0f} queries/s** at 8 queries a call (500 queries/s
needs at most 4 ms of core time a query, server included), and one query alone takes
**{total1:.1f} ms** in process before any server work (against a p50 target of 5 ms).

Why each step costs what it does, kernel by kernel (ONNX Runtime's profiler, the matrix
products' work against what one core reaches), and what that leaves for the server:
[search_kernels.md](search_kernels.md), from `python -m benchmarks.search_kernels` run after
this benchmark on the same build.

In-process rows run the model repository's own steps, as its config wires them
(`InProcessEnsemble`), in one Python process with no server; latency there is per call (a call
carries `batch` queries).
"""


if __name__ == "__main__":
    sys.exit(main())
