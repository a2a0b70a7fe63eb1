"""Does every feature group earn its cost? Per group of the feedback head's features, and per
part of the head: its core time a query, and dev NDCG@10 without it (issue 25).

    .venv/bin/python -m benchmarks.feature_groups --run runs/relevance

- **Without it, refitted.** The head is trained again (networks and trees, the run's own
  settings and seeds) with the group's features held at 0 in training, dev and ranking alike,
  so it can learn nothing from them; the fusion weights are then refitted on dev for the
  served cascade (the run's tuned depth and first stage, `fusionrank tune-cascade`). A head
  part (networks, trees) is left out by ranking with the other part's grades alone (refitted
  the same way). Every row is compared with the head trained again with every feature, in the
  same run (training is seeded, so it is the run's own head to float rounding).
- **Core time.** Each group's computation as the scoring step runs it, in process on one
  thread (as each served copy), 8 dev queries a call, for the cascade's head (N products a
  query) and for the whole pool (200, no cascade): the title-term features, the trigram
  cosine, the term-vector features, the feature graph (cosine, priors and the judgement
  memory are one ONNX graph; the priors are a gather of two numbers, so the graph's time is
  the memory's), and the head's ONNX graph by part.

Writes benchmarks/reports/feature_groups.md and .json. Dev only: test is never read.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
from threadpoolctl import threadpool_limits

from benchmarks.harness import REPORTS, save_report, stamp, table
from fusionrank.core import artefacts
from fusionrank.core.fusion import Cascade, FusionWeights
from fusionrank.core.search.feature_graph import MEMORY_FEATURES
from fusionrank.core.search.features import FEATURES, FeatureSources, HeadInputs, graph_features
from fusionrank.core.search.lexical import LexicalIndex
from fusionrank.core.search.runtime import (
    CandidatePool,
    OnnxFeedbackHead,
    SearchRuntime,
    dense_candidates,
    ranked,
)
from fusionrank.core.search.term_vectors import TERM_VECTOR_FEATURES, TermVectors
from fusionrank.core.search.title_terms import HEAD_FEATURES, TitleTerms
from fusionrank.training.embeddings import catalogue_embeddings
from fusionrank.training.metrics import evaluate_ranking
from fusionrank.training.search.cascade import CASCADE_FILE
from fusionrank.training.search.data import SplitConfig, load_judgements
from fusionrank.training.search.feedback import FeedbackConfig, PairSet, train_feedback_model
from fusionrank.training.search.fusion import SIGNALS, fit_weights
from fusionrank.training.search.pairs import PairResources, judged_pairs
from fusionrank.training.search.pipeline import (
    PoolConfig,
    load_run,
    out_of_fold_priors,
    query_vectors,
    training_knowledge,
)

NAME = "feature_groups"
GROUPS = {
    "judgement memory": MEMORY_FEATURES,
    "priors": ("prior", "prior_count"),
    "title terms": ("overlap", "title_cover", "query_terms", "last_term", "first_term",
                    "bigrams", "numbers", "title_terms", *HEAD_FEATURES),
    "term vectors": TERM_VECTOR_FEATURES,
    "char trigrams": ("char_cosine",),
}
BATCH = 8


def columns(names) -> np.ndarray:
    return np.array([FEATURES.index(n) for n in names], dtype=np.int64)


def without(pairs: PairSet, hidden: np.ndarray) -> PairSet:
    features = pairs.features.copy()
    features[:, hidden] = 0.0
    return PairSet(pairs.query, pairs.product, features, pairs.grade)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/relevance"))
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--timing-queries", type=int, default=400)
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args(argv)
    run = args.run
    manifest = load_run(run)
    tuning = json.loads((run / CASCADE_FILE).read_text())
    depth, first = tuning["chosen"], {s: w for s, w in tuning["first_stage"]["weights"].items()
                                      if w > 0}
    pools = PoolConfig(**manifest["config"]["pools"])
    feedback = FeedbackConfig(**manifest["config"]["feedback"])
    judgements = load_judgements(manifest["data_file"], SplitConfig(**manifest["config"]["split"]))
    titles = judgements.catalogue.titles
    embeddings, embedder = catalogue_embeddings(Path(manifest["checkpoint"]), titles,
                                                args.cache / "embeddings", 2)
    vectors = query_vectors(embedder, sorted(judgements.frame["query"].unique()))
    priors, memory = training_knowledge(judgements, embeddings, vectors)
    terms = TitleTerms(titles)
    sources = FeatureSources(embeddings, terms, TermVectors.fit(terms, embeddings), priors, memory)
    lexical = LexicalIndex.load(run / artefacts.LEXICAL)
    resources = PairResources(judgements, lexical, sources, vectors,
                              fold_priors=out_of_fold_priors(judgements))
    train_pairs, dev_pairs = judged_pairs(resources, "train"), judged_pairs(resources, "dev")
    head = OnnxFeedbackHead(run / artefacts.FEEDBACK_HEAD, threads=1)
    runtime = SearchRuntime(lexical, sources, head, extra=pools.lexical)
    queries = judgements.ranked_queries("dev")
    judged = judgements.qrels("dev")
    dev_vectors = np.stack([vectors[q] for q in queries])
    dense = dense_candidates(embeddings, dev_vectors, pools.dense)
    pool = runtime.candidates(queries, dev_vectors, *dense)
    inputs = sources.head_inputs(pool.queries, pool.terms, dev_vectors, pool.rows, pool.lexical)
    ranking = PairSet(inputs.pair_queries(), inputs.product, inputs.features,
                      np.zeros(len(inputs.features), np.float32))

    def dev_ndcg(grades: np.ndarray, what: str) -> dict:
        scored = CandidatePool(pool.queries, pool.terms, pool.rows, pool.similarity,
                               pool.lexical, grades.reshape(pool.rows.shape))
        fit = fit_weights(scored, judged, SIGNALS, pools.grid_step, what,
                          cascade=Cascade(depth, first))
        return {"dev_ndcg10": round(fit.dev_ndcg10, 4), "weights": fit.weights.weights}

    quality = {}
    for name, hidden in [("every feature", np.zeros(0, np.int64)),
                         *((g, columns(f)) for g, f in GROUPS.items())]:
        began = time.perf_counter()
        model, fitted = train_feedback_model(without(train_pairs, hidden),
                                             without(dev_pairs, hidden), feedback)
        parts = model.predict_parts(ranking.query, ranking.product,
                                    without(ranking, hidden).features)
        quality[name] = {**dev_ndcg(parts["grade"], f"without {name}"),
                         "dev_rmse": fitted["dev_rmse"]["grade"],
                         "seconds": round(time.perf_counter() - began, 1)}
        if name == "every feature":
            for part in ("network", "trees"):
                quality[f"head: {part} alone"] = dev_ndcg(parts[part], f"{part} alone")
        print(name, quality[name], flush=True)
    quality["no head (the first stage alone)"] = {
        "dev_ndcg10": round(evaluate_ranking(judged, queries, *ranked(
            pool, FusionWeights(first)), ("ndcg@10",))["ndcg@10"], 4)}
    timing = time_groups(runtime, run / artefacts.FEEDBACK_HEAD, queries[:args.timing_queries],
                         dev_vectors, dense, depth)
    report = {**stamp(), "run": str(run), "dev_queries": len(queries), "cascade_depth": depth,
              "first_stage": first, "quality": quality, "timing": timing,
              "groups": {g: list(f) for g, f in GROUPS.items()}}
    save_report(NAME, report, render(report), args.out)
    return 0


def part_graphs(path: Path) -> dict[str, OnnxFeedbackHead]:
    """The head's networks and its trees as graphs of their own (the nodes each output needs,
    `onnx.utils.Extractor`): ONNX Runtime runs a whole graph whichever output is asked."""
    model = onnx.load(str(path))
    inputs = [i.name for i in model.graph.input]
    parts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for part in ("network", "trees"):
            extracted = Path(tmp) / f"{part}.onnx"
            onnx.save(onnx.utils.Extractor(model).extract_model(inputs, [part]), str(extracted))
            parts[part] = OnnxFeedbackHead(extracted, threads=1)
    return parts


def time_groups(runtime: SearchRuntime, head_path: Path, queries: list[str],
                vectors: np.ndarray, dense, depth: int) -> dict:
    """ms a query of each group's computation (one thread, BATCH queries a call), over each
    query's top `depth` by the first stage and over its whole pool; the depths take turns."""
    sources = runtime.sources
    head_parts = {"grade": runtime.head, **part_graphs(head_path)}
    spent: dict[str, dict[str, list[float]]] = {}
    with threadpool_limits(1):
        for start in range(0, len(queries) - BATCH + 1, BATCH):
            part = slice(start, start + BATCH)
            pool = runtime.candidates(queries[part], vectors[part], dense[0][part],
                                      dense[1][part])
            for label, n in ((f"head of {depth}", depth), ("whole pool", pool.rows.shape[1])):
                rows = pool.rows[:, :n].reshape(-1)
                sizes = [n] * len(pool.queries)
                owner = np.repeat(np.arange(len(pool.queries)), n)
                products = np.asarray(sources.embeddings[rows], dtype=np.float32)
                steps = group_steps(sources, pool, vectors[part], rows, owner, sizes, products)
                for name, (step, step_args) in steps.items():
                    began = time.perf_counter()
                    step(*step_args)
                    spent.setdefault(name, {}).setdefault(label, []).append(
                        (time.perf_counter() - began) * 1000 / BATCH)
                features = np.zeros((len(rows), len(FEATURES)), np.float32)
                inputs = HeadInputs(vectors[part], owner, products, features)
                for output, graph in head_parts.items():
                    began = time.perf_counter()
                    graph(inputs, output)
                    spent.setdefault(f"head: {output}", {}).setdefault(label, []).append(
                        (time.perf_counter() - began) * 1000 / BATCH)
    return {name: {label: round(float(np.median(v)), 3) for label, v in by.items()}
            for name, by in spent.items()}


def group_steps(sources: FeatureSources, pool: CandidatePool, vectors: np.ndarray,
                rows: np.ndarray, owner: np.ndarray, sizes: list[int], products: np.ndarray
                ) -> dict[str, tuple]:
    """Each group's computation as `FeatureSources.features` calls it: (function, arguments)."""
    titles = sources.titles
    return {
        "title terms": (titles.term_features, (pool.terms, rows, owner)),
        "char trigrams": (titles.char_cosine, (pool.queries, rows, owner)),
        "term vectors": (sources.term_vectors.features, (pool.terms, rows, sizes)),
        "feature graph (judgement memory, priors, cosine)": (graph_features, (
            sources.memory.graph, vectors, sizes, rows, products,
            [sources.priors] * len(pool.queries))),
    }


def render(report: dict) -> str:
    quality, timing = report["quality"], report["timing"]
    depth = report["cascade_depth"]
    base = quality["every feature"]["dev_ndcg10"]
    rows = [[name, f"{q['dev_ndcg10']:.4f}", f"{q['dev_ndcg10'] - base:+.4f}",
             f"{q['dev_rmse']:.4f}" if "dev_rmse" in q else "", str(q.get("weights", ""))]
            for name, q in quality.items()]
    times = [[name, f"{by[f'head of {depth}']:.3f}", f"{by['whole pool']:.3f}"]
             for name, by in timing.items()]
    return "\n".join([
        "# Does every feature group earn its cost?", "",
        f"- Command: `{report['command']}`",
        f"- Machine: {report['machine']}", f"- Date: {report['date']}",
        f"- Run `{report['run']}`, {report['dev_queries']} dev queries; the served cascade: "
        f"depth {depth}, first stage {report['first_stage']}. Test is never read.", "",
        "## Dev NDCG@10 without each group (the head trained again, the weights refitted)", "",
        table(["without", "dev NDCG@10", "vs every feature", "head dev RMSE",
               "refitted weights"], rows), "",
        "## Core time a query (one thread, 8 queries a call)", "",
        table(["computation", f"the cascade's head ({depth} a query), ms",
               "the whole pool (200), ms"], times), "",
        "The head's parts are timed as graphs of their own (the nodes each part's output "
        "needs, cut out of the served graph): ONNX Runtime runs a whole graph whichever output "
        "is asked. \"head: grade\" is the served graph, both parts and their blend.", ""])


if __name__ == "__main__":
    raise SystemExit(main())
