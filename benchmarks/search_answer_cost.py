"""What a search answer costs at each DETAIL level (issue 21, item 8), client and server, in
one run against one server: today's SDK search before this change (no DETAIL input, every
output asked for and parsed: the whole answer) against the light answer a plain search now
asks for (DETAIL ids: ids and scores alone) and the one with product metadata.

Per call and level: the bytes of the gRPC response message and the outputs it carries, the
client's decode time (the protobuf message parsed, then the SDK's parse into hits), the
latency at concurrency 1, the server's compute for the model running the Rank step (Triton's
per-model statistics: input, infer, output) and the Rank step's own time in process (the
repository's steps through InProcessEnsemble, timed per step). Every call computes: the
server runs without a response cache.

    .venv/bin/python -m benchmarks.search_answer_cost                # build/model_repository
    .venv/bin/python -m benchmarks.search_answer_cost --repository DIR --queries 300 --k 10,100

Writes benchmarks/reports/search_answer_cost.md and .json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2

from benchmarks.harness import (
    catalogue_queries,
    heading,
    latency_percentiles,
    save_report,
    stamp,
    table,
)
from benchmarks.search_benchmark import model_statistics
from fusionrank.app.serve import TritonServer
from fusionrank.client.search import parse_explained, parse_hits, search_inputs
from fusionrank.core import artefacts
from fusionrank.core.contract import TensorSpec
from fusionrank.core.search.contract import SEARCH_MODEL, Detail, search_request
from fusionrank.model_repository.config import model_of_step, read_config
from fusionrank.model_repository.runner import InProcessEnsemble


@dataclass(frozen=True)
class Level:
    """One way of calling search: the DETAIL sent (None: none, as the SDK did before it
    existed), the outputs asked for and how the answer is parsed."""

    name: str
    detail: Detail | None
    parse_as: Detail  # the SDK parse the caller runs on the answer

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (self.detail or Detail.EXPLAIN).outputs


LEVELS = (
    # Before: `search` sent QUERY and K, asked for every output and parsed ids, scores and
    # products (the cache workaround: a cached search answer had to serve an explain too).
    Level("before: search, whole answer", None, Detail.PRODUCTS),
    Level("now: search (DETAIL ids)", Detail.IDS, Detail.IDS),
    Level("now: search(products=True)", Detail.PRODUCTS, Detail.PRODUCTS),
    Level("now: explain (DETAIL explain)", Detail.EXPLAIN, Detail.EXPLAIN),
)


def request(level: Level, query: str, k: int) -> tuple[list, list]:
    inputs = search_inputs([query], k, level.detail or Detail.EXPLAIN, module=grpcclient)
    if level.detail is None:  # the request as the SDK sent it before DETAIL
        inputs = [tensor for tensor in inputs if tensor.name() != "DETAIL"]
    return inputs, [grpcclient.InferRequestedOutput(spec.name) for spec in level.outputs]


def decode(level: Level, query: str, message: bytes) -> object:
    """What the client does with an answer's bytes: parse the protobuf message, then the SDK's
    parse into hits (explain: into SearchAnswers)."""
    result = grpcclient.InferResult(service_pb2.ModelInferResponse.FromString(message))
    if level.parse_as is Detail.EXPLAIN:
        return parse_explained([query], result)
    return parse_hits(result, level.parse_as)


def rank_model_stats(before: dict, after: dict, model: str) -> dict[str, float]:
    """Per request, over a window: the model's compute (input, infer, output) in ms."""
    def ns(stats: dict, part: str) -> float:
        return float(stats.get(model, {}).get("inference_stats", {}).get(part, {}).get("ns", 0))

    def count(stats: dict) -> float:
        return float(stats.get(model, {}).get("inference_stats", {}).get("success", {})
                     .get("count", 0))

    requests = max(count(after) - count(before), 1)
    parts = {part: (ns(after, f"compute_{part}") - ns(before, f"compute_{part}")) / requests / 1e6
             for part in ("input", "infer", "output")}
    return {**{f"compute_{part}_ms": round(v, 4) for part, v in parts.items()},
            "compute_ms": round(sum(parts.values()), 4), "requests": int(requests)}


@dataclass
class Measured:
    latencies: list[float]
    decode: list[float]
    response_bytes: list[int]
    outputs: int
    server: dict
    rankings: list[tuple[list[bytes], bytes]]


def measure(client: grpcclient.InferenceServerClient, url: str, model: str, level: Level,
            queries: list[str], k: int, decodes: int) -> Measured:
    latencies, decode_s, sizes, rankings = [], [], [], []
    carried = 0
    before = model_statistics(url)
    for query in queries:
        inputs, outputs = request(level, query, k)
        start = time.perf_counter()
        result = client.infer(SEARCH_MODEL, inputs, outputs=outputs)
        latencies.append(time.perf_counter() - start)
        response = result.get_response()
        carried = len(response.outputs)
        message = response.SerializeToString()
        sizes.append(len(message))
        rankings.append((result.as_numpy("PRODUCT_IDS")[0].tolist(),
                         result.as_numpy("SCORES")[0].tobytes()))
        times = []
        for _ in range(decodes):  # the best of a few: the decode alone, without the noise
            start = time.perf_counter()
            decode(level, query, message)
            times.append(time.perf_counter() - start)
        decode_s.append(min(times))
    server = rank_model_stats(before, model_statistics(url), model)
    return Measured(latencies, decode_s, sizes, carried, server, rankings)


def rank_step_ms(repository: Path, queries: list[str], k: int) -> dict[str, float]:
    """The Rank step's own time per call (one query a call) in process, at each level, over the
    same queries: the median over calls (the machine is shared: spikes hit single calls).
    Levels alternate query by query so drift touches them alike."""
    pipeline = InProcessEnsemble(repository, SEARCH_MODEL)
    per_call: dict[str, list[float]] = {level.name: [] for level in LEVELS}
    for passes in range(2):  # the first pass warms up
        for calls in per_call.values():
            calls.clear()
        for query in queries:
            for level in LEVELS if passes % 2 == 0 else reversed(LEVELS):
                timings: dict[str, float] = {}
                pipeline(search_request([query], k, level.detail), timings)
                per_call[level.name].append(timings["Rank"])
    return {name: round(statistics.median(calls) * 1e3, 4) for name, calls in per_call.items()}


def summarise(level: Level, m: Measured, rank_ms: float) -> dict:
    return {"level": level.name, "detail": level.detail.value if level.detail else None,
            "outputs_asked": len(level.outputs), "outputs_carried": m.outputs,
            "response_bytes_per_call": round(statistics.mean(m.response_bytes), 1),
            "decode_us_per_call": round(statistics.median(m.decode) * 1e6, 2),
            "latency_p50_ms": latency_percentiles([s * 1e3 for s in m.latencies], (50,),
                                                  digits=3)["p50_ms"],
            "latency_mean_ms": round(statistics.mean(m.latencies) * 1e3, 3),
            "rank_model": m.server, "rank_step_in_process_ms_per_call": rank_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=Path("build/model_repository"))
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", default="10,100", help="comma-separated K values")
    parser.add_argument("--decodes", type=int, default=5,
                        help="times each answer is decoded (the fastest counts)")
    parser.add_argument("--out", default="search_answer_cost",
                        help="report name, under benchmarks/reports/")
    args = parser.parse_args()
    repository = args.repository.resolve()
    inputs = {i.name for i in read_config(repository, SEARCH_MODEL).input}
    if "DETAIL" not in inputs:
        raise SystemExit(f"{repository} was built before the DETAIL input: rebuild it "
                         "(`fusionrank build --out DIR`)")
    manifest = json.loads((repository / artefacts.REPOSITORY_MANIFEST).read_text())
    queries = catalogue_queries(repository, args.queries)
    ks = [int(k) for k in args.k.split(",")]
    model = model_of_step(repository, SEARCH_MODEL, "Rank")

    rows: dict[int, list[dict]] = {}
    same: dict[int, bool] = {}
    in_process = {k: rank_step_ms(repository, queries, k) for k in ks}
    with tempfile.TemporaryDirectory() as tmp, (Path(tmp) / "triton.log").open("w") as log, \
            TritonServer(repository, log=log, cache_mib=0) as server, \
            grpcclient.InferenceServerClient(server.grpc_url) as client:
        for k in ks:
            for level in LEVELS:  # warm-up: every path loaded, every model copy busy once
                measure(client, server.grpc_url, model, level, queries[:20], k, 1)
            # Two passes, the levels in opposite orders, so drift touches them alike.
            halves = {level.name: [] for level in LEVELS}
            for order in (LEVELS, tuple(reversed(LEVELS))):
                for level in order:
                    halves[level.name].append(measure(client, server.grpc_url, model, level,
                                                      queries, k, args.decodes))
            merged = {}
            for level in LEVELS:
                a, b = halves[level.name]
                server_stats = {key: round((a.server[key] + b.server[key]) / 2, 4)
                                for key in a.server if key != "requests"}
                merged[level.name] = Measured(
                    a.latencies + b.latencies, a.decode + b.decode,
                    a.response_bytes + b.response_bytes, a.outputs,
                    {**server_stats, "requests": a.server["requests"] + b.server["requests"]},
                    a.rankings)
            whole = merged[LEVELS[0].name].rankings
            same[k] = all(m.rankings == whole for m in merged.values())
            rows[k] = [summarise(level, merged[level.name], in_process[k][level.name])
                       for level in LEVELS]
            print(json.dumps(rows[k], indent=1), file=sys.stderr)

    report = {
        **stamp(),
        "repository": str(repository),
        "catalogue": manifest["index"].get("catalogue_source"),
        "catalogue_products": manifest["index"]["products"],
        "served_model": (f"trained run {manifest['training_run']['run']}"
                         if manifest.get("training_run") else "the pretrained encoder alone"),
        "rank_model": model,
        "queries": len(queries), "calls_per_level_and_k": 2 * len(queries),
        "same_ranking_at_every_level": same,
        "results": {str(k): r for k, r in rows.items()},
    }
    save_report(args.out, report, markdown(report))
    return 0


def ratio(light: float, whole: float) -> str:
    return f"{light / whole:.2f}×" if whole else "–"


def comparison(light: dict, whole: dict) -> str:
    """The light search's figures over the whole answer's, in words."""
    pairs = [("the bytes", lambda row: row["response_bytes_per_call"]),
             ("the client decode time", lambda row: row["decode_us_per_call"]),
             ("the server's output time", lambda row: row["rank_model"]["compute_output_ms"]),
             ("the Rank step's time", lambda row: row["rank_step_in_process_ms_per_call"]),
             ("the latency", lambda row: row["latency_p50_ms"])]
    return ", ".join(f"**{ratio(value(light), value(whole))}** {what}" for what, value in pairs)


def server_noise(rows: list[dict]) -> str:
    """How the server's per-request compute moved between two rows doing the same work (the
    whole answer, with and without DETAIL explain), beside what the Rank step saves."""
    before, explain = rows[0], rows[-1]
    moved = abs(before["rank_model"]["compute_ms"] - explain["rank_model"]["compute_ms"])
    saved = (before["rank_step_in_process_ms_per_call"]
             - rows[1]["rank_step_in_process_ms_per_call"])
    return (f"The model's compute for the same work (first and last rows) differs by "
            f"{moved:.3f} ms in this run; the Rank step saves {saved:.3f} ms a call, so the "
            f"server-side saving is read in the last column, not in the model's totals.")


def markdown(r: dict) -> str:
    tables = []
    for k, rows in r["results"].items():
        whole = rows[0]
        lines = table(
            ["call", "outputs", "response bytes / call", "client decode µs / call",
             "latency p50 ms", f"{r['rank_model']} compute ms / request (of it: output)",
             "Rank step in process ms / call"],
            [[row["level"], row["outputs_carried"], f"{row['response_bytes_per_call']:,.0f}",
              f"{row['decode_us_per_call']:.1f}", f"{row['latency_p50_ms']:.2f}",
              f"{row['rank_model']['compute_ms']:.3f} "
              f"({row['rank_model']['compute_output_ms']:.3f})",
              f"{row['rank_step_in_process_ms_per_call']:.4f}"] for row in rows])
        tables.append(
            f"### K = {k}\n\n{lines}\n\nThe light search against the whole answer: "
            f"{comparison(rows[1], whole)}. "
            f"{server_noise(rows)}\n")
    same = ", ".join(f"K = {k}: {'yes' if v else '**no**'}"
                     for k, v in r["same_ranking_at_every_level"].items())
    return heading("What a search answer costs, by DETAIL level", r, f"""\
Repository: `{r['repository']}` (`{r['catalogue']}`, {r['catalogue_products']} products, serving
  {r['served_model']}); one tritonserver, no response cache (every call computes), one call at
  a time, {r['queries']} distinct queries from the catalogue's titles, each level called
  {r['calls_per_level_and_k']} times per K (two passes, the levels in opposite orders).""") + f"""
*Before*: the SDK's `search` before the DETAIL input: QUERY and K, every output asked for
(the response cache keyed answers on the inputs alone, so a cached search answer had to serve
an explain too), ids, scores and products parsed. *Now*: `search` sends DETAIL ids and asks for
PRODUCT_IDS and SCORES alone; `search(products=True)` and `explain` ask for their levels.

Columns: the gRPC response message's size; the client's decode (protobuf parse + the SDK's
parse into hits, the fastest of a few decodes of the same bytes, median over calls); latency at
concurrency 1 through gRPC; Triton's compute per request of `{r['rank_model']}`, the model that
runs the Rank step (with the whole pipeline in layout one: the Rank step's share is the
difference between rows; "output" is the time the answer's tensors take to leave the model);
the Rank step alone in process (InProcessEnsemble's per-step timings, median per call).

{chr(10).join(tables)}
Same ranking (ids and score bytes) at every level, every query: {same}.
"""


if __name__ == "__main__":
    sys.exit(main())
