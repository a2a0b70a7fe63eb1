"""`fusionrank train-reranker`: a cross-encoder trained to rerank the fused ranking's top N.

    fusionrank train-reranker --run runs/relevance [--layers 3] [--max-tokens 48]
                              [--epochs 1] [--out RUN/reranker]

The model (`training/cross_encoder.py`) starts from the bundled all-MiniLM-L6-v2 with
`layers` of its 6 layers kept (evenly spaced) and a new one-unit classifier. Each step takes
`queries_per_step` training queries and, for each, a list of `list_size` candidates: its judged
products (the grade is the target) and hard negatives mined from BM25 and the run's fine-tuned
encoder with the same false-negative guards as the encoder's fine-tuning
(`training/search/negatives.py`); the loss is listwise (`GradedListwiseLoss`: softmax
cross-entropy against the gains' distribution). Only the TRAINING split's judgements are read
for training.

Dev chooses the checkpoint: every `eval_every` steps the reranker scores the top `dev_depth`
of the served ranking (`served_rankings.py`) of `dev_queries` dev queries, the weight w of
final = S + w · logit is fitted on them (a grid), and dev NDCG@10 of the result decides
the best checkpoint. Test is never read here (`fusionrank evaluate --reranker` reports it).

Resumable: `last/` holds the weights, optimiser, schedule and position every
`checkpoint_every` steps; running the same command again continues from there.

Output folder (default RUN/reranker):
    init/          the cross-encoder's starting transformer (the kept layers)
    best/          Hugging Face folder of the best dev checkpoint + reranker.json (its config,
                   dev metrics and fitted weight)
    last/          resumable state;  history.json, training_curve.png
    served_dev_<run>.npz   the dev queries' served rankings (made once)
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fusionrank.core.model_folders import bundled_model_path, check_model_folder
from fusionrank.core.search.reranker import PairTokenizer, reranked
from fusionrank.core.search.title_terms import TitleTerms
from fusionrank.training.cross_encoder import (
    CrossEncoder,
    check_tokenizer_matches,
    pair_tokenizer,
)
from fusionrank.training.losses import GradedListwiseLoss
from fusionrank.training.metrics import evaluate_ranking
from fusionrank.training.search.distil import init_student, student_layers
from fusionrank.training.search.finetune import (
    TrainingState,
    adamw_with_warmup,
    optimisation_step,
    plot_curve,
    swap_in,
)
from fusionrank.training.search.negatives import MiningConfig, mine_negatives
from fusionrank.training.search.served_rankings import Ranking, ServedRanker

STATE_FILE = "trainer_state.pt"
CHECKPOINT_FILE = "reranker.json"
DEV_METRIC = "ndcg@10"
# Weights w of S + w · logit tried on dev. S's parts are O(1) and the logits O(1–10): the grid
# runs from "S decides, the reranker breaks ties" to "the reranker decides".
WEIGHT_GRID = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
               1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)


@dataclass
class RerankerConfig:
    run: Path
    out: Path | None = None  # default RUN/reranker
    init_model: Path | None = None  # default: the bundled all-MiniLM-L6-v2
    layers: int = 3  # of the starting model's, evenly spaced (6: all)
    max_query_tokens: int = 16  # queries average 6 word pieces
    max_tokens: int = 48  # the pair with [CLS] and two [SEP]; titles average 20 word pieces
    list_size: int = 12  # candidates a training query brings: judged, then hard negatives
    min_negatives: int = 4  # of them, hard negatives at least (when it has that many)
    queries_per_step: int = 4
    epochs: int = 1
    learning_rate: float = 7e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    eval_every: int = 250  # steps
    dev_queries: int = 300  # dev queries the checkpoints are compared on
    dev_depth: int = 20  # of their served ranking, reranked
    patience: int = 3  # evaluations without a dev gain before stopping
    checkpoint_every: int = 50  # steps between saves of last/
    seed: int = 13
    max_steps: int | None = None
    threads: int | None = None
    cache: Path = Path("runs/cache")
    resume: bool = True

    def folder(self) -> Path:
        return Path(self.out) if self.out is not None else Path(self.run) / "reranker"


def log(message: str) -> None:
    print(f"[train-reranker] {message}", file=sys.stderr, flush=True)


@dataclass
class TrainingList:
    """A training query's candidates and their grades (hard negatives: 1.0, irrelevant)."""

    query: str
    rows: list[int]
    grades: list[float]


def training_lists(judged: dict[str, dict[int, float]], negatives: dict[str, list[int]],
                   config: RerankerConfig, epoch: int) -> list[list[TrainingList]]:
    """This epoch's steps: every training query with at least one relevant product once, in a
    seeded order, each with up to `list_size` candidates: its judged products (a seeded
    sample if they leave fewer than `min_negatives` places) and then its hard negatives."""
    rng = np.random.default_rng([config.seed, epoch])
    lists = []
    for query in sorted(judged):
        grades = judged[query]
        if max(grades.values()) <= 1.0:
            continue  # nothing relevant: every candidate's target would be 0
        rows = sorted(grades)
        mined = [r for r in negatives.get(query, []) if r not in grades]
        room = max(2, config.list_size - min(config.min_negatives, len(mined)))
        if len(rows) > room:
            rows = sorted(int(r) for r in rng.choice(rows, room, replace=False))
        # The judged may hold no relevant product after sampling: keep the best one.
        best = max(grades, key=grades.get)
        if best not in rows:
            rows[int(rng.integers(len(rows)))] = best
        rows = rows + mined[: config.list_size - len(rows)]
        lists.append(TrainingList(query, rows, [grades.get(r, 1.0) for r in rows]))
    order = rng.permutation(len(lists))
    per_step = config.queries_per_step
    shuffled = [lists[i] for i in order]
    return [shuffled[i : i + per_step] for i in range(0, len(shuffled), per_step)]


def fit_weight(scores: np.ndarray, logits: np.ndarray, rows: np.ndarray, queries: list[str],
               judged, metric: str = DEV_METRIC) -> tuple[float, dict[str, float]]:
    """The weight of `WEIGHT_GRID` whose reranking of the heads (`scores`, `logits`, `rows`:
    [queries, N]; `rows` may run deeper than N, the rest kept in order) scores best on
    `metric`; ties go to the smaller weight. Returns it and its metrics."""
    best: tuple[float, dict[str, float]] | None = None
    for weight in WEIGHT_GRID:
        result = evaluate_ranking(judged, queries, apply_rerank(rows, scores, logits, weight),
                                  np.zeros(rows.shape), ("ndcg@10", "mrr@10", "recall@100"))
        if best is None or result[metric] > best[1][metric] + 1e-12:
            best = (weight, result)
    assert best is not None
    return best


def apply_rerank(rows: np.ndarray, scores: np.ndarray, logits: np.ndarray,
                 weight: float) -> np.ndarray:
    """The served ranking `rows` [queries, depth] with its first N (N = logits' width)
    reranked by S + weight · logit; the rest as they were."""
    n = logits.shape[1]
    order, _ = reranked(scores[:, :n], logits, weight)
    return np.concatenate([np.take_along_axis(rows[:, :n], order, axis=1), rows[:, n:]], axis=1)


def head_pairs(ranking: Ranking, titles: list[str], depth: int) -> tuple[list[str], list[str]]:
    """(queries, titles) of each query's top `depth`, query after query."""
    head = ranking.rows[:, :depth]
    return ([q for q in ranking.queries for _ in range(head.shape[1])],
            [titles[r] for r in head.reshape(-1)])


class DevEvaluator:
    """Dev NDCG@10 of the served ranking's heads reranked by the model being trained."""

    def __init__(self, ranking: Ranking, judged, titles: list[str], tokenizer: PairTokenizer,
                 depth: int, batch_size: int = 128):
        self.ranking = ranking
        self.judged = judged
        self.depth = min(depth, ranking.rows.shape[1])
        self.pair_queries, self.pair_titles = head_pairs(ranking, titles, self.depth)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.served = evaluate_ranking(judged, ranking.queries, ranking.rows,
                                       ranking.scores, ("ndcg@10", "mrr@10", "recall@100"))

    @torch.no_grad()
    def logits(self, model: CrossEncoder) -> np.ndarray:
        was_training = model.training
        model.eval()
        out = np.empty(len(self.pair_queries), dtype=np.float32)
        order = np.argsort([len(t) for t in self.pair_titles], kind="stable")
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = self.tokenizer([self.pair_queries[i] for i in chunk],
                                   [self.pair_titles[i] for i in chunk])
            out[chunk] = model.score(batch).numpy()
        model.train(was_training)
        return out.reshape(len(self.ranking.queries), self.depth)

    def __call__(self, model: CrossEncoder) -> dict:
        logits = self.logits(model)
        weight, result = fit_weight(self.ranking.scores, logits, self.ranking.rows,
                                    self.ranking.queries, self.judged)
        alone = evaluate_ranking(self.judged, self.ranking.queries,
                                 apply_rerank(self.ranking.rows, self.ranking.scores, logits,
                                              1e9), np.zeros(self.ranking.rows.shape),
                                 ("ndcg@10",))
        return {**result, "weight": weight, "reranker_alone_ndcg@10": alone["ndcg@10"],
                "served_ndcg@10": self.served["ndcg@10"]}


class RerankerTrainer:
    def __init__(self, config: RerankerConfig, lists: Callable[[int], list[list[TrainingList]]],
                 titles: list[str], evaluator: DevEvaluator, provenance: dict):
        self.config = config
        self.out = config.folder()
        self.lists = lists
        self.titles = titles
        self.evaluator = evaluator
        self.provenance = provenance
        source = check_model_folder(config.init_model or bundled_model_path())
        self.source = source
        depth = _layers_of(source)
        init = init_student(source, student_layers(depth, config.layers), self.out / "init")
        self.model = CrossEncoder.load(init)
        self.tokenizer = pair_tokenizer(source, config.max_query_tokens, config.max_tokens)
        check_tokenizer_matches(self.model, self.tokenizer, str(init), str(source))
        torch.manual_seed(config.seed)
        self.model.classifier.classifier.reset_parameters()  # the same start on every machine
        self.loss = GradedListwiseLoss()
        self.steps_per_epoch = len(lists(0))
        total = self.steps_per_epoch * config.epochs
        if config.max_steps:
            total = min(total, config.max_steps)
        self.optimizer, self.scheduler = adamw_with_warmup(
            self.model.parameters(), config.learning_rate, config.weight_decay, total,
            config.warmup_fraction)
        self.state = TrainingState()

    # ---- checkpoints -------------------------------------------------------------------
    def save_best(self, dev: dict) -> None:
        target = self.out / "best"
        tmp = target.with_name("best.tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted save
        self.model.save(tmp, self.source)
        record = {"config": json.loads(json.dumps(asdict(self.config), default=str)),
                  "layers": self.model.layers, "step": self.state.global_step, "dev": dev,
                  "weight": dev["weight"], "depth": self.evaluator.depth,
                  "max_query_tokens": self.config.max_query_tokens,
                  "max_tokens": self.config.max_tokens, **self.provenance,
                  "saved_at": datetime.now(UTC).isoformat(timespec="seconds")}
        (tmp / CHECKPOINT_FILE).write_text(json.dumps(record, indent=2) + "\n")
        swap_in(tmp, target)

    def save_last(self) -> None:
        target = self.out / "last"
        tmp = target.with_name("last.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save(tmp, self.source)
        torch.save({"optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(), "trainer": asdict(self.state),
                    "provenance": self.provenance,
                    "config": json.loads(json.dumps(asdict(self.config), default=str))},
                   tmp / STATE_FILE)
        swap_in(tmp, target)
        self.state.write_history(self.out)

    def try_resume(self) -> bool:
        path = self.out / "last" / STATE_FILE
        if not path.is_file():
            return False
        saved = torch.load(path, weights_only=False)
        ours = json.loads(json.dumps(asdict(self.config), default=str))
        # Where it is written and how fast it runs may change; what it learns may not.
        different = {k for k in ours if k not in ("out", "cache", "resume", "threads",
                                                    "max_steps")
                     and saved["config"].get(k) != ours[k]}
        if saved["provenance"] != self.provenance or different:
            raise ValueError(f"{self.out / 'last'} was trained with other data or settings "
                             f"({sorted(different) or 'data'}); use another --out or delete it")
        self.model.load_state_dict(CrossEncoder.load(self.out / "last").state_dict())
        self.state = TrainingState.resumed(saved, self.optimizer, self.scheduler)
        log(f"resuming {self.out} at step {self.state.global_step} (best dev {DEV_METRIC} "
            f"{self.state.best_metric:.4f} at step {self.state.best_step})")
        return True

    # ---- training ----------------------------------------------------------------------
    def evaluate(self) -> None:
        started = time.perf_counter()
        dev = self.evaluator(self.model)
        dev = {**dev, "step": self.state.global_step, "epoch": self.state.epoch,
               "seconds": round(time.perf_counter() - started, 1)}
        log(f"dev after step {self.state.global_step}: NDCG@10 {dev['ndcg@10']:.4f} "
            f"(w {dev['weight']}; served {dev['served_ndcg@10']:.4f}, reranker alone "
            f"{dev['reranker_alone_ndcg@10']:.4f})")
        if self.state.record(dev, DEV_METRIC):
            self.save_best(dev)

    def train(self) -> TrainingState:
        """Train until the epochs are done or dev stops improving (`patience`); a run stopped
        by `max_steps` is not finished: the same command with more steps goes on."""
        config = self.config
        if not (config.resume and self.try_resume()):
            self.out.mkdir(parents=True, exist_ok=True)
            self.evaluate()  # the untrained classifier is the first candidate to beat
        self.model.train()
        while not self.state.finished and self.state.epoch < config.epochs:
            steps = self.lists(self.state.epoch)
            bar = tqdm(total=len(steps), initial=self.state.step_in_epoch, unit="step",
                       desc=f"epoch {self.state.epoch + 1}/{config.epochs}")
            paused = False
            for lists in steps[self.state.step_in_epoch:]:
                if config.max_steps and self.state.global_step >= config.max_steps:
                    paused = True
                    break
                bar.set_postfix(loss=f"{self.step(lists):.3f}")
                bar.update(1)
                if self.state.global_step % config.eval_every == 0:
                    self.evaluate()
                    if self.state.evaluations_without_gain >= config.patience:
                        self.state.finished = True
                        break
                if self.state.global_step % config.checkpoint_every == 0:
                    self.save_last()
            bar.close()
            if paused:
                break
            if not self.state.finished:
                self.state.epoch += 1
                self.state.step_in_epoch = 0
                if self.state.global_step % config.eval_every:
                    self.evaluate()
            self.save_last()
        self.state.finished = self.state.finished or self.state.epoch >= config.epochs
        self.save_last()
        plot_curve(self.state, self.out / "training_curve.png")
        return self.state

    def step(self, lists: list[TrainingList]) -> float:
        width = max(len(x.rows) for x in lists)
        batch = self.tokenizer([x.query for x in lists for _ in x.rows],
                               [self.titles[r] for x in lists for r in x.rows])
        valid = torch.zeros((len(lists), width), dtype=torch.bool)
        gains = torch.zeros((len(lists), width))
        for i, x in enumerate(lists):
            valid[i, : len(x.rows)] = True
            gains[i, : len(x.rows)] = torch.tensor(x.grades) - 1.0
        # The pairs' logits, row-major, into the lists' [queries, width] (padding: 0, masked).
        logits = torch.zeros((len(lists), width)).masked_scatter(valid, self.model.score(batch))
        loss = self.loss(logits, gains, valid)
        optimisation_step(loss, self.model, self.optimizer, self.scheduler)
        self.state.global_step += 1
        self.state.step_in_epoch += 1
        value = float(loss.detach())
        self.state.losses.append((self.state.global_step, value))
        return value



def _layers_of(folder: Path) -> int:
    return int(json.loads((Path(folder) / "config.json").read_text())["num_hidden_layers"])


def train_reranker(config: RerankerConfig) -> dict:
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    out = config.folder()
    out.mkdir(parents=True, exist_ok=True)
    served = ServedRanker.load(config.run, config.cache, config.threads)
    judgements = served.judgements
    titles = judgements.catalogue.titles
    train_judged = judgements.qrels("train")
    queries = sorted(train_judged)
    negatives_file = out / "negatives.json"
    if negatives_file.is_file():
        negatives = {q: list(v) for q, v in json.loads(negatives_file.read_text()).items()}
    else:
        negatives = mine_negatives(train_judged, served.lexical, TitleTerms(titles),
                                   MiningConfig(depth=30, per_source=10),
                                   served.embedder.encode_queries(queries), served.catalogue)
        negatives_file.write_text(json.dumps(negatives) + "\n")
    dev = served.split("dev", out)
    rng = np.random.default_rng(config.seed)
    chosen = np.sort(rng.choice(len(dev.queries), min(config.dev_queries, len(dev.queries)),
                                replace=False))
    dev = Ranking([dev.queries[i] for i in chosen], dev.rows[chosen], dev.scores[chosen])
    tokenizer = pair_tokenizer(check_model_folder(config.init_model or bundled_model_path()),
                               config.max_query_tokens, config.max_tokens)
    # The reranker adds to S, which a cascade computes for its head alone.
    head = served.weights.cascade.depth if served.weights.cascade is not None else config.dev_depth
    if head < config.dev_depth:
        log(f"dev depth {config.dev_depth} → {head}, the served cascade's head")
    evaluator = DevEvaluator(dev, judgements.qrels("dev"), titles, tokenizer,
                             min(config.dev_depth, head))
    provenance = {"data_file": judgements.source, "data_sha256": judgements.sha256,
                  "run": str(config.run)}
    trainer = RerankerTrainer(
        config, lambda epoch: training_lists(train_judged, negatives, config, epoch), titles,
        evaluator, provenance)
    log(f"{len(queries)} training queries, {trainer.steps_per_epoch} steps an epoch; dev: "
        f"{len(dev.queries)} queries' served top {evaluator.depth} (served NDCG@10 "
        f"{evaluator.served['ndcg@10']:.4f})")
    state = trainer.train()
    record = {"best_step": state.best_step, "best_dev_ndcg@10": state.best_metric,
              "steps": state.global_step, "seconds": round(time.perf_counter() - started, 1),
              "checkpoint": str(out / "best")}
    log(f"best dev NDCG@10 {state.best_metric:.4f} at step {state.best_step}; {out / 'best'}")
    (out / "train_reranker.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
