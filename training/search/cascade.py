"""`fusionrank tune-cascade`: the depth of the ranking cascade, chosen on dev (issue 25).

A cascade (`fusionrank.core.fusion.Cascade`) orders each query's pool of ~200 candidates by a
cheap first stage, the hybrid score α·s + γ·lexical (fitted on dev here, as `fusionrank
evaluate` fits its hybrid row), and computes the feedback features and head for its top N only;
S orders those N, the rest follow in the first stage's order. For each N of a sweep this:

- refits S's weights for the cascade on the dev pools (the grid of `fit_weights`);
- scores dev NDCG@10 and Recall@100 of the served ranking;
- times the steps the cascade changes (ScoreCandidates and Rank: the pool, the features and the
  head of its top N, the ranking) in process, per query at batch 8, on dev queries.

and chooses the smallest N whose dev NDCG@10 is within `tolerance` of the run's one-stage
ranking (today's). The fits go to RUN/cascade.json, which `fusionrank build --cascade-depth`
reads; a later tuning of other depths adds them to the file's (the choice is made again over
all of them). The pools are the runtime's own (`SearchRuntime.candidates` / `feedback`), so what is
fitted and timed here is what the server runs.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.fusion import Cascade, FusionWeights
from fusionrank.core.search.features import FeatureSources
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
from fusionrank.training.embeddings import catalogue_embeddings
from fusionrank.training.metrics import evaluate_ranking
from fusionrank.training.search.data import SplitConfig, load_judgements
from fusionrank.training.search.fusion import SIGNALS, fit_weights
from fusionrank.training.search.pipeline import PoolConfig, load_run

CASCADE_FILE = "cascade.json"
DEPTHS = (8, 16, 32, 64, 200)
TOLERANCE = 0.001  # dev NDCG@10 a cascade may lose against the one-stage ranking
TIMING_BATCH = 8  # queries per timed call, as the server batches them


@dataclass
class CascadeConfig:
    run: Path
    depths: tuple[int, ...] = DEPTHS
    data: Path | None = None  # default: the run's own data file
    cache: Path = Path("runs/cache")
    threads: int | None = None
    timing_queries: int = 400  # dev queries timed per depth
    tolerance: float = TOLERANCE
    command: str | None = None


def log(message: str) -> None:
    print(f"[tune-cascade] {message}", file=sys.stderr, flush=True)


@dataclass
class DevPools:
    """The dev queries' served pools, their feedback over every candidate, and the dense
    candidates they grew from (the timing builds the pools again from these)."""

    queries: list[str]
    vectors: np.ndarray
    dense: tuple[np.ndarray, np.ndarray]  # rows, similarity
    pool: CandidatePool


def check_depths(depths: tuple[int, ...], pools: PoolConfig) -> None:
    size = pools.dense + pools.lexical  # each query's pool: dense candidates, then BM25 ones
    bad = [d for d in depths if not 1 <= d <= size]
    if bad:
        raise ValueError(f"cascade depths {bad} outside 1..{size} (the pool's size)")


def tune_cascade(config: CascadeConfig) -> dict:
    """A finished run's dev pools, from its files; then `sweep`."""
    run = Path(config.run)
    manifest = load_run(run)
    pools = PoolConfig(**manifest["config"]["pools"])
    check_depths(config.depths, pools)
    judgements = load_judgements(config.data or manifest["data_file"],
                                 SplitConfig(**manifest["config"]["split"]))
    titles = judgements.catalogue.titles
    embeddings, embedder = catalogue_embeddings(Path(manifest["checkpoint"]), titles,
                                                config.cache / "embeddings", config.threads)
    sources = FeatureSources.build(titles, embeddings, ProductPriors.load(run / artefacts.PRIORS),
                                   JudgementMemory.load(run / artefacts.MEMORY))
    today = FusionWeights.load(run / artefacts.FUSION_WEIGHTS)
    runtime = SearchRuntime(LexicalIndex.load(run / artefacts.LEXICAL), sources,
                            OnnxFeedbackHead(run / artefacts.FEEDBACK_HEAD, config.threads),
                            today, pools.lexical)
    queries = judgements.ranked_queries("dev")
    vectors = embedder.encode_queries(queries)
    dense = dense_candidates(embeddings, vectors, pools.dense)
    pool = runtime.candidates(queries, vectors, *dense)
    pool.feedback = runtime.feedback(pool, vectors)
    return sweep(config, DevPools(queries, vectors, dense, pool), judgements.qrels("dev"),
                 runtime, today, pools.grid_step)


def sweep(config: CascadeConfig, dev: DevPools, judged, runtime: SearchRuntime,
          today: FusionWeights, grid_step: float) -> dict:
    """Fit, score and time each depth on `dev` (`today`: the run's one-stage weights); write
    RUN/cascade.json; answer what it holds."""
    run = Path(config.run)
    queries, vectors, dense, pool = dev.queries, dev.vectors, dev.dense, dev.pool
    size = pool.rows.shape[1]  # (smaller only for a catalogue smaller than the pool)
    first = fit_weights(pool, judged, ("similarity", "lexical"), grid_step,
                        "cascade first stage (hybrid)", log).weights
    first_stage = {s: w for s, w in first.weights.items() if w > 0}
    one_stage = _scored(pool, judged, today)
    log(f"one stage (today's): dev NDCG@10 {one_stage['ndcg@10']:.4f}")
    depths = sorted(set(config.depths))
    fitted = {depth: today if depth >= size else fit_weights(
        pool, judged, SIGNALS, grid_step, f"fused ranker, cascade depth {depth}", log,
        cascade=Cascade(depth, first_stage)).weights for depth in depths}
    timed = slice(0, min(config.timing_queries, len(queries)))
    core = core_ms_per_query(runtime, fitted, queries[timed], vectors[timed],
                             dense[0][timed], dense[1][timed])
    rows = []
    for depth in depths:
        scores = _scored(pool, judged, fitted[depth])
        rows.append({"depth": depth, "weights": asdict(fitted[depth]), **scores,
                     "core_ms_per_query": core[depth]})
        log(f"depth {depth}: dev NDCG@10 {scores['ndcg@10']:.4f}, recall@100 "
            f"{scores['recall@100']:.4f}, ScoreCandidates + Rank {core[depth]:.2f} ms a query")
    rows = sorted([*_kept(run / CASCADE_FILE, first, one_stage, size, depths), *rows],
                  key=lambda r: r["depth"])
    eligible = [r for r in rows if r["ndcg@10"] >= one_stage["ndcg@10"] - config.tolerance]
    chosen = min(eligible, key=lambda r: r["depth"])["depth"]
    report = {"run": str(run), "dev_queries": len(queries), "pool": size,
              "first_stage": asdict(first), "one_stage": one_stage,
              "tolerance": config.tolerance, "rule": (
                  f"the smallest depth whose dev NDCG@10 is at least the one-stage ranking's "
                  f"less {config.tolerance}"),
              "timing": {"queries": timed.stop, "batch": TIMING_BATCH, "threads": config.threads,
                         "what": "ScoreCandidates + Rank in process (the pool, the head's "
                                 "features and grades, the ranking), median per query"},
              "depths": rows, "chosen": chosen, "command": config.command}
    (run / CASCADE_FILE).write_text(json.dumps(report, indent=2) + "\n")
    log(f"chose depth {chosen}; wrote {run / CASCADE_FILE}")
    return report


def _kept(path: Path, first: FusionWeights, one_stage: dict, size: int,
          refitted: list[int]) -> list[dict]:
    """The depths an earlier tuning of the same pools fitted and this one does not refit, so
    `--depths 12` adds a depth to the sweep rather than replacing it. Pools that changed since
    (another first stage, another one-stage score or pool size) keep nothing."""
    if not path.is_file():
        return []
    before = json.loads(path.read_text())
    same = (before["first_stage"]["weights"] == first.weights and before["pool"] == size
            and before["one_stage"] == one_stage)
    return [row for row in before["depths"] if same and row["depth"] not in refitted]


def _scored(pool: CandidatePool, judged, weights: FusionWeights) -> dict[str, float]:
    rows, scores = ranked(pool, weights, DEPTH)
    return evaluate_ranking(judged, pool.queries, rows, scores, ("ndcg@10", "recall@100"))


def core_ms_per_query(runtime: SearchRuntime, weights: dict[int, FusionWeights],
                      queries: list[str], vectors: np.ndarray, dense_rows: np.ndarray,
                      dense_similarity: np.ndarray, batch: int = TIMING_BATCH
                      ) -> dict[int, float]:
    """Per depth, the median ms a query of ScoreCandidates + Rank as the server runs them on a
    batch: the pool, the head's features and grades (the cascade's head only), the ranking.
    The depths take turns batch by batch, so a machine that slows down meanwhile slows each
    alike."""
    per_query: dict[int, list[float]] = {depth: [] for depth in weights}
    for start in range(0, len(queries) - batch + 1, batch):
        part = slice(start, start + batch)
        for depth, served in weights.items():
            began = time.perf_counter()
            pool = runtime.candidates(queries[part], vectors[part], dense_rows[part],
                                      dense_similarity[part])
            pool.feedback = runtime.feedback(pool, vectors[part],
                                             served.head(pool.rows, pool.tensors()), chunk=batch)
            ranked(pool, served, 10)
            per_query[depth].append((time.perf_counter() - began) * 1000 / batch)
    return {depth: round(float(np.median(times)), 3) for depth, times in per_query.items()}


def cascade_weights(run: Path, depth: int) -> FusionWeights:
    """The weights `tune-cascade` fitted for `depth` on this run (the run's own for a depth
    that covers the whole pool)."""
    path = Path(run) / CASCADE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run} holds no cascade fits ({CASCADE_FILE}): run "
                                f"`fusionrank tune-cascade --run {run} --depths {depth}`")
    report = json.loads(path.read_text())
    if depth >= report["pool"]:
        return FusionWeights.load(Path(run) / artefacts.FUSION_WEIGHTS)
    fitted = {row["depth"]: row for row in report["depths"]}
    if depth not in fitted:
        raise ValueError(f"{run} has no cascade fitted for depth {depth} (fitted: "
                         f"{sorted(fitted)}): run `fusionrank tune-cascade --run {run} "
                         f"--depths {depth}`")
    return FusionWeights(**fitted[depth]["weights"])


def chosen_depth(run: Path) -> int | None:
    """The depth `tune-cascade` chose for this run (None: never tuned)."""
    path = Path(run) / CASCADE_FILE
    return json.loads(path.read_text())["chosen"] if path.is_file() else None


def markdown_table(report: dict) -> str:
    lines = [f"Cascade sweep on {report['dev_queries']} dev queries (pool {report['pool']}); "
             f"first stage: {report['first_stage']['weights']}; one stage: dev NDCG@10 "
             f"{report['one_stage']['ndcg@10']:.4f}", "",
             "| depth | dev NDCG@10 | dev Recall@100 | ScoreCandidates + Rank, ms a query | "
             "weights |", "| --- | --- | --- | --- | --- |"]
    for row in report["depths"]:
        mark = " (chosen)" if row["depth"] == report["chosen"] else ""
        lines.append(f"| {row['depth']}{mark} | {row['ndcg@10']:.4f} | "
                     f"{row['recall@100']:.4f} | {row['core_ms_per_query']:.2f} | "
                     f"{row['weights']['weights']} |")
    lines.append("")
    lines.append(f"Rule: {report['rule']}.")
    return "\n".join(lines)
