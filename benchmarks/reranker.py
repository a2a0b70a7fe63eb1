"""The cross-encoder reranker served: which configuration is the default, by the stated rule
(issue 28), measured in one run.

    fusionrank evaluate --run runs/relevance --reranker runs/relevance/reranker \\
        --out runs/relevance/evaluation
    fusionrank build --catalogue homedepot --run runs/relevance --no-recommend \\
        --out build/rerank-off
    fusionrank build --catalogue homedepot --run runs/relevance --no-recommend \\
        --reranker runs/relevance/reranker --reranker-depth 10 --out build/rerank-10
    ...
    .venv/bin/python -m benchmarks.reranker --run runs/relevance \\
        --builds build/rerank-off build/rerank-10 build/rerank-20 \\
        --evaluation runs/relevance/evaluation/evaluation.json

For each build, taking turns (a machine that slows down meanwhile slows each alike), the median
of two rounds of the in-process core time a query at batch 8 by step and, through Triton (no
response cache, distinct real queries), perf_analyzer's p50 at concurrency 1 and throughput at
concurrency 8 (`benchmarks/cascade.py`'s `measure`). Then the peer (benchmarks/search_peer.py:
FastAPI + sentence-transformers, serving the fused ranking without a reranker) at concurrency 1
and 8.

The rule: on this machine, serve the reranker configuration with the best dev NDCG@10 (from the
evaluation's table) among those whose served search still makes at least 3× the peer's
throughput at concurrency 8; none: no reranker. On a GPU build the reranker is always on, at the
dev-best N of its FP32 graph (TensorRT runs FP32 graphs in FP16). The choice is written to
RUN/reranker/choice.json, which `fusionrank build --reranker auto` (the default) reads.

Writes benchmarks/reports/reranker.md and .json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.cascade import ROUNDS, manifest, measured_in_turns, peer
from benchmarks.harness import REPORTS, benchmark_queries, heading, save_report, stamp, table
from fusionrank.training.search.rerank_evaluation import markdown_table as rerank_table

NAME = "reranker"
OVER_PEER = 3.0  # the served search must keep this multiple of the peer's q/s at c=8
CHOICE_FILE = "choice.json"


def configuration(build: Path) -> dict | None:
    """A build's reranker (checkpoint folder, precision, depth), None without one."""
    reranker = manifest(build).get("reranker")
    if not reranker:
        return None
    return {"checkpoint": reranker["provenance"], "precision": reranker["precision"],
            "depth": reranker["depth"], "layers": reranker["layers"]}


def dev_quality(evaluation: dict, config: dict | None) -> dict:
    """Dev and test metrics of a configuration in the evaluation (the served ranking's where
    there is no reranker)."""
    table_ = evaluation["reranker"]
    if config is None:
        return {"dev": table_["served"]["dev"], "test": table_["served"]["test"]}
    for row in table_["rows"]:
        if (Path(row["checkpoint"]).resolve() == Path(config["checkpoint"]).resolve()
                and row["precision"] == config["precision"] and row["depth"] == config["depth"]):
            return {"dev": row["dev"], "test": row["test"], "weight": row["weight"]}
    raise ValueError(f"the evaluation has no row for {config}: run `fusionrank evaluate "
                     f"--reranker {config['checkpoint']} --reranker-depths {config['depth']}`")


def gpu_choice(evaluation: dict) -> dict | None:
    rows = [r for r in evaluation["reranker"]["rows"] if r["precision"] == "fp32"]
    if not rows:
        return None
    best = max(rows, key=lambda r: (r["dev"]["ndcg@10"], -r["depth"]))
    return {"checkpoint": best["checkpoint"], "precision": "fp32", "depth": best["depth"],
            "layers": best["layers"]}


def training_records(table_: dict) -> dict[str, dict]:
    """Each evaluated checkpoint's training: its settings, steps and dev choice, and time."""
    out = {}
    for folder in sorted({row["checkpoint"] for row in table_["rows"]}):
        record = json.loads((Path(folder) / "reranker.json").read_text())
        history = json.loads((Path(folder).parent / "history.json").read_text())
        timing = Path(folder).parent / "train_reranker.json"
        seconds = json.loads(timing.read_text())["seconds"] if timing.is_file() else None
        out[folder] = {"layers": record["layers"], "max_tokens": record["max_tokens"],
                       "seconds": seconds,
                       "best_step": record["step"], "steps": len(history["losses"]),
                       "dev_subset_ndcg@10": record["dev"]["ndcg@10"],
                       "config": record["config"]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/relevance"))
    parser.add_argument("--builds", type=Path, nargs="+", required=True,
                        help="the first without a reranker (the peer serves its ranking), the "
                             "rest each with one reranker configuration")
    parser.add_argument("--evaluation", type=Path, required=True,
                        help="a `fusionrank evaluate --reranker` report (evaluation.json)")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args(argv)
    evaluation = json.loads(args.evaluation.read_text())
    if "reranker" not in evaluation:
        parser.error(f"{args.evaluation} has no reranker table: run `fusionrank evaluate "
                     f"--reranker ...`")
    builds = {build.name: build for build in args.builds}
    if len(builds) != len(args.builds):
        parser.error("each build needs a folder name of its own")
    configs = {who: configuration(build) for who, build in builds.items()}
    if configs[args.builds[0].name] is not None:
        parser.error(f"the first build {args.builds[0]} must serve no reranker")
    queries = benchmark_queries(args.queries)
    measured = measured_in_turns(builds, queries, args.seconds)
    compared = peer(args.run, args.builds[0], args.queries, args.seconds)
    peer_qps = next(r["throughput_qps"] for r in compared["peer"] if r["concurrency"] == 8)
    rows = []
    for who, config in configs.items():
        quality = dev_quality(evaluation, config)
        over = measured[who]["qps_c8"] / peer_qps
        rows.append({"build": who, "config": config, **quality,
                     "qps_c8": measured[who]["qps_c8"], "p50_c1_ms": measured[who]["p50_c1_ms"],
                     "core_ms": measured[who]["core_ms"], "over_peer": round(over, 2),
                     "eligible": over >= OVER_PEER})
    eligible = [r for r in rows if r["eligible"] and r["config"] is not None]
    chosen = max(eligible, key=lambda r: r["dev"]["ndcg@10"]) if eligible else None
    choice = {"cpu": chosen["config"] if chosen else None, "gpu": gpu_choice(evaluation),
              "rule": f"CPU: the best dev NDCG@10 among the configurations serving at least "
                      f"{OVER_PEER:g}x the peer's q/s at c=8 on this machine (none: off); GPU: "
                      f"the dev-best N of the FP32 graph",
              "report": str(args.out / f"{NAME}.md")}
    folder = args.run / "reranker"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CHOICE_FILE).write_text(json.dumps(choice, indent=2) + "\n")
    report = {**stamp(), "queries": len(queries), "seconds": args.seconds,
              "builds": {who: str(b) for who, b in builds.items()}, "measured": measured,
              "peer": {"workers": compared["peer_workers"], "qps_c8": peer_qps},
              "rows": rows, "choice": choice, "evaluation": evaluation["reranker"],
              "evaluation_command": evaluation.get("command"),
              "training": training_records(evaluation["reranker"])}
    save_report(NAME, report, render(report), args.out)
    return 0


def render(r: dict) -> str:
    lines = []
    for row in r["rows"]:
        c = row["config"]
        what = "no reranker" if c is None else (f"{c['layers']} layers {c['precision']}, "
                                                 f"N = {c['depth']}")
        lines.append([row["build"], what, f"{row['dev']['ndcg@10']:.4f}",
                      f"{row['test']['ndcg@10']:.4f}", f"{row['test']['mrr@10']:.4f}",
                      f"{row['test']['recall@100']:.4f}", f"{row['core_ms']:.2f}",
                      f"{row['p50_c1_ms']:.2f}", f"{row['qps_c8']:.1f}",
                      f"{row['over_peer']:.2f}×", "yes" if row["eligible"] else "no"])
    choice = r["choice"]
    chosen = "no reranker (none keeps 3× the peer)" if choice["cpu"] is None else (
        f"{choice['cpu']['layers']} layers {choice['cpu']['precision']}, N = "
        f"{choice['cpu']['depth']}")
    gpu = "none evaluated" if choice["gpu"] is None else (
        f"{choice['gpu']['layers']} layers fp32, N = {choice['gpu']['depth']}")
    return "\n".join([
        heading("The cross-encoder reranker served, and the default it earns", r,
                f"{r['queries']} distinct real Home Depot search terms, K = 10; builds "
                + ", ".join(f"`{b}`" for b in r["builds"].values()) + f"; measured in turns, "
                f"the median of {ROUNDS} rounds each; perf_analyzer windows of {r['seconds']} s,"
                f" response cache off; the peer ×{r['peer']['workers']} (FastAPI + "
                f"sentence-transformers, the fused ranking without a reranker): "
                f"{r['peer']['qps_c8']:.1f} q/s at c=8"),
        "## Quality and cost", "",
        table(["build", "reranker", "dev NDCG@10", "test NDCG@10", "test MRR@10",
               "test Recall@100", "core ms a query (batch 8)", "p50 at c=1, ms", "q/s at c=8",
               "vs the peer", f"≥ {OVER_PEER:g}× the peer"], lines), "",
        "## Quality over N × layers × precision (one `fusionrank evaluate` run)", "",
        f"Command: `{r['evaluation_command']}`", "",
        rerank_table(r["evaluation"]), "",
        "Training (`fusionrank train-reranker`, the dev subset that chose the checkpoint):", "",
        table(["checkpoint", "layers", "max tokens", "steps", "best step",
               "dev-subset NDCG@10", "training time"],
              [[folder, t["layers"], t["max_tokens"], t["steps"], t["best_step"],
                f"{t['dev_subset_ndcg@10']:.4f}",
                "" if t["seconds"] is None else f"{t['seconds'] / 60:.1f} min"]
               for folder, t in r["training"].items()]), "",
        "## The default", "",
        f"- Rule: {choice['rule']}.",
        f"- CPU (this machine): **{chosen}**.",
        f"- GPU builds: **{gpu}**.", ""])


if __name__ == "__main__":
    raise SystemExit(main())
