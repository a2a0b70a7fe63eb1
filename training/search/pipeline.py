"""`fusionrank train`: fine-tune the encoder, train the feedback head, fit the fusion weights.

Run folder (runs/<name>/):
    encoder/best/           the fine-tuned encoder: Hugging Face folder + checkpoint.json
    encoder/last/           resumable training state;  encoder/training_curve.png, history.json
    lexical.npz             the BM25 index over the catalogue (served by the `scoring` step)
    feedback_head.onnx      the feedback head (served by the `scoring` step), with its
                            priors.npy and memory.npz (training judgements, fine-tuned vectors)
    ranking.json            FusionWeights of the full ranker (served by the `ranker` step)
    cascade.json            the ranking cascade's depths fitted on dev, and the one chosen
                            (training/search/cascade.py; `fusionrank build` serves it)
    run.json                data file + hash, split, hyper-parameters, results of every stage
The ONNX exports of the starting and the fine-tuned encoder (each parity-checked against
PyTorch) and their catalogue embeddings are cached under --cache, keyed by weights and titles,
so `fusionrank evaluate` reuses them.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from fusionrank.core import artefacts
from fusionrank.core.model_folders import bundled_model_path, check_model_folder
from fusionrank.core.search.features import FeatureSources
from fusionrank.core.search.judgements import JudgementMemory, ProductPriors, query_fold
from fusionrank.core.search.lexical import LexicalIndex
from fusionrank.core.search.runtime import (
    DENSE_CANDIDATES,
    LEXICAL_CANDIDATES,
    OnnxFeedbackHead,
    SearchRuntime,
    dense_candidates,
)
from fusionrank.core.search.term_vectors import TermVectors
from fusionrank.core.search.title_terms import TitleTerms
from fusionrank.export.search.feedback_head import export_feedback_head
from fusionrank.training.embeddings import Embedder, catalogue_embeddings
from fusionrank.training.search.data import Judgements, SplitConfig, load_judgements, positives
from fusionrank.training.search.evaluators import DevRetrievalEvaluator
from fusionrank.training.search.feedback import (
    FeedbackConfig,
    choose_threshold,
    train_feedback_model,
)
from fusionrank.training.search.finetune import FinetuneConfig, Finetuner, Pair, Provenance
from fusionrank.training.search.fusion import fit_weights
from fusionrank.training.search.negatives import MiningConfig, mine_negatives
from fusionrank.training.search.pairs import PairResources, judged_pairs


@dataclass
class PoolConfig:
    dense: int = DENSE_CANDIDATES  # per query (the retrieval step's pool)
    lexical: int = LEXICAL_CANDIDATES  # BM25 candidates added (the scoring step's)
    grid_step: float = 0.05


@dataclass
class TrainConfig:
    out: Path
    data: Path | None = None
    init_model: Path | None = None
    cache: Path = Path("runs/cache")
    split: SplitConfig = field(default_factory=SplitConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    pools: PoolConfig = field(default_factory=PoolConfig)
    dev_queries: int = 150  # dev sub-corpus evaluator during fine-tuning
    dev_distractors: int = 10
    resume: bool = True
    threads: int | None = None


def log(message: str) -> None:
    print(f"[train] {message}", file=sys.stderr, flush=True)


def training_pairs(judgements: Judgements, negatives: dict[str, list[int]],
                   threshold: float) -> list[Pair]:
    judged = judgements.qrels("train")
    pairs = []
    for query, rows in positives(judgements, "train", threshold).items():
        # Anything judged above 1 counts as relevant in Recall@100: never a negative.
        relevant = frozenset(r for r, g in judged[query].items() if g > 1.0)
        for row, grade in sorted(rows.items()):
            pairs.append(Pair(query, row, grade, negatives.get(query, []), relevant))
    return pairs


def query_vectors(embedder: Embedder, queries: list[str]) -> dict[str, np.ndarray]:
    return dict(zip(queries, embedder.encode_queries(queries), strict=True))


def load_run(run: Path) -> dict:
    """A finished run's manifest (run.json), or a clear error where `run` is none."""
    path = Path(run) / artefacts.RUN_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{run} is not a training run (no {artefacts.RUN_MANIFEST}): "
                                "run `fusionrank train` first")
    return json.loads(path.read_text())


def training_knowledge(judgements: Judgements, catalogue: np.ndarray,
                       vectors: dict[str, np.ndarray]) -> tuple[ProductPriors, JudgementMemory]:
    """What the feedback head's features learn from the training judgements: each product's
    prior and the memory of every training query's judgements."""
    train = judgements.of("train")
    priors = ProductPriors.fit(len(catalogue), train.row.to_numpy(), train.grade.to_numpy())
    groups = list(train.groupby("query", sort=True))
    memory = JudgementMemory.fit([q for q, _ in groups], np.stack([vectors[q] for q, _ in groups]),
                                 [g.row.to_numpy(np.int64) for _, g in groups],
                                 [g.grade.to_numpy(np.float32) for _, g in groups], catalogue)
    return priors, memory


def out_of_fold_priors(judgements: Judgements) -> list[ProductPriors]:
    train = judgements.of("train")
    folds = np.array([query_fold(q) for q in train["query"]])
    return ProductPriors.out_of_fold(len(judgements.catalogue.titles), train.row.to_numpy(),
                                     train.grade.to_numpy(), folds)


def run_training(config: TrainConfig) -> dict:
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    init = check_model_folder(config.init_model or bundled_model_path())
    judgements = load_judgements(config.data, config.split)
    titles = judgements.catalogue.titles
    log(f"{judgements.source}: {len(judgements.frame)} judgements, {len(titles)} products, "
        + ", ".join(f"{s} {len(judgements.queries(s))} queries" for s in ("train", "dev", "test")))
    lexical = LexicalIndex.build(titles)
    lexical.save(out / artefacts.LEXICAL)
    terms = TitleTerms(titles)
    stages: dict[str, dict] = {}

    # 1. Hard negatives from BM25 and from the starting encoder.
    t0 = time.perf_counter()
    base_catalogue, base_embedder = catalogue_embeddings(init, titles, config.cache / "embeddings",
                                                         config.threads)
    train_judged = judgements.qrels("train")
    train_queries = list(train_judged)
    negatives = mine_negatives(train_judged, lexical, terms, config.mining,
                               base_embedder.encode_queries(train_queries), base_catalogue)
    pairs = training_pairs(judgements, negatives, config.finetune.positive_threshold)
    stages["mining"] = {"seconds": round(time.perf_counter() - t0, 1), "pairs": len(pairs),
                        "queries": len({p.query for p in pairs}),
                        "mean_negatives": float(np.mean([len(v) for v in negatives.values()]))}
    log(f"mining: {stages['mining']}")

    # 2. Fine-tune the encoder.
    t0 = time.perf_counter()
    evaluator = DevRetrievalEvaluator.build(
        judgements.qrels("dev"), titles, lexical, config.dev_queries, config.dev_distractors,
        config.finetune.max_query_tokens, config.finetune.max_title_tokens)
    provenance = Provenance(judgements.source, judgements.sha256, asdict(config.split), str(init))
    finetuner = Finetuner(init, out / "encoder", pairs, titles, evaluator, config.finetune,
                          provenance)
    state = finetuner.train(resume=config.resume)
    best = finetuner.best_dir
    stages["finetune"] = {"seconds": round(time.perf_counter() - t0, 1),
                          "steps": state.global_step, "best_step": state.best_step,
                          "dev_subcorpus": state.dev, "checkpoint": str(best)}
    log(f"fine-tuning: best dev NDCG@10 {state.best_metric:.4f} at step {state.best_step}")

    # 3. The fine-tuned encoder through ONNX: every title and query embedded.
    t0 = time.perf_counter()
    catalogue, embedder = catalogue_embeddings(best, titles, config.cache / "embeddings",
                                               config.threads)
    all_queries = sorted(judgements.frame["query"].unique())
    vectors = query_vectors(embedder, all_queries)
    priors, memory = training_knowledge(judgements, catalogue, vectors)
    sources = FeatureSources(catalogue, terms, TermVectors.fit(terms, catalogue), priors, memory)
    resources = PairResources(judgements, lexical, sources, vectors,
                              fold_priors=out_of_fold_priors(judgements))
    priors.save(out / artefacts.PRIORS)
    memory.save(out / artefacts.MEMORY)
    stages["embedding"] = {"seconds": round(time.perf_counter() - t0, 1)}

    # 4. Feedback head, on every judged training pair. (Training it only on the queries the
    # encoder never saw, where the cosine is as trustworthy as on a new query, was tried:
    # with half the data, dev RMSE was worse.)
    t0 = time.perf_counter()
    train_pairs = judged_pairs(resources, "train")
    dev_pairs = judged_pairs(resources, "dev")
    head, fitted = train_feedback_model(train_pairs, dev_pairs, config.feedback)
    parity = export_feedback_head(head, out / artefacts.FEEDBACK_HEAD, (dev_pairs.query[:512],
                                                          dev_pairs.product[:512],
                                                          dev_pairs.features[:512]))
    stages["feedback"] = {"seconds": round(time.perf_counter() - t0, 1), **fitted,
                          "train_pairs": len(train_pairs.grade),
                          "threshold": choose_threshold(head.predict(dev_pairs),
                                                        dev_pairs.grade),
                          "onnx_max_abs_diff": parity}
    log("feedback head: dev RMSE " + ", ".join(f"{part} {value:.4f}" for part, value
                                               in fitted["dev_rmse"].items())
        + f" (trees' share {fitted['tree_share']:.2f})")

    # 5. Fusion weights on dev pools.
    t0 = time.perf_counter()
    dev_queries = judgements.ranked_queries("dev")
    dev_vectors = np.stack([vectors[q] for q in dev_queries])
    runtime = SearchRuntime(lexical, sources, OnnxFeedbackHead(out / artefacts.FEEDBACK_HEAD),
                            extra=config.pools.lexical)
    dense = dense_candidates(catalogue, dev_vectors, config.pools.dense)
    pool = runtime.candidates(dev_queries, dev_vectors, *dense)
    pool.feedback = runtime.feedback(pool, dev_vectors)
    fit = fit_weights(pool, judgements.qrels("dev"), ("similarity", "feedback", "lexical"),
                      config.pools.grid_step, "fused ranker", log)
    fit.weights.save(out / artefacts.FUSION_WEIGHTS)
    stages["fusion"] = {"seconds": round(time.perf_counter() - t0, 1),
                        "weights": fit.weights.weights, "dev_ndcg@10": fit.dev_ndcg10}

    # 6. The ranking cascade's depth, tuned on the same dev pools (what `fusionrank build`
    # serves by default).
    from fusionrank.training.search.cascade import CascadeConfig, DevPools, check_depths, sweep

    t0 = time.perf_counter()
    tuning = CascadeConfig(out, threads=config.threads)
    check_depths(tuning.depths, config.pools)
    cascade = sweep(tuning,
                    DevPools(dev_queries, dev_vectors, dense, pool), judgements.qrels("dev"),
                    runtime, fit.weights, config.pools.grid_step)
    stages["cascade"] = {"seconds": round(time.perf_counter() - t0, 1),
                         "chosen": cascade["chosen"]}

    manifest = {"created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "data_file": judgements.source, "data_sha256": judgements.sha256,
                "config": json.loads(json.dumps(asdict(config), default=str)),
                "init_model": str(init), "checkpoint": str(best),
                "artefacts": list(artefacts.SEARCH_RUN_FILES),
                "stages": stages, "seconds": round(time.perf_counter() - started, 1)}
    (out / artefacts.RUN_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"done in {manifest['seconds']:.0f} s: {out}")
    return manifest
