"""The query encoder on a GPU: throughput in FP32 and FP16 with PyTorch CUDA over a batch
sweep, and whether its embeddings equal the CPU ONNX ones (cosine >= 0.999) on real text.

Two halves, because the GPU machine (scripts/gpu_check.sh; PyTorch with CUDA, no fusionrank
environment, only 64 MiB of working tree travels) cannot hold the FP32 weights (87 MiB) or
the datasets:

    .venv/bin/python -m benchmarks.gpu_check prepare   # here, on the CPU: build/gpu_check/
    python3 -m benchmarks.gpu_check measure            # there (scripts/gpu_check.sh)

`prepare` writes the encoder's weights in FP16 (46 MB), its tokenizer, 512 Home Depot search
terms and 512 product titles, and their embeddings by the exported FP32 ONNX encoder on this
CPU (the reference). `measure` loads the weights into FP32 (the FP32 figures) and FP16
modules, so its FP32 parity includes the weights' FP16 rounding: a bound on what the FP32
weights give. Queries are padded to MAX_QUERY_TOKENS, as the GPU repository pads them; each
timed batch includes the copy of the token ids to the GPU and of the embeddings back.
Without CUDA, `measure` says so and exits 0 (skipped); `measure --device cpu` rehearses the
whole script on the CPU (`--seconds 0.01 --rows 64 --max-batch 8`: FP16 is slow there)
before a GPU's time is spent on it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import latency_percentiles, now, table
from fusionrank.core.encoding import MAX_QUERY_TOKENS, MAX_TITLE_TOKENS, TextTokenizer, pad
from fusionrank.core.machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "build" / "gpu_check"
REPORTS = ROOT / "benchmarks" / "reports"
MAX_TOKENS = {"queries": MAX_QUERY_TOKENS, "titles": MAX_TITLE_TOKENS}
MODEL_FILES = ("config.json", "tokenizer.json")
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MIN_COSINE = 0.999
TEXTS = 512
CHUNK = 64  # rows per forward pass in the parity check
SKIPPED = 0  # exit status without CUDA


def prepare(args: argparse.Namespace) -> int:
    """Bundle the weights (FP16), tokenizer, real texts and the CPU ONNX reference."""
    import shutil
    import tempfile

    import torch
    from safetensors.torch import load_file, save_file

    from fusionrank.core.datasets import read_homedepot
    from fusionrank.core.encoding import OnnxEncoder
    from fusionrank.core.model_folders import bundled_model_path
    from fusionrank.training.encoder import export_model_folder

    model_dir = Path(args.model) if args.model else bundled_model_path()
    frame = read_homedepot()
    texts = {"queries": frame.search_term.str.strip().drop_duplicates().head(TEXTS).tolist(),
             "titles": frame.product_title.str.strip().drop_duplicates().head(TEXTS).tolist()}
    out = args.bundle
    shutil.rmtree(out, ignore_errors=True)
    (out / "model").mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copyfile(model_dir / name, out / "model" / name)
    weights = load_file(str(model_dir / "model.safetensors"))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
              str(out / "model" / "model.safetensors"))
    reference = {}
    with tempfile.TemporaryDirectory() as folder:
        exported = export_model_folder(model_dir, Path(folder), texts["titles"][:64])
        encoder = OnnxEncoder(exported.onnx_path)
        for kind, rows in texts.items():
            reference[kind] = embed(rows, MAX_TOKENS[kind], out, encoder)
        onnx_sha256 = exported.sha256
    np.savez(out / "reference.npz", **reference)
    (out / "texts.json").write_text(json.dumps(texts, ensure_ascii=False))
    (out / "bundle.json").write_text(json.dumps({
        "model": str(model_dir), "onnx_sha256": onnx_sha256, "torch": torch.__version__,
        "reference": "ONNX Runtime FP32 on the CPU", "machine": describe_machine(),
        "made_at": now()}, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"gpu_check bundle written to {out} ({size / 2**20:.1f} MiB)")
    return 0


def embed(texts: list[str], max_tokens: int, bundle: Path, encode) -> np.ndarray:
    """`encode(TokenBatch)` over `texts` in chunks, each padded to its longest row."""
    tokenizer = TextTokenizer(bundle / "model" / "tokenizer.json", max_tokens)
    ids = tokenizer.token_ids(texts)
    return np.concatenate([np.asarray(encode(pad(ids[i:i + CHUNK])), dtype=np.float32)
                           for i in range(0, len(ids), CHUNK)])


def measure(args: argparse.Namespace) -> int:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: SKIPPED: no CUDA device here (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda}); run it on the GPU machine", file=sys.stderr)
        return SKIPPED
    bundle = args.bundle
    if not (bundle / "reference.npz").is_file():
        print(f"gpu_check: {bundle} has no bundle: run `scripts/gpu_check.sh prepare` on the "
              "CPU machine first and carry that folder", file=sys.stderr)
        return 2
    started = time.perf_counter()
    modules = load_modules(bundle / "model", args.device)
    texts = json.loads((bundle / "texts.json").read_text())
    reference = np.load(bundle / "reference.npz")
    parity = {}
    for precision, module in modules.items():
        def encode(batch, module=module):
            return run(module, batch, args.device)

        parity[precision] = {kind: cosines(reference[kind][:args.rows], embed(
            rows[:args.rows], MAX_TOKENS[kind], bundle, encode)) for kind, rows in texts.items()}
    tokenizer = TextTokenizer(bundle / "model" / "tokenizer.json", MAX_QUERY_TOKENS)
    sweep = [throughput(module, precision, tokenizer, texts["queries"], batch, args)
             for precision, module in modules.items()
             for batch in BATCHES if batch <= args.max_batch]
    passed = all(c["min"] >= MIN_COSINE for p in parity.values() for c in p.values())
    report = {
        "command": shlex.join(["scripts/gpu_check.sh", *sys.argv[2:]]),
        "machine": machine_gpu(args.device),
        "bundle": json.loads((bundle / "bundle.json").read_text()),
        "padding": f"queries padded to {MAX_QUERY_TOKENS} tokens (the GPU repository's)",
        "parity_min_cosine_target": MIN_COSINE, "parity": parity, "parity_passed": passed,
        "throughput": sweep, "seconds": round(time.perf_counter() - started, 1),
        "measured_at": now()}
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPORTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / "gpu_check.md").write_text(text)
    print(text)
    return 0 if passed else 1


def load_modules(model_dir: Path, device: str) -> dict:
    import copy

    from transformers import AutoModel

    from fusionrank.training.encoder import MeanPooledEncoder

    transformer = AutoModel.from_pretrained(model_dir, local_files_only=True).float()
    fp32 = MeanPooledEncoder(transformer).eval().to(device)
    return {"fp32": fp32, "fp16": copy.deepcopy(fp32).half()}


def run(module, batch, device: str) -> np.ndarray:
    """One batch from host memory to embeddings in host memory."""
    import torch

    with torch.inference_mode():
        ids = torch.from_numpy(batch.input_ids).to(device)
        mask = torch.from_numpy(batch.attention_mask).to(device)
        return module(ids, mask).float().cpu().numpy()


def cosines(expected: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    per_row = np.sum(expected * actual, axis=1) / (
        np.linalg.norm(expected, axis=1) * np.linalg.norm(actual, axis=1))
    return {"min": round(float(per_row.min()), 6), "mean": round(float(per_row.mean()), 6),
            "rows": len(per_row)}


def throughput(module, precision: str, tokenizer: TextTokenizer, queries: list[str],
               batch: int, args: argparse.Namespace) -> dict[str, float]:
    """Batches of `batch` real queries, padded to MAX_QUERY_TOKENS, for about `seconds`."""
    ids = tokenizer.token_ids([queries[i % len(queries)] for i in range(batch)])
    tokens = pad(ids, MAX_QUERY_TOKENS)
    for _ in range(5):  # warm-up: kernels chosen, memory pooled
        run(module, tokens, args.device)
    times = []
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline or len(times) < 10:
        start = time.perf_counter()
        run(module, tokens, args.device)
        times.append(time.perf_counter() - start)
    p = latency_percentiles([t * 1e3 for t in times], (50, 95), digits=3)
    return {"precision": precision, "batch": batch, "batches_timed": len(times), **p,
            "queries_per_s": round(batch / float(np.median(times)), 1)}


def machine_gpu(device: str) -> dict[str, str]:
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "no GPU (CPU rehearsal)"
    return {"gpu": gpu, "torch": torch.__version__,
            "cuda": str(torch.version.cuda), "transformers": transformers.__version__,
            "host": describe_machine()}


def markdown(report: dict) -> str:
    lines = ["# The query encoder on a GPU (PyTorch CUDA)", "",
             f"Command: `{report['command']}` on {report['machine']['gpu']} "
             f"(torch {report['machine']['torch']}, CUDA {report['machine']['cuda']}), "
             f"{report['measured_at']}. {report['padding']}; each batch timed from token ids "
             "in host memory to embeddings in host memory.", "",
             f"## Parity with the CPU ONNX embeddings (target: cosine >= {MIN_COSINE})", "",
             table(["precision", "texts", "rows", "min cosine", "mean cosine"],
                   [[precision, kind, c["rows"], f"{c['min']:.6f}", f"{c['mean']:.6f}"]
                    for precision, kinds in report["parity"].items()
                    for kind, c in kinds.items()])]
    passed = "yes" if report["parity_passed"] else "NO"
    lines += ["", f"Passed: {passed}. FP32 runs the FP16-stored weights in FP32 (the "
              "bundle's; a bound on the FP32 weights' parity).", "",
              "## Throughput (queries/s; p50 and p95 ms per batch)", ""]
    measured = {(r["precision"], r["batch"]): r for r in report["throughput"]}
    rows = []
    for batch in sorted({r["batch"] for r in report["throughput"]}):
        cells = []
        for precision in ("fp32", "fp16"):
            r = measured.get((precision, batch))
            cells += [f"{r['queries_per_s']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}"] \
                if r else ["-"] * 3
        rows.append([batch, *cells])
    lines.append(table(["batch", "FP32 q/s", "FP32 p50 ms", "FP32 p95 ms", "FP16 q/s",
                        "FP16 p50 ms", "FP16 p95 ms"], rows))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "measure"])
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--model", help="prepare: a Hugging Face encoder folder (default: the "
                                        "bundled all-MiniLM-L6-v2)")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="measure: seconds timed per batch size and precision")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="measure: cpu rehearses the script where there is no GPU")
    parser.add_argument("--rows", type=int, default=TEXTS,
                        help="measure: texts of each kind in the parity check")
    parser.add_argument("--max-batch", type=int, default=BATCHES[-1],
                        help="measure: the sweep's largest batch")
    args = parser.parse_args(argv)
    return prepare(args) if args.step == "prepare" else measure(args)


if __name__ == "__main__":
    sys.exit(main())
