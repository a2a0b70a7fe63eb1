"""Why each search step costs what it does: the served steps in process, each ONNX graph's
kernels by kind (matrix products, trees, the rest) from ONNX Runtime's own profiler, the work
of the matrix products (multiply-adds a query), and the rate they reach against what one core
of this machine reaches on a large matrix product of the same kind.

    .venv/bin/python -m benchmarks.search_kernels --build build/homedepot_fused

Writes benchmarks/reports/search_kernels.md and .json. Everything runs on one thread, 8 real
queries a call, as each copy of the served model runs them (`onnx_threads` 1).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from threadpoolctl import threadpool_limits

from benchmarks.harness import REPORTS, benchmark_queries, heading, save_report, stamp, table
from benchmarks.search_benchmark import K
from fusionrank.core import artefacts
from fusionrank.core.encoding import ONNX_OPSET, onnx_session
from fusionrank.core.search.contract import SEARCH_MODEL, search_request
from fusionrank.export.quantize import ACCURACY_LEVEL, BITS, BLOCK
from fusionrank.model_repository.runner import InProcessEnsemble

BATCH = 8
PRODUCTS = ("MatMul", "Gemm", "FusedMatMul", "MatMulNBits", "MatMulInteger",
            "MatMulIntegerToFloat", "DynamicQuantizeMatMul")
INT8_PRODUCTS = ("MatMulNBits", "MatMulInteger", "MatMulIntegerToFloat",
                 "DynamicQuantizeMatMul")
TREES = ("TreeEnsembleRegressor", "TreeEnsemble", "TreeEnsembleClassifier")
# Where each served graph runs (its file in the version folder; the features graph is built
# from memory.npz at load, so it has no file).
GRAPH_STEP = {artefacts.ENCODER: "EncodeQueries", artefacts.RETRIEVAL: "Retrieve",
              artefacts.RETRIEVAL_INT8: "Retrieve", artefacts.FEEDBACK_HEAD: "ScoreCandidates",
              "features graph": "ScoreCandidates"}


@contextmanager
def watched_sessions(profile_to: Path | None) -> Iterator[list]:
    """Every ONNX Runtime session created inside, in order: each with `label` (its file's name,
    or "features graph") and `seconds` (spent in `run`), and ONNX Runtime's profiler on where
    `profile_to` is given."""
    sessions: list = []
    real = ort.InferenceSession

    class Watched(real):
        def __init__(self, source, options=None, **kwargs):
            name = Path(source).name if isinstance(source, str) else "features graph"
            if profile_to is not None:
                options.enable_profiling = True
                options.profile_file_prefix = str(profile_to / f"{len(sessions)}")
            super().__init__(source, options, **kwargs)
            self.label, self.seconds = name, 0.0
            sessions.append(self)

        def run(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return super().run(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

    ort.InferenceSession = Watched
    try:
        yield sessions
    finally:
        ort.InferenceSession = real


def serve_queries(pipeline: InProcessEnsemble, queries: list[str], passes: int = 2
                  ) -> dict[str, float]:
    """Seconds per step over the last pass (the first ones warm up)."""
    for _ in range(passes):
        timings: dict[str, float] = {}
        for i in range(0, len(queries), BATCH):
            pipeline(search_request(queries[i:i + BATCH], K), timings)
    return timings


def kernel_profile(path: str) -> dict:
    """One session's profile: kernel microseconds by kind, and the multiply-adds of its matrix
    products (the output's elements × the inner dimension, read from the recorded shapes), of
    the 8-bit ones and the float32 ones apart."""
    out = {"products_us": 0.0, "trees_us": 0.0, "other_us": 0.0,
           "macs": {"int8": 0.0, "fp32": 0.0}, "top": collections.Counter()}
    for event in json.loads(Path(path).read_text()):
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        op, args = event["args"]["op_name"], event["args"]
        out["top"][op] += event["dur"]
        if op in PRODUCTS:
            out["products_us"] += event["dur"]
            (first,) = args["input_type_shape"][0].values()
            (result,) = args["output_type_shape"][0].values()
            out["macs"]["int8" if op in INT8_PRODUCTS else "fp32"] += \
                float(np.prod(result)) * first[-1]
        elif op in TREES:
            out["trees_us"] += event["dur"]
        else:
            out["other_us"] += event["dur"]
    return out


def reference_rates(rows: int = 256, size: int = 1024, seconds: float = 2.0) -> dict:
    """What one core reaches: multiply-adds a second of a large matrix product in float32 and
    with 8-bit weights (MatMulNBits, int8 arithmetic, as the served encoder), and bytes a
    second read from memory (a max over 1 GiB, as retrieval scans its int8 catalogue)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    weight = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)

    def matmul() -> onnx.ModelProto:
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], "reference",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, size])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, size])],
            [numpy_helper.from_array(weight, "w")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])

    # Quantised as the served encoder is (export/quantize.py); the quantiser rewrites the
    # model it is given, so it gets its own.
    quantiser = MatMulNBitsQuantizer(matmul(), bits=BITS, block_size=BLOCK, is_symmetric=True,
                                     accuracy_level=ACCURACY_LEVEL)
    quantiser.process()
    x = np.random.default_rng(1).standard_normal((rows, size)).astype(np.float32)

    def rate(model: onnx.ModelProto) -> float:
        session = onnx_session(model.SerializeToString(), threads=1)
        session.run(None, {"x": x})
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            session.run(None, {"x": x})
            calls += 1
        return calls * rows * size * size / (time.perf_counter() - start)

    scanned = np.ones(1 << 30, dtype=np.uint8)
    scanned.max()
    start = time.perf_counter()
    scans = 3
    for _ in range(scans):
        scanned.max()
    bandwidth = scans * scanned.nbytes / (time.perf_counter() - start)
    return {"fp32_macs_per_s": rate(matmul()),
            "int8_macs_per_s": rate(quantiser.model.model),
            "memory_bytes_per_s": bandwidth,
            "shape": f"[{rows}, {size}] × [{size}, {size}]"}


def served_throughput(path: Path) -> dict | None:
    """The last search benchmark's distinct-query throughput at concurrency 8, if it ran."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    (c8,) = [r for r in saved["results"] if r["mode"] == "distinct c=8"]
    return {"c8_qps": c8["throughput_qps"], "date": saved["date"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=Path("build/homedepot_fused"),
                        help="a `fusionrank build` of the Home Depot catalogue, fused search")
    parser.add_argument("--queries", type=int, default=400)
    args = parser.parse_args()
    repository = args.build / "model_repository"
    queries = benchmark_queries(args.queries)

    with threadpool_limits(1, "blas"):  # as each served copy runs (triton_model.initialize)
        with watched_sessions(None) as sessions:
            pipeline = InProcessEnsemble(repository, SEARCH_MODEL)
        for _ in range(2):  # the first pass warms up
            for session in sessions:
                session.seconds = 0.0
            steps = serve_queries(pipeline, queries, passes=1)
        run_ms = {s.label: s.seconds / len(queries) * 1e3 for s in sessions}
        del pipeline
        with tempfile.TemporaryDirectory() as tmp:
            with watched_sessions(Path(tmp)) as profiled:
                pipeline = InProcessEnsemble(repository, SEARCH_MODEL)
            serve_queries(pipeline, queries)
            profiles = {s.label: kernel_profile(s.end_profiling()) for s in profiled}
        rates = reference_rates()

    graphs = []
    for label, profile in profiles.items():
        kernels = profile["products_us"] + profile["trees_us"] + profile["other_us"]
        share = {kind: profile[f"{kind}_us"] / kernels if kernels else 0.0
                 for kind in ("products", "trees", "other")}
        ms = run_ms[label]
        # Profiled over two passes: multiply-adds a query, by kind.
        macs = {kind: n / (2 * len(queries)) for kind, n in profile["macs"].items()}
        total_macs = sum(macs.values())
        at_reference_s = sum(n / rates[f"{kind}_macs_per_s"] for kind, n in macs.items())
        products_ms = ms * share["products"]
        graphs.append({
            "graph": label, "step": GRAPH_STEP.get(label, "?"), "ms_per_query": round(ms, 3),
            "products_ms": round(products_ms, 3), "trees_ms": round(ms * share["trees"], 3),
            "other_kernels_ms": round(ms * share["other"], 3),
            "products_mmacs_per_query": {kind: round(n / 1e6, 2) for kind, n in macs.items()},
            "achieved_gmacs": round(total_macs / (products_ms / 1e3) / 1e9, 1)
            if products_ms else None,
            "products_at_reference_ms": round(at_reference_s * 1e3, 3),
            "top_kernels": [op for op, _ in profile["top"].most_common(4)]})
    step_ms = {step: seconds / len(queries) * 1e3 for step, seconds in steps.items()}
    rows = []
    for step, ms in step_ms.items():
        own = [g for g in graphs if g["step"] == step]
        in_graphs = sum(g["ms_per_query"] for g in own)
        rows.append({"step": step, "ms_per_query": round(ms, 3),
                     "onnx_ms": round(in_graphs, 3),
                     "products_ms": round(sum(g["products_ms"] for g in own), 3),
                     "trees_ms": round(sum(g["trees_ms"] for g in own), 3),
                     "other_kernels_ms": round(sum(g["other_kernels_ms"] for g in own), 3),
                     "numpy_python_ms": round(ms - in_graphs, 3)})
    total = sum(r["ms_per_query"] for r in rows)
    products = sum(g["products_ms"] for g in graphs)
    products_floor = sum(g["products_at_reference_ms"] for g in graphs)
    report = {
        **stamp(), "queries": len(queries), "batch": BATCH, "reference": rates, "steps": rows,
        "graphs": graphs, "total_ms_per_query": round(total, 3),
        "products_ms_per_query": round(products, 3),
        "products_at_reference_ms_per_query": round(products_floor, 3),
        "everything_else_ms_per_query": round(total - products, 3),
        "served": served_throughput(REPORTS / "search_fused.json")}
    save_report("search_kernels", report, markdown(report))
    return 0


def markdown(r: dict) -> str:
    ref = r["reference"]
    total, served = r["total_ms_per_query"], served_paragraph(r)
    steps = table(["step", "all", "matrix products", "trees", "other ONNX kernels",
                   "numpy and Python"],
                  [[s["step"], *(f"{s[key]:.3f}" for key in (
                      "ms_per_query", "products_ms", "trees_ms", "other_kernels_ms",
                      "numpy_python_ms"))] for s in r["steps"]]
                  + [["**all**", f"**{total:.3f}**", "", "", "", ""]])
    graphs = table(["graph (step)", "ms / query", "M int8", "M fp32", "products ms",
                    "achieved G/s", "products at the reference rate, ms", "heaviest kernels"],
                   [[f"{g['graph']} ({g['step']})", f"{g['ms_per_query']:.3f}",
                     f"{g['products_mmacs_per_query']['int8']:.1f}",
                     f"{g['products_mmacs_per_query']['fp32']:.1f}", f"{g['products_ms']:.3f}",
                     f"{g['achieved_gmacs'] or 0:.1f}", f"{g['products_at_reference_ms']:.3f}",
                     ", ".join(g["top_kernels"])] for g in r["graphs"]])
    fp32, int8 = ref["fp32_macs_per_s"] / 1e9, ref["int8_macs_per_s"] / 1e9
    return heading(
        "Search steps at the kernel level: where each query's core time goes", r,
        f"{r['queries']} distinct real Home Depot search terms, {r['batch']} a call, K = 10, "
        "through\n  the served model repository's own steps in one process "
        "(`InProcessEnsemble`), one thread\n  (ONNX Runtime and BLAS), as each served copy "
        "runs. ONNX Runtime's profiler splits each\n  graph's kernel time by kind; the split "
        "is applied to the graph's unprofiled time.") + f"""
Each step, ms of one core a query:

{steps}

Each ONNX graph: its matrix products' work (million multiply-adds a query, 8-bit and float32),
the rate they reach (billion a second), and the time they would take at the rate one core
reaches on a large product of the same kind ({ref['shape']}, one thread: float32 MatMul
**{fp32:.1f}**, 8-bit weights with int8 arithmetic (MatMulNBits, as the encoder) **{int8:.1f}**
billion multiply-adds a second; memory reads at **{ref['memory_bytes_per_s'] / 1e9:.1f} GB/s**):

{graphs}

{served}
"""


def served_paragraph(r: dict) -> str:
    """The ceiling argument, against the served throughput of the last search benchmark."""
    total = r["total_ms_per_query"]
    trees = sum(g["trees_ms"] for g in r["graphs"])
    text = (f"In process, with no server, the steps need **{total:.2f} ms** of core time a "
            f"query: two cores give at most **{2000 / total:.0f} queries/s** before Triton, "
            "gRPC and the load generator take their share.")
    served = r.get("served")
    if not served:
        return text
    core = 2000 / served["c8_qps"]
    share = core - total  # the server's share of a served query's core time
    floor = r["products_at_reference_ms_per_query"] + trees
    budget = 4 - share
    kernels = sum(step["other_kernels_ms"] for step in r["steps"])
    python = sum(step["numpy_python_ms"] for step in r["steps"])
    rest = (f"the other ONNX kernels (attention, top-K, the memory's softmax; {kernels:.2f} ms "
            f"today) and the numpy and Python work (the feature arrays, BM25, the tokenizer, the "
            f"glue; {python:.2f} ms today), **{kernels + python:.2f} ms** together")
    left = (f"which would leave {budget - floor:.2f} ms for everything else: {rest}"
            if budget > floor else f"more than that already, before everything else: {rest}")
    return text + f"""

Served (`search_fused.json`, {served['date']}): {served['c8_qps']:.0f} queries/s at concurrency
8 is **{core:.2f} ms** of the two cores a query, {share:.2f} ms more than the steps take in
process. That share is the server's: dynamic batches smaller than 8 (each call's fixed costs
shared by fewer queries), the Python backend's hand-over of tensors, Triton, gRPC, and
perf_analyzer on the same two cores. 500 queries/s needs at most 4.00 ms a query; with the
server's share as measured, the steps would have to fit in **{budget:.2f} ms**. Their matrix
products at the reference rates and the trees alone take **{floor:.2f} ms**, {left}."""


if __name__ == "__main__":
    sys.exit(main())
