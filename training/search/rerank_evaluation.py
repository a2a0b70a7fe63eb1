"""Quality and cost of cross-encoder rerankers over the served ranking, side by side
(`fusionrank evaluate --reranker DIR ...`).

For each reranker (a `train-reranker` checkpoint: its layers), precision (its ONNX graph in
FP32, and INT8 as served on CPU) and depth N, the served ranking's top N of every dev and test
query is reranked by S + w · logit, with w fitted on dev (`reranker.fit_weight`); the table
gives dev NDCG@10 (what chooses), test NDCG@10, MRR@10 and Recall@100, and the reranker's core
time a query at batch 8 (8 queries' N pairs tokenised and scored in one call, as the server's
batch does; the median over dev batches). A pair's logit does not depend on N, so each
reranker scores every query's deepest head once and the smaller N read its first columns.
The served ranking (`served_rankings.py`) is the run's default build's: the chosen cascade
and the INT8 query encoder.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.search.reranker import OnnxReranker, PairScorer, PairTokenizer
from fusionrank.training.metrics import evaluate_ranking
from fusionrank.training.search.reranker import (
    CHECKPOINT_FILE,
    apply_rerank,
    fit_weight,
    head_pairs,
)
from fusionrank.training.search.served_rankings import Ranking, ServedRanker

DEPTHS = (5, 10, 20, 30)  # swept where the served head holds them (`default_depths`)
FITS_FILE = "fits.json"  # in a checkpoint folder: the weights fitted on dev, by precision and N
TIMING_BATCH = 8
METRICS = ("ndcg@10", "mrr@10", "recall@100")


def log(message: str) -> None:
    print(f"[evaluate] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RerankerCheckpoint:
    folder: Path  # a `train-reranker` best/ folder
    record: dict  # its reranker.json

    @classmethod
    def open(cls, path: Path) -> RerankerCheckpoint:
        """A train-reranker output folder (its best/) or a best/ folder itself."""
        path = Path(path)
        folder = path / "best" if (path / "best" / CHECKPOINT_FILE).is_file() else path
        if not (folder / CHECKPOINT_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a `fusionrank train-reranker` checkpoint "
                                    f"(no {CHECKPOINT_FILE} in it or in its best/)")
        return cls(folder, json.loads((folder / CHECKPOINT_FILE).read_text()))

    @property
    def layers(self) -> int:
        return int(self.record["layers"])

    def tokenizer(self) -> PairTokenizer:
        return PairTokenizer(self.folder / artefacts.TOKENIZER, self.record["max_query_tokens"],
                             self.record["max_tokens"])

    def exported(self, check_pairs: tuple[list[str], list[str]]) -> dict[str, Path]:
        """Its ONNX graphs by precision (exported into best/onnx/ once, parity-checked)."""
        onnx_dir = self.folder / "onnx"
        paths = {"fp32": onnx_dir / artefacts.RERANKER, "int8": onnx_dir / artefacts.RERANKER_INT8}
        if not all(p.is_file() for p in paths.values()):
            from fusionrank.export.search.reranker import export_reranker
            from fusionrank.training.cross_encoder import CrossEncoder

            exported = export_reranker(CrossEncoder.load(self.folder), self.tokenizer(),
                                       self.folder / artefacts.TOKENIZER, onnx_dir, check_pairs)
            log(f"exported {self.folder}: FP32 max |Δ| {exported.fp32_max_abs_diff:.1e}; "
                f"INT8 max |Δ| {exported.int8_max_abs_diff:.3f}, Spearman "
                f"{exported.int8_spearman:.4f}")
        return paths


def run_digest(run: Path) -> str:
    """Which run's served ranking a fit was made on (its manifest changes with any retraining)."""
    import hashlib

    return hashlib.sha256((Path(run) / artefacts.RUN_MANIFEST).read_bytes()).hexdigest()


def write_fits(checkpoint: RerankerCheckpoint, run: Path, fits: dict[str, dict[str, dict]]) -> None:
    """Add this evaluation's fits to the checkpoint's (those of the same run are kept)."""
    path = checkpoint.folder / FITS_FILE
    before = json.loads(path.read_text()) if path.is_file() else None
    kept = before["fits"] if before and before["run_manifest"] == run_digest(run) else {}
    for precision, by_depth in fits.items():
        kept.setdefault(precision, {}).update(by_depth)
    path.write_text(json.dumps({"run": str(run), "run_manifest": run_digest(run), "fits": kept},
                               indent=2) + "\n")


def fitted_weight(checkpoint: RerankerCheckpoint, run: Path, precision: str, depth: int) -> float:
    """The weight `fusionrank evaluate --reranker` fitted on dev for this checkpoint, run,
    precision and depth; a clear error naming the command where there is none."""
    command = (f"`fusionrank evaluate --run {run} --reranker {checkpoint.folder} "
               f"--reranker-depths {depth}`")
    path = checkpoint.folder / FITS_FILE
    if not path.is_file():
        raise ValueError(f"reranker {checkpoint.folder} has no weights fitted on dev: run "
                         f"{command}")
    record = json.loads(path.read_text())
    if record["run_manifest"] != run_digest(run):
        raise ValueError(f"reranker {checkpoint.folder} was fitted on the run {record['run']}, "
                         f"not {run}: run {command}")
    fit = record["fits"].get(precision, {}).get(str(depth))
    if fit is None:
        raise ValueError(f"reranker {checkpoint.folder} has no weight fitted for {precision} at "
                         f"depth {depth} (fitted: " + ", ".join(
                             f"{p} {sorted(map(int, d))}" for p, d in record["fits"].items())
                         + f"): run {command}")
    return float(fit["weight"])


def scored_heads(scorer: PairScorer, ranking: Ranking, titles: list[str],
                 depth: int) -> np.ndarray:
    """float32 [queries, depth]: the logits of each query's top `depth`."""
    queries, heads = head_pairs(ranking, titles, depth)
    return scorer(queries, heads).reshape(len(ranking.queries), -1)


def core_ms_per_query(scorer: PairScorer, ranking: Ranking, titles: list[str],
                      depths: tuple[int, ...], batches: int = 40) -> dict[int, float]:
    """Per depth, the median ms a query of tokenising and scoring 8 queries' top N in one
    call; the depths take turns batch by batch."""
    per_query: dict[int, list[float]] = {d: [] for d in depths}
    for b in range(min(batches, len(ranking.queries) // TIMING_BATCH)):
        part = slice(b * TIMING_BATCH, (b + 1) * TIMING_BATCH)
        sub = Ranking(ranking.queries[part], ranking.rows[part], ranking.scores[part])
        for depth in depths:
            queries, heads = head_pairs(sub, titles, depth)
            began = time.perf_counter()
            scorer.model(scorer.tokenizer(queries, heads))
            per_query[depth].append((time.perf_counter() - began) * 1000 / TIMING_BATCH)
    return {d: round(float(np.median(t)), 3) for d, t in per_query.items()}


def default_depths(head: int) -> tuple[int, ...]:
    """DEPTHS within the served head (the products S scores), and the head itself up to 30."""
    return tuple(sorted({d for d in DEPTHS if d < head} | {min(head, max(DEPTHS))}))


def rerank_report(served: ServedRanker, checkpoints: list[Path], cache_dir: Path,
                  depths: tuple[int, ...] | None = None, threads: int | None = None) -> dict:
    """The table (module docstring) over `depths` (default: `default_depths` of the served
    head); each checkpoint's fits are written beside it (FITS_FILE)."""
    judgements = served.judgements
    titles = judgements.catalogue.titles
    rankings = {s: served.split(s, cache_dir) for s in ("dev", "test")}
    judged = {s: judgements.qrels(s) for s in rankings}
    baseline = {s: evaluate_ranking(judged[s], r.queries, r.rows, r.scores, METRICS)
                for s, r in rankings.items()}
    cascade = served.weights.cascade
    if depths is None:
        depths = default_depths(cascade.depth if cascade is not None else served.pools.dense
                                + served.pools.lexical)
    if cascade is not None and max(depths) > cascade.depth:
        # Below the cascade's head the first stage scores a product, on another scale than S.
        raise ValueError(f"reranker depths {sorted(d for d in depths if d > cascade.depth)} "
                         f"reach below the served cascade's head ({cascade.depth}): the "
                         f"reranker adds to S, which only the head has")
    deepest = max(depths)
    check = head_pairs(Ranking(rankings["dev"].queries[:16], rankings["dev"].rows[:16],
                               rankings["dev"].scores[:16]), titles, 8)
    rows = []
    for path in checkpoints:
        checkpoint = RerankerCheckpoint.open(path)
        tokenizer = checkpoint.tokenizer()
        fits: dict[str, dict[str, dict]] = {}
        for precision, graph in checkpoint.exported(check).items():
            scorer = PairScorer(tokenizer, OnnxReranker(graph, threads), batch_size=128)
            started = time.perf_counter()
            logits = {s: scored_heads(scorer, r, titles, deepest) for s, r in rankings.items()}
            log(f"{checkpoint.layers} layers {precision}: scored {deepest} a query in "
                f"{time.perf_counter() - started:.0f} s")
            timing = core_ms_per_query(scorer, rankings["dev"], titles, depths)
            for depth in depths:
                dev, test = rankings["dev"], rankings["test"]
                weight, dev_metrics = fit_weight(dev.scores, logits["dev"][:, :depth], dev.rows,
                                                 dev.queries, judged["dev"])
                test_metrics = evaluate_ranking(
                    judged["test"], test.queries,
                    apply_rerank(test.rows, test.scores, logits["test"][:, :depth], weight),
                    np.zeros(test.rows.shape), METRICS)
                fits.setdefault(precision, {})[str(depth)] = {
                    "weight": weight, "dev": dev_metrics, "test": test_metrics}
                rows.append({"checkpoint": str(checkpoint.folder), "layers": checkpoint.layers,
                             "max_tokens": checkpoint.record["max_tokens"],
                             "precision": precision, "depth": depth, "weight": weight,
                             "dev": dev_metrics, "test": test_metrics,
                             "core_ms_per_query": timing[depth]})
                log(f"{checkpoint.layers} layers {precision} N={depth}: w {weight}, dev "
                    f"NDCG@10 {dev_metrics['ndcg@10']:.4f}, test {test_metrics['ndcg@10']:.4f}"
                    f" / MRR@10 {test_metrics['mrr@10']:.4f}, {timing[depth]:.2f} ms a query")
        write_fits(checkpoint, served.run, fits)
    return {"served": baseline, "queries": {s: len(r.queries) for s, r in rankings.items()},
            "timing": {"batch": TIMING_BATCH, "threads": threads,
                       "what": "tokenising and scoring the top N pairs of 8 queries in one call, "
                               "median over dev batches, ms a query"},
            "rows": rows}


def markdown_table(report: dict) -> str:
    served = report["served"]
    lines = [f"Reranking the served ranking's top N ({report['queries']['dev']} dev, "
             f"{report['queries']['test']} test queries); w of S + w · logit fitted on dev.", "",
             "| layers | precision | N | w | dev NDCG@10 | test NDCG@10 | test MRR@10 | "
             "test Recall@100 | reranker core ms a query (batch 8) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| served, no reranker | | | | {served['dev']['ndcg@10']:.4f} | "
             f"{served['test']['ndcg@10']:.4f} | {served['test']['mrr@10']:.4f} | "
             f"{served['test']['recall@100']:.4f} | 0 |"]
    for row in report["rows"]:
        lines.append(f"| {row['layers']} | {row['precision']} | {row['depth']} | "
                     f"{row['weight']} | {row['dev']['ndcg@10']:.4f} | "
                     f"{row['test']['ndcg@10']:.4f} | {row['test']['mrr@10']:.4f} | "
                     f"{row['test']['recall@100']:.4f} | {row['core_ms_per_query']:.2f} |")
    return "\n".join(lines)
