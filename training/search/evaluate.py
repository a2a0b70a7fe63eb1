"""`fusionrank evaluate`: every system on the same split and the same full catalogue.

Systems (each row adds one component, so the table is also the ablation):
    bm25                 BM25 over every title
    pretrained           the bundled encoder, cosine top-100 over every title
    finetuned            the fine-tuned encoder, the same way
    hybrid               dense + BM25 candidates, S = α·s + γ·lexical (α, γ fitted on dev)
    fused − lexical      the hybrid pool, S = α·s + β·f (no lexical term; fitted on dev)
    feedback only        the hybrid pool ordered by the feedback head alone
    fused (dense pool)   the served weights, without the BM25 candidates
    fused                the fused ranker: hybrid pool, S = α·s + β·f + γ·lexical (ranking.json),
                         queries encoded in FP32 (`fusionrank build --precision fp32`)
    fused, int8 query encoder   the same with the INT8 query encoder, as `fusionrank build`
                         serves it by default (export/quantize.py; the catalogue stays FP32)
    fused, cascade N     where `fusionrank tune-cascade` chose a depth N for the run: the
                         feedback head on each pool's top N by the hybrid score, S refitted
                         (training/search/cascade.py); with each query encoder
With `--student` (a `fusionrank distil` student), the same served path with the student as the
query encoder and everything else the run's (the teacher's catalogue embeddings, head, memory,
weights), as `fusionrank build --student` serves it:
    student              the student's queries, cosine top-100 over the teacher's catalogue
    fused, student query encoder        the fused ranker, student queries in FP32
    fused, student int8 query encoder   the same, the student quantised to INT8
and the query-encoding latency of teacher and student, FP32 and INT8, batch 1 and 8
(training/search/latency.py), against the target: ≥ 1.8× faster with fused test NDCG@10
within 0.01 of the teacher's.
Metrics (ranx): NDCG@10, Recall@100, MRR@10 with gain = relevance − 1, unjudged = 0, over the
queries that have at least one product judged above 1. The feedback head: RMSE on every judged
pair (of the served blend, and of its networks and its trees alone), and precision / recall /
F1 / accuracy of "relevant" (grade ≥ 2.5) at the dev threshold.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.fusion import FusionWeights
from fusionrank.core.model_folders import check_model_folder
from fusionrank.core.search.features import FeatureSources, HeadInputs
from fusionrank.core.search.judgements import JudgementMemory, ProductPriors
from fusionrank.core.search.lexical import LexicalIndex
from fusionrank.core.search.runtime import (
    DEPTH,
    CandidatePool,
    OnnxFeedbackHead,
    SearchRuntime,
    dense_candidates,
    ranked,
)
from fusionrank.export.search.feedback_head import PARTS as HEAD_PARTS
from fusionrank.training.embeddings import (
    Embedder,
    catalogue_embeddings,
    exported_encoder,
    int8_embedder,
    weights_digest,
)
from fusionrank.training.metrics import METRICS, evaluate_ranking
from fusionrank.training.search.cascade import cascade_weights, chosen_depth
from fusionrank.training.search.data import SplitConfig, load_judgements
from fusionrank.training.search.feedback import choose_threshold, classify, rmse
from fusionrank.training.search.fusion import fit_weights
from fusionrank.training.search.pairs import PairResources, judged_pairs
from fusionrank.training.search.pipeline import PoolConfig, load_run

SPLITS = ("dev", "test")


@dataclass
class EvaluateConfig:
    run: Path
    out: Path
    data: Path | None = None  # default: the run's own data file
    cache: Path = Path("runs/cache")
    threads: int | None = None
    student: Path | None = None  # a `fusionrank distil` checkpoint to compare with the teacher
    # `fusionrank train-reranker` checkpoints: the table over depth × layers × precision
    # (training/search/rerank_evaluation.py)
    rerankers: tuple[Path, ...] = ()
    reranker_depths: tuple[int, ...] | None = None  # default: rerank_evaluation.default_depths
    command: str | None = None  # the command line, for the report


# Issue 13's target for a student query encoder.
TARGET_SPEEDUP = 1.8
TARGET_MAX_NDCG_LOSS = 0.01
LATENCY_BATCHES = (1, 8)
# Issue 25's rule for serving the student (`fusionrank build --student auto`): ranked as the
# build serves the run (its chosen cascade, INT8 query encoders), its dev NDCG@10 within this
# much of the teacher's. Dev decides, as for every other choice; test is reported beside it.
SERVE_MAX_NDCG_LOSS = 0.005
STUDENT_CHOICE = "choice.json"  # beside the student's checkpoints: RUN/student/choice.json


def log(message: str) -> None:
    print(f"[evaluate] {message}", file=sys.stderr, flush=True)


def run_evaluation(config: EvaluateConfig) -> dict:
    started = time.perf_counter()
    run = Path(config.run)
    manifest = load_run(run)
    split = SplitConfig(**manifest["config"]["split"])
    pools = PoolConfig(**manifest["config"]["pools"])
    judgements = load_judgements(config.data or manifest["data_file"], split)
    if judgements.sha256 != manifest["data_sha256"]:
        log("warning: the data file differs from the one the run was trained on")
    titles = judgements.catalogue.titles
    lexical = LexicalIndex.load(run / artefacts.LEXICAL)
    if lexical.size != len(titles):
        raise ValueError(f"{run / artefacts.LEXICAL} indexes {lexical.size} products, the data "
                         f"{len(titles)}: evaluate with the run's own data file")
    base, base_embedder = catalogue_embeddings(Path(manifest["init_model"]), titles,
                                               config.cache / "embeddings", config.threads)
    tuned, embedder = catalogue_embeddings(Path(manifest["checkpoint"]), titles,
                                           config.cache / "embeddings", config.threads)
    queries = {s: judgements.ranked_queries(s) for s in SPLITS}
    all_queries = sorted(judgements.frame["query"].unique())
    sources = FeatureSources.build(titles, tuned, ProductPriors.load(run / artefacts.PRIORS),
                                   JudgementMemory.load(run / artefacts.MEMORY))
    resources = PairResources(judgements, lexical, sources,
                              dict(zip(all_queries, embedder.encode_queries(all_queries),
                                       strict=True)))
    # The served path after the encoder, over the run's own catalogue.
    runtime = SearchRuntime(lexical, sources,
                            OnnxFeedbackHead(run / artefacts.FEEDBACK_HEAD, config.threads),
                            FusionWeights.load(run / artefacts.FUSION_WEIGHTS), pools.lexical)
    served = runtime.weights

    def served_pool(split: str, vectors: np.ndarray) -> CandidatePool:
        pool = runtime.candidates(queries[split], vectors,
                                  *dense_candidates(tuned, vectors, pools.dense))
        pool.feedback = runtime.feedback(pool, vectors)
        return pool

    pool_of = {s: served_pool(s, np.stack([resources.query_vectors[q] for q in queries[s]]))
               for s in SPLITS}
    # The same path with the INT8 query encoder `fusionrank build` serves by default (the
    # catalogue stays FP32), to measure what quantisation costs in ranking quality.
    int8 = int8_embedder(embedder, titles[:256], config.threads)
    int8_pool_of = {s: served_pool(s, int8.encode_queries(queries[s])) for s in SPLITS}
    student = None
    if config.student is not None:
        student_dir = check_model_folder(config.student)
        teacher = json.loads((student_dir / "checkpoint.json").read_text()).get(
            "teacher_weights") if (student_dir / "checkpoint.json").is_file() else None
        if teacher != weights_digest(Path(manifest["checkpoint"])):
            raise ValueError(f"--student {student_dir} was not distilled from this run's encoder "
                             f"{manifest['checkpoint']} (`fusionrank distil --run {run}`)")
        folder = config.cache / "embeddings" / f"{weights_digest(student_dir)}-student" / "onnx"
        fp32 = Embedder(exported_encoder(student_dir, folder, titles), config.threads)
        if fp32.queries.encoder.dimension != tuned.shape[1]:
            raise ValueError(f"--student {student_dir} embeds {fp32.queries.encoder.dimension}-d "
                             f"vectors, the run's catalogue {tuned.shape[1]}-d")
        student = {"fp32": fp32, "int8": int8_embedder(fp32, titles[:256], config.threads)}
        student_vectors = {s: {p: e.encode_queries(queries[s]) for p, e in student.items()}
                           for s in SPLITS}
        student_pool_of = {s: {p: served_pool(s, v) for p, v in student_vectors[s].items()}
                           for s in SPLITS}
    dev_judged = judgements.qrels("dev")
    hybrid = fit_weights(pool_of["dev"], dev_judged, ("similarity", "lexical"),
                         pools.grid_step, "hybrid").weights
    no_lexical = fit_weights(pool_of["dev"], dev_judged, ("similarity", "feedback"),
                             pools.grid_step, "fused without the lexical term").weights
    feedback_only = FusionWeights({"feedback": 1.0}, "feedback head alone")
    # The cascade `fusionrank tune-cascade` chose on dev, where the run was tuned: the
    # weights `fusionrank build` then serves by default.
    depth = chosen_depth(run)
    cascade = cascade_weights(run, depth) if depth is not None else None

    results: dict[str, dict] = {}
    for s in SPLITS:
        judged = judgements.qrels(s)
        qs = queries[s]
        systems: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        bm25 = [lexical.top(terms, DEPTH) for terms in pool_of[s].terms]
        systems["bm25"] = (np.stack([r for r, _ in bm25]), np.stack([x for _, x in bm25]))
        systems["pretrained"] = dense_candidates(base, base_embedder.encode_queries(qs), DEPTH,
                                                 block=256)
        systems["finetuned"] = dense_candidates(tuned, np.stack([resources.query_vectors[q]
                                                                 for q in qs]), DEPTH, block=256)
        pool = pool_of[s]
        systems["hybrid"] = ranked(pool, hybrid)
        systems["fused − lexical"] = ranked(pool, no_lexical)
        systems["feedback only"] = ranked(pool, feedback_only)
        systems["fused (dense pool)"] = ranked(pool.first(pools.dense), served)
        systems["fused"] = ranked(pool, served)
        systems["fused, int8 query encoder"] = ranked(int8_pool_of[s], served)
        if cascade is not None:
            systems[f"fused, cascade {depth}"] = ranked(pool, cascade)
            systems[f"fused, cascade {depth}, int8 query encoder"] = ranked(int8_pool_of[s],
                                                                           cascade)
        if student is not None:
            systems["student"] = dense_candidates(tuned, student_vectors[s]["fp32"], DEPTH,
                                                  block=256)
            systems["fused, student query encoder"] = ranked(student_pool_of[s]["fp32"], served)
            systems["fused, student int8 query encoder"] = ranked(student_pool_of[s]["int8"],
                                                                  served)
            if cascade is not None:
                systems[f"fused, cascade {depth}, student query encoder"] = ranked(
                    student_pool_of[s]["fp32"], cascade)
                systems[f"fused, cascade {depth}, student int8 query encoder"] = ranked(
                    student_pool_of[s]["int8"], cascade)
        results[s] = {name: evaluate_ranking(judged, qs, rows, scores)
                      for name, (rows, scores) in systems.items()}
        results[s]["queries"] = len(qs)
        log(f"{s}: " + ", ".join(f"{n} {m['ndcg@10']:.3f}" for n, m in results[s].items()
                                 if isinstance(m, dict)))

    feedback = feedback_report(resources, run)
    report = {"run": str(run), "data_file": judgements.source, "data_sha256": judgements.sha256,
              "split": asdict(split), "catalogue_products": len(titles),
              "queries": {s: len(queries[s]) for s in SPLITS},
              "checkpoint": manifest["checkpoint"], "init_model": manifest["init_model"],
              "weights": {"fused": asdict(served), "hybrid": asdict(hybrid),
                          "fused − lexical": asdict(no_lexical),
                          **({f"fused, cascade {depth}": asdict(cascade)} if cascade else {})},
              "retrieval": results, "feedback": feedback,
              "seconds": round(time.perf_counter() - started, 1), "command": config.command}
    if student is not None:
        report["student"] = student_report(
            Path(config.student), results,
            {"teacher fp32": embedder.onnx_dir / artefacts.ENCODER,
             "teacher int8": int8.onnx_dir / artefacts.ENCODER_INT8,
             "student fp32": student["fp32"].onnx_dir / artefacts.ENCODER,
             "student int8": student["int8"].onnx_dir / artefacts.ENCODER_INT8},
            embedder.onnx_dir / artefacts.TOKENIZER, judgements.ranked_queries("test"))
        report["student"]["choice"] = choice = student_choice(Path(config.student), teacher,
                                                              results, depth)
        choice_path = Path(config.student).parent / STUDENT_CHOICE
        choice_path.write_text(json.dumps(choice, indent=2) + "\n")
        log(f"student {'served' if choice['serve'] else 'not served'} by `fusionrank build "
            f"--student auto`: {choice_path}")
    if config.rerankers:
        from fusionrank.training.search.rerank_evaluation import rerank_report
        from fusionrank.training.search.served_rankings import ServedRanker

        report["reranker"] = rerank_report(
            ServedRanker.load(run, config.cache, config.threads), list(config.rerankers),
            Path(config.out), config.reranker_depths, config.threads)
    write_report(report, Path(config.out))
    return report


def student_report(student: Path, results: dict, encoders: dict[str, Path], tokenizer: Path,
                   test_queries: list[str]) -> dict:
    """Teacher and student side by side: fused NDCG@10 / Recall@100 per split and precision,
    query-encoding latency (FP32, INT8; batch 1 and 8), speed-ups, and the target's verdict."""
    from fusionrank.training.search.latency import THREADS, encoding_latency

    rows = {("teacher", "fp32"): "fused", ("teacher", "int8"): "fused, int8 query encoder",
            ("student", "fp32"): "fused, student query encoder",
            ("student", "int8"): "fused, student int8 query encoder"}
    quality = {s: {f"{who} {precision}": {m: results[s][name][m] for m in ("ndcg@10",
                                                                           "recall@100")}
                   for (who, precision), name in rows.items()} for s in SPLITS}
    log("timing the query encoders (test queries, ONNX Runtime CPU)")
    latency = encoding_latency(encoders, tokenizer, test_queries, LATENCY_BATCHES)
    speedup = {p: {b: latency[f"teacher {p}"][b]["median_ms"] / latency[f"student {p}"][b][
        "median_ms"] for b in LATENCY_BATCHES} for p in ("fp32", "int8")}
    loss = {p: quality["test"][f"teacher {p}"]["ndcg@10"] - quality["test"][f"student {p}"][
        "ndcg@10"] for p in ("fp32", "int8")}
    slowest = min(min(v.values()) for v in speedup.values())
    manifest = check_model_folder(student) / "checkpoint.json"
    return {"checkpoint": str(student),
            "distillation": json.loads(manifest.read_text()) if manifest.is_file() else None,
            "quality": quality, "latency_threads": THREADS,
            "latency_queries": len(test_queries), "latency": latency, "speedup": speedup,
            "test_ndcg10_loss": loss,
            "target": {"speedup": TARGET_SPEEDUP, "max_ndcg10_loss": TARGET_MAX_NDCG_LOSS,
                       "lowest_speedup": slowest, "largest_ndcg10_loss": max(loss.values()),
                       "met": slowest >= TARGET_SPEEDUP
                       and max(loss.values()) <= TARGET_MAX_NDCG_LOSS}}


def student_choice(student: Path, teacher_weights: str, results: dict,
                   depth: int | None) -> dict:
    """Whether `fusionrank build --student auto` serves the student: by SERVE_MAX_NDCG_LOSS on
    dev, the teacher and the student each ranked as the build serves the run. The checkpoint is
    named relative to the choice file, and with the weights it was distilled from
    (`teacher_weights`), so a build can tell a choice made for another encoder."""
    cascade = f"cascade {depth}, " if depth is not None else ""
    names = {"teacher": f"fused, {cascade}int8 query encoder",
             "student": f"fused, {cascade}student int8 query encoder"}
    ndcg = {s: {who: results[s][name]["ndcg@10"] for who, name in names.items()} for s in SPLITS}
    loss = {s: ndcg[s]["teacher"] - ndcg[s]["student"] for s in SPLITS}
    return {"checkpoint": student.name, "teacher_weights": teacher_weights,
            "serve": loss["dev"] <= SERVE_MAX_NDCG_LOSS,
            "rule": f"dev NDCG@10 of '{names['student']}' within {SERVE_MAX_NDCG_LOSS} of "
                    f"'{names['teacher']}'",
            "ndcg@10": ndcg, "loss": loss}


def student_table(student: dict) -> str:
    """Markdown: teacher vs student, quality and latency, and the target's verdict."""
    lines = ["**teacher vs student query encoder** (the catalogue embedded by the teacher; "
             "everything after the encoder is the run's)", "",
             "| query encoder | test NDCG@10 | test Recall@100 | dev NDCG@10 | dev Recall@100 "
             "| batch 1, ms | batch 8, ms |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in ("teacher fp32", "student fp32", "teacher int8", "student int8"):
        test, dev = student["quality"]["test"][name], student["quality"]["dev"][name]
        lat = student["latency"][name]
        lines.append(f"| {name} | {test['ndcg@10']:.4f} | {test['recall@100']:.4f} | "
                     f"{dev['ndcg@10']:.4f} | {dev['recall@100']:.4f} | "
                     + " | ".join(f"{lat[b]['median_ms']:.3f}" for b in LATENCY_BATCHES) + " |")
    target = student["target"]
    lines += ["", "Speed-up (teacher ÷ student, median ONNX Runtime CPU call over "
              f"{student['latency_queries']} test queries, {student['latency_threads']} threads): "
              + ", ".join(f"{p.upper()} batch {b} {v:.2f}×" for p, by in student["speedup"].items()
                          for b, v in by.items()) + ".",
              f"Target ≥ {target['speedup']}× with fused test NDCG@10 within "
              f"{target['max_ndcg10_loss']} of the teacher: lowest speed-up "
              f"{target['lowest_speedup']:.2f}×, largest NDCG@10 loss "
              f"{target['largest_ndcg10_loss']:+.4f} → **{'met' if target['met'] else 'missed'}**.",
              ""]
    if "choice" in student:
        choice = student["choice"]
        lines += [f"`fusionrank build --student auto` serves the student: "
                  f"**{'yes' if choice['serve'] else 'no'}** ({choice['rule']}: dev "
                  f"{-choice['loss']['dev']:+.4f}; test {-choice['loss']['test']:+.4f}).", ""]
    return "\n".join(lines)


def feedback_report(resources: PairResources, run: Path) -> dict:
    head = OnnxFeedbackHead(run / artefacts.FEEDBACK_HEAD)
    train_mean = float(resources.judgements.of("train").grade.mean())
    predictions, parts = {}, {}
    for s in SPLITS:
        pairs = judged_pairs(resources, s)
        inputs = HeadInputs.per_pair(pairs.query, pairs.product, pairs.features)
        predictions[s] = (head(inputs), pairs.grade)
        parts[s] = {part: rmse(head(inputs, part), pairs.grade) for part in HEAD_PARTS}
    threshold = choose_threshold(*predictions["dev"])
    out: dict = {"threshold_from_dev": threshold, "relevant_grade": 2.5}
    for s, (predicted, grade) in predictions.items():
        out[s] = {"pairs": len(grade), "rmse": rmse(predicted, grade),
                  "rmse_mean_predictor": rmse(np.full_like(grade, train_mean), grade),
                  "rmse_parts": parts[s],
                  **{k: v for k, v in asdict(classify(predicted, grade, threshold)).items()
                     if k != "threshold"}}
    return out


def markdown_table(report: dict) -> str:
    lines = []
    for s in SPLITS:
        results = report["retrieval"][s]
        products = report["catalogue_products"]
        lines += [f"**{s}** ({results['queries']} queries, {products} products)",
                  "", "| system | " + " | ".join(METRICS) + " |",
                  "| --- |" + " --- |" * len(METRICS)]
        for name, metrics in results.items():
            if isinstance(metrics, dict):
                lines.append(f"| {name} | " + " | ".join(f"{metrics[m]:.4f}" for m in METRICS)
                             + " |")
        lines.append("")
    fb = report["feedback"]
    lines += [f"**feedback head** (relevant = grade ≥ {fb['relevant_grade']}, threshold "
              f"{fb['threshold_from_dev']:.3f} chosen on dev)", "",
              "| split | pairs | RMSE | RMSE networks alone | RMSE trees alone "
              "| RMSE (mean predictor) | precision | recall | F1 | accuracy |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in SPLITS:
        m = fb[s]
        lines.append(f"| {s} | {m['pairs']} | {m['rmse']:.4f} | "
                     + " | ".join(f"{m['rmse_parts'][part]:.4f}" for part in HEAD_PARTS)
                     + f" | {m['rmse_mean_predictor']:.4f} | {m['precision']:.4f} | "
                     f"{m['recall']:.4f} | {m['f1']:.4f} | {m['accuracy']:.4f} |")
    if report.get("student"):
        lines += ["", student_table(report["student"])]
    if report.get("reranker"):
        from fusionrank.training.search.rerank_evaluation import markdown_table as rerank_table

        lines += ["", "**cross-encoder reranker**", "", rerank_table(report["reranker"])]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SPLITS), figsize=(12, 4.2), sharey=True)
    for ax, s in zip(axes, SPLITS, strict=True):
        results = {n: m for n, m in report["retrieval"][s].items() if isinstance(m, dict)}
        names = list(results)
        x = np.arange(len(names))
        for i, metric in enumerate(METRICS):
            ax.bar(x + (i - 1) * 0.27, [results[n][metric] for n in names], 0.27, label=metric)
        ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{s} ({report['queries'][s]} queries, full catalogue)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "evaluation.md").write_text(markdown_table(report))
    plot(report, out / "evaluation.png")
    log(f"report written to {out}")
