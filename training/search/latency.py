"""Query-encoding latency of ONNX encoders, measured side by side on real queries.

What is timed is the encoder call the `EncodeQueries` step makes (ONNX Runtime, CPU) on a
batch already tokenised (tokenising is the `Tokenize` step, the same for every encoder). The
encoders take turns on the same batches, in a rotating order, so a load that comes and goes
on a shared machine falls on all of them alike; each figure is a median over real queries.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fusionrank.core.encoding import MAX_QUERY_TOKENS, OnnxEncoder, TextTokenizer, pad

THREADS = 2  # ONNX Runtime threads per served encoder copy (ServingOptions.onnx_threads)
WARMUP = 10


def encoding_latency(encoders: Mapping[str, Path], tokenizer: Path, queries: Sequence[str],
                     batch_sizes: Sequence[int] = (1, 8), batches: int | None = None,
                     threads: int = THREADS) -> dict[str, dict[int, dict[str, float]]]:
    """name → batch size → {"median_ms", "p90_ms", "batches"}: each encoder's time per call
    on consecutive batches of `queries` (every one, or the first `batches`)."""
    sessions = {name: OnnxEncoder(path, threads=threads) for name, path in encoders.items()}
    if not queries:
        raise ValueError("no queries to time the encoders on")
    ids = TextTokenizer(tokenizer, MAX_QUERY_TOKENS).token_ids(queries)
    # A small set (a test fixture's) is repeated to fill one batch of the largest size.
    ids = ids * -(-max(batch_sizes) // len(ids))
    names = list(sessions)
    out: dict[str, dict[int, dict[str, float]]] = {name: {} for name in names}
    for size in batch_sizes:
        chunks = [pad(ids[i : i + size]) for i in range(0, len(ids) - size + 1, size)][:batches]
        for name in names:  # warm up: the first calls allocate
            for chunk in chunks[:WARMUP]:
                sessions[name](chunk)
        times: dict[str, list[float]] = {name: [] for name in names}
        for turn, chunk in enumerate(chunks):
            for name in names[turn % len(names):] + names[: turn % len(names)]:
                started = time.perf_counter()
                sessions[name](chunk)
                times[name].append((time.perf_counter() - started) * 1000)
        for name in names:
            values = np.array(times[name])
            out[name][size] = {"median_ms": float(np.median(values)),
                               "p90_ms": float(np.percentile(values, 90)),
                               "batches": len(values)}
    return out
