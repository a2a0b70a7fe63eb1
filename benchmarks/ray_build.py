"""The catalogue embedding of `fusionrank build`, in one process and on Ray (`build --ray`):
throughput, and whether the embeddings are the same.

    .venv/bin/python -m benchmarks.ray_build [--build build] [--titles 16384]

Embeds the first TITLES Home Depot titles with the encoder of BUILD (`artefacts/encoder`, the
one `fusionrank build` exported), each configuration from an empty embedding cache:

- one process, ONNX Runtime on every core (what `fusionrank build` does);
- a Ray started on this machine, with one single-threaded encoder actor per core (`--ray`'s
  default), and with one actor on every core.

A Ray configuration's time includes starting Ray and its actors (it is what a build pays);
Ray's start alone is timed too. Writes benchmarks/reports/ray_build.md and .json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.harness import heading, save_report, stamp, table
from fusionrank.core import artefacts
from fusionrank.core.datasets import homedepot_catalogue
from fusionrank.export.encoder import ExportedEncoder
from fusionrank.export.index import embed_catalogue
from fusionrank.export.ray_embedding import RayOptions, RaySession

CLUSTER = """\
On N machines (each with this repository installed: `pip install '.[ray]'`, the same image):

```bash
# on the head node
ray start --head --port 6379 --num-cpus "$(nproc)"
# on each of the other N-1 nodes
ray start --address HEAD_IP:6379 --num-cpus "$(nproc)"
# the build, on the head node (or any machine that reaches it)
fusionrank build --catalogue CATALOGUE --ray HEAD_IP:6379
```

The build starts one single-threaded encoder actor per CPU of the cluster (`--ray-actors` sets
another count) and reads the embeddings back in order; the model repository is written where
the build runs."""


@dataclass(frozen=True)
class Config:
    name: str
    ray: RayOptions | None


def exported_encoder(build: Path) -> ExportedEncoder:
    folder = build / "artefacts" / "encoder"
    onnx = folder / artefacts.ENCODER
    if not onnx.is_file():
        raise SystemExit(f"{onnx} not found: run `fusionrank build --out {build}` first")
    return ExportedEncoder(folder, onnx, folder / artefacts.TOKENIZER,
                           artefacts.file_sha256(onnx), str(folder), 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=Path("build"))
    parser.add_argument("--titles", type=int, default=16_384)
    args = parser.parse_args()

    encoder = exported_encoder(args.build)
    catalogue, _ = homedepot_catalogue()
    titles = catalogue.titles[:args.titles]
    cores = os.cpu_count() or 1
    configs = [Config("one process", None),
               Config(f"Ray, {cores} actors × 1 thread", RayOptions(actors=cores, threads=1)),
               Config(f"Ray, 1 actor × {cores} threads", RayOptions(actors=1, threads=cores))]

    started = time.perf_counter()
    with RaySession(RayOptions()):
        pass
    ray_start_s = time.perf_counter() - started

    rows, reference = [], None
    with tempfile.TemporaryDirectory(prefix="ray-build-") as scratch:
        for number, config in enumerate(configs):
            out = Path(scratch) / f"{number}.npy"
            started = time.perf_counter()
            embed_catalogue(titles, encoder, out, Path(scratch) / f"cache-{number}", True,
                            ray=config.ray)
            seconds = time.perf_counter() - started
            vectors = np.load(out)
            reference = vectors if reference is None else reference
            rows.append({"config": config.name, "seconds": round(seconds, 1),
                         "titles_per_s": round(len(titles) / seconds, 1),
                         "max_abs_difference": float(np.abs(vectors - reference).max()),
                         "identical": bool(np.array_equal(vectors, reference))})
    base = rows[0]["titles_per_s"]
    for row, config in zip(rows, configs, strict=True):
        row["vs_one_process"] = round(row["titles_per_s"] / base, 2)
        started = ray_start_s if config.ray is not None else 0.0
        row["titles_per_s_after_start"] = round(len(titles) / (row["seconds"] - started), 1)

    report = {**stamp(), "titles": len(titles), "encoder": str(encoder.onnx_path),
              "ray_start_s": round(ray_start_s, 1), "configs": rows}
    text = heading(
        "Catalogue embedding: one process against Ray Data", report,
        f"{len(titles):,} Home Depot titles, the encoder of `{args.build}` (FP32 ONNX, 64 titles "
        "an encoder batch), each configuration from an empty embedding cache",
        f"Starting a local Ray (and stopping it): {ray_start_s:.1f} s, included in each Ray "
        "row's seconds; \"once started\" leaves it out") + "\n" + table(
        ["configuration", "seconds", "titles/s", "× one process", "titles/s once started",
         "max abs difference vs one process", "bit-identical"],
        [[r["config"], r["seconds"], r["titles_per_s"], r["vs_one_process"],
          r["titles_per_s_after_start"], f"{r['max_abs_difference']:.1e}",
          "yes" if r["identical"] else "no"] for r in rows]
    ) + "\n\n" + (
        f"On {cores} cores Ray cannot be faster than one process that already uses every core: "
        "it adds its start and moves titles and vectors between processes. What it buys is the "
        "cluster: the same command embeds on every CPU of N machines.\n\n") + CLUSTER + "\n"
    save_report("ray_build", report, text)


if __name__ == "__main__":
    main()
