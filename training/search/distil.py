"""`fusionrank distil`: a smaller student QUERY encoder distilled from a run's fine-tuned one.

    fusionrank distil --run runs/relevance [--layers 3] [--out RUN/student]

The student is the teacher (RUN/encoder/best) with fewer transformer layers: the word
embeddings and every kept layer are copied from the teacher's evenly spaced layers (3 of 6:
layers 0, 2 and 5, the bottom and the top included), so it starts close to the teacher, with
the same tokenizer and the same 384-d output. It is trained on the TRAINING split's queries
only (dev serves to pick the best checkpoint, as for the teacher; test is never read) with
    embedding matching   ‖student(q) − teacher(q)‖²                (training/losses.py)
    score distillation   KL(teacher ‖ student) over softmax(scale · cos(q, candidate)) of
                         each query's candidate pool: its judged products, the teacher's best
                         dense candidates and its best BM25 ones (the served pool's sources)
The candidates are the catalogue's TEACHER embeddings, fixed: no title is encoded while
training, which is what makes it cheap on a CPU (minutes).

Why only queries: the search is asymmetric. The catalogue is embedded once, offline, by the
teacher (`build` keeps doing that); only the query is encoded per request, so only the query
encoder must be fast. Because the student is trained to put each query where the teacher puts
it, in the teacher's space, everything the run fitted on the teacher stays valid as it is: the
catalogue embeddings and the retrieval index, the feedback head and its memory of training
queries' vectors, and the fusion weights. `fusionrank evaluate --student` measures exactly
that combination (student queries, teacher catalogue, the run's head and weights) and
`fusionrank build --student` serves it.

Output folder (default RUN/student):
    init/         the student before training (its layers copied from the teacher)
    best/         Hugging Face folder of the best dev checkpoint + checkpoint.json (manifest);
                  loadable by `export_model_folder` like the teacher's
    last/         the latest weights
    history.json  losses and dev metrics;  training_curve.png;  distil.json (the whole record)
Not resumable: a run takes minutes, an interrupted one starts over.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fusionrank.core.encoding import MAX_QUERY_TOKENS
from fusionrank.core.model_folders import check_model_folder
from fusionrank.core.search.lexical import LexicalIndex
from fusionrank.core.search.runtime import DEPTH, dense_candidates
from fusionrank.training.embeddings import catalogue_embeddings, weights_digest
from fusionrank.training.encoder import TOKENIZER_FILES, EncoderWithTokenizer
from fusionrank.training.losses import ScoreDistillationLoss, embedding_matching_loss
from fusionrank.training.metrics import evaluate_ranking
from fusionrank.training.search.data import Judgements, SplitConfig, load_judgements
from fusionrank.training.search.finetune import (
    CHECKPOINT_MANIFEST,
    TrainingState,
    adamw_with_warmup,
    optimisation_step,
    plot_curve,
    write_model_folder,
)

DEV_METRIC = "ndcg@10"  # dense retrieval of the dev queries over the teacher's catalogue
STUDENT_MANIFEST = "distil.json"


@dataclass
class DistilConfig:
    layers: int = 3  # transformer layers of the student
    # Which teacher layers the student starts from (default: evenly spaced, first and last
    # included, `student_layers`).
    keep: tuple[int, ...] | None = None
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-4
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    embedding_weight: float = 1.0  # λ of the embedding-matching loss
    ranking_weight: float = 1.0  # λ of the score-distillation loss
    scale: float = 20.0  # inverse temperature of the score distributions (as in fine-tuning)
    dense_candidates: int = 48  # the teacher's best dense products per training query
    lexical_candidates: int = 16  # BM25's best products per training query
    max_query_tokens: int = MAX_QUERY_TOKENS  # as served
    patience: int = 2  # evaluations without a dev gain before stopping
    seed: int = 13
    max_steps: int | None = None
    threads: int | None = None


def student_layers(teacher_layers: int, layers: int) -> list[int]:
    """Evenly spaced teacher layers, the first and the last included (3 of 6: 0, 2, 5)."""
    if not 1 <= layers <= teacher_layers:
        raise ValueError(f"layers must be between 1 and the teacher's {teacher_layers}, "
                         f"not {layers}")
    if layers == 1:
        return [teacher_layers - 1]
    return [round(i * (teacher_layers - 1) / (layers - 1)) for i in range(layers)]


def init_student(teacher_dir: Path, keep: Sequence[int], out_dir: Path) -> Path:
    """A Hugging Face folder holding the teacher with only the layers `keep` (in that order):
    the same embeddings, the kept layers' weights copied exactly, the teacher's tokenizer."""
    import shutil

    from transformers import AutoModel

    teacher_dir = check_model_folder(teacher_dir)
    teacher = AutoModel.from_pretrained(teacher_dir, local_files_only=True)
    depth = teacher.config.num_hidden_layers
    if not keep or any(not 0 <= i < depth for i in keep) or len(set(keep)) != len(keep):
        raise ValueError(f"layers to keep must be distinct layers of the teacher's 0..{depth - 1}, "
                         f"not {list(keep)}")
    config = teacher.config.__class__.from_dict(teacher.config.to_dict())
    config.num_hidden_layers = len(keep)
    student = type(teacher)(config)
    student.embeddings.load_state_dict(teacher.embeddings.state_dict())
    for position, layer in enumerate(keep):
        student.encoder.layer[position].load_state_dict(teacher.encoder.layer[layer].state_dict())
    if getattr(teacher, "pooler", None) is not None and student.pooler is not None:
        student.pooler.load_state_dict(teacher.pooler.state_dict())
    out_dir.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(out_dir, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (teacher_dir / name).is_file():
            shutil.copyfile(teacher_dir / name, out_dir / name)
    return out_dir


def candidate_rows(judged: Sequence[int], dense: Sequence[int], lexical: Sequence[int],
                   size: int) -> list[int]:
    """A query's candidates, distinct, at most `size`: judged first, then dense, then BM25."""
    out: list[int] = []
    seen: set[int] = set()
    for row in (*judged, *dense, *lexical):
        if row not in seen:
            seen.add(row)
            out.append(int(row))
    return out[:size]


@dataclass
class DistilData:
    """The training split's queries, the teacher's embeddings of them, and each one's
    candidate rows (padded with -1) into the teacher's catalogue embeddings."""

    queries: list[str]
    teacher: np.ndarray  # float32 [queries, d]
    candidates: np.ndarray  # int64 [queries, pool], -1 = padding
    catalogue: np.ndarray  # float32 [products, d], the teacher's

    @classmethod
    def build(cls, judgements: Judgements, lexical: LexicalIndex, catalogue: np.ndarray,
              teacher: np.ndarray, config: DistilConfig) -> DistilData:
        judged = judgements.qrels("train")
        queries = sorted(judged)
        dense_rows, _ = dense_candidates(catalogue, teacher, min(config.dense_candidates,
                                                                 len(catalogue)), block=256)
        size = max(len(r) for r in judged.values()) + config.dense_candidates \
            + config.lexical_candidates
        pools = []
        for query, dense in zip(tqdm(queries, desc="candidate pools", unit="query"),
                                dense_rows, strict=True):
            bm25 = lexical.top(lexical.query_terms(query), config.lexical_candidates)[0] \
                if config.lexical_candidates else []
            pools.append(candidate_rows(sorted(judged[query]), dense, bm25, size))
        width = max(len(p) for p in pools)
        candidates = np.full((len(queries), width), -1, dtype=np.int64)
        for i, pool in enumerate(pools):
            candidates[i, : len(pool)] = pool
        return cls(queries, teacher, candidates, catalogue)

    def batch(self, index: np.ndarray) -> tuple[list[str], torch.Tensor, torch.Tensor,
                                                 torch.Tensor]:
        """Texts, teacher embeddings [B, d], candidate embeddings [B, C, d], valid [B, C]."""
        rows = self.candidates[index]
        valid = rows >= 0
        # Trim the padding every query of the batch shares.
        width = int(valid.sum(axis=1).max())
        rows, valid = rows[:, :width], valid[:, :width]
        vectors = self.catalogue[np.where(valid, rows, 0)]
        return ([self.queries[i] for i in index], torch.from_numpy(self.teacher[index]),
                torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)),
                torch.from_numpy(valid))


@dataclass
class DevCheck:
    """Dense retrieval of the dev queries (student embeddings) over the teacher's full
    catalogue, and the student's mean cosine to the teacher there: model selection only."""

    queries: list[str]
    judged: dict[str, dict[int, float]]
    teacher: np.ndarray  # the teacher's dev query embeddings
    catalogue: np.ndarray
    max_tokens: int

    def __call__(self, student: EncoderWithTokenizer) -> dict[str, float]:
        vectors = student.embed_eval(self.queries, self.max_tokens).numpy()
        rows, scores = dense_candidates(self.catalogue, vectors, min(DEPTH, len(self.catalogue)),
                                        block=256)
        metrics = evaluate_ranking(self.judged, self.queries, rows, scores,
                                   metrics=("ndcg@10", "recall@100"))
        metrics["cosine_to_teacher"] = float(np.mean(np.sum(vectors * self.teacher, axis=1)))
        return metrics


class Distiller:
    def __init__(self, init_dir: Path, out_dir: Path, data: DistilData, dev: DevCheck,
                 config: DistilConfig, provenance: dict):
        self.config, self.out_dir, self.data, self.dev = config, out_dir, data, dev
        self.provenance = provenance
        if config.threads:
            torch.set_num_threads(config.threads)
        from transformers import set_seed

        set_seed(config.seed)
        self.model = EncoderWithTokenizer(init_dir)
        self.ranking = ScoreDistillationLoss(config.scale)
        self.steps_per_epoch = max(1, len(data.queries) // config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.max_steps:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.optimizer, self.scheduler = adamw_with_warmup(
            self.model.module.parameters(), config.learning_rate, config.weight_decay,
            self.total_steps, config.warmup_fraction)
        self.state = TrainingState()

    def epoch_order(self, epoch: int) -> list[np.ndarray]:
        """This epoch's batches of query indices (a shuffle that depends on seed and epoch)."""
        order = np.random.default_rng([self.config.seed, epoch]).permutation(
            len(self.data.queries))
        size = self.config.batch_size
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        return [b for b in batches if len(b) > 1]

    def step(self, index: np.ndarray) -> dict[str, float]:
        texts, teacher, candidates, valid = self.data.batch(index)
        student = self.model.embed(texts, self.config.max_query_tokens)
        matching = embedding_matching_loss(student, teacher)
        ranking = self.ranking(student, teacher, candidates, valid)
        loss = self.config.embedding_weight * matching + self.config.ranking_weight * ranking
        optimisation_step(loss, self.model.module, self.optimizer, self.scheduler)
        self.state.global_step += 1
        self.state.losses.append((self.state.global_step, float(loss.detach())))
        return {"loss": float(loss.detach()), "matching": float(matching.detach()),
                "ranking": float(ranking.detach())}

    def evaluate(self) -> dict:
        started = time.perf_counter()
        dev = {**self.dev(self.model), "step": self.state.global_step,
               "epoch": self.state.epoch, "seconds": round(time.perf_counter() - started, 1)}
        self.state.dev.append(dev)
        print(f"dev after step {self.state.global_step}: NDCG@10 {dev['ndcg@10']:.4f}, "
              f"Recall@100 {dev['recall@100']:.4f}, cosine to the teacher "
              f"{dev['cosine_to_teacher']:.4f}", file=sys.stderr)
        if dev[DEV_METRIC] > self.state.best_metric:
            self.state.best_metric, self.state.best_step = dev[DEV_METRIC], self.state.global_step
            self.state.evaluations_without_gain = 0
            manifest = self.manifest(dev)
            write_model_folder(self.model, self.out_dir / "best", lambda d: (
                d / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n"))
        else:
            self.state.evaluations_without_gain += 1
        return dev

    def manifest(self, dev: dict) -> dict:
        return {"created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "kind": "student query encoder", **self.provenance,
                "hyperparameters": json.loads(json.dumps(asdict(self.config))),
                "dev_metric": {"name": DEV_METRIC, "value": dev.get(DEV_METRIC), **dev},
                "step": self.state.global_step, "epoch": self.state.epoch}

    def train(self) -> TrainingState:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.evaluate()  # the copied layers are the first candidate for best
        self.model.module.train()
        while self.state.epoch < self.config.epochs and not self.state.finished:
            bar = tqdm(self.epoch_order(self.state.epoch), unit="batch",
                       desc=f"epoch {self.state.epoch + 1}/{self.config.epochs}")
            for index in bar:
                if self.config.max_steps and self.state.global_step >= self.config.max_steps:
                    self.state.finished = True
                    break
                parts = self.step(index)
                bar.set_postfix({k: f"{v:.4f}" for k, v in parts.items()})
            bar.close()
            self.state.epoch += 1
            self.evaluate()
            self.model.module.train()
            write_model_folder(self.model, self.out_dir / "last", lambda d: None)
            if self.state.evaluations_without_gain >= self.config.patience:
                self.state.finished = True
        self.state.finished = True
        history = {"losses": self.state.losses, "dev": self.state.dev,
                   "best_step": self.state.best_step, "best_metric": self.state.best_metric}
        (self.out_dir / "history.json").write_text(json.dumps(history, indent=1) + "\n")
        plot_curve(self.state, self.out_dir / "training_curve.png")
        return self.state


def log(message: str) -> None:
    print(f"[distil] {message}", file=sys.stderr, flush=True)


def run_distillation(run: Path, out: Path | None = None, config: DistilConfig | None = None,
                     cache: Path = Path("runs/cache"), command: str | None = None) -> dict:
    """Distil RUN/encoder/best into a student in `out` (default RUN/student); returns the
    record also written to OUT/distil.json."""
    started = time.perf_counter()
    config = config or DistilConfig()
    run = Path(run)
    out = Path(out) if out is not None else run / "student"
    manifest_path = run / "run.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{run} is not a training run (no run.json): run "
                                "`fusionrank train` first")
    manifest = json.loads(manifest_path.read_text())
    teacher_dir = check_model_folder(manifest["checkpoint"])
    if config.threads:
        torch.set_num_threads(config.threads)
    judgements = load_judgements(manifest["data_file"],
                                 SplitConfig(**manifest["config"]["split"]))
    if judgements.sha256 != manifest["data_sha256"]:
        raise ValueError(f"{judgements.source} differs from the file {run} was trained on")
    titles = judgements.catalogue.titles
    lexical = LexicalIndex.load(run / "lexical.npz")

    from transformers import AutoConfig

    depth = AutoConfig.from_pretrained(teacher_dir, local_files_only=True).num_hidden_layers
    keep = list(config.keep) if config.keep else student_layers(depth, config.layers)
    config.layers, config.keep = len(keep), tuple(keep)
    log(f"teacher {teacher_dir} ({depth} layers) → student of layers {keep}, in {out}")
    t0 = time.perf_counter()
    catalogue, embedder = catalogue_embeddings(teacher_dir, titles, cache / "embeddings",
                                               config.threads)
    train_queries = sorted(judgements.qrels("train"))
    dev_judged = judgements.qrels("dev")
    dev_queries = judgements.ranked_queries("dev")
    teacher_train = embedder.queries.encode(train_queries, progress=True)
    data = DistilData.build(judgements, lexical, catalogue, teacher_train, config)
    dev = DevCheck(dev_queries, {q: dev_judged[q] for q in dev_queries},
                   embedder.encode_queries(dev_queries), catalogue, config.max_query_tokens)
    preparation = round(time.perf_counter() - t0, 1)
    log(f"{len(data.queries)} training queries, up to {data.candidates.shape[1]} candidates "
        f"each; {len(dev_queries)} dev queries ({preparation} s)")

    init = init_student(teacher_dir, keep, out / "init")
    provenance = {"teacher": str(teacher_dir), "teacher_weights": weights_digest(teacher_dir),
                  "teacher_layers": depth, "kept_layers": keep, "run": str(run),
                  "data_file": judgements.source, "data_sha256": judgements.sha256,
                  "split": manifest["config"]["split"], "trained_on": "train split queries"}
    t0, cpu0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    distiller = Distiller(init, out, data, dev, config, provenance)
    state = distiller.train()
    training = round(time.perf_counter() - t0, 1)
    # On a shared machine the wall time depends on the others' load: the CPU time and the
    # load average around the run say how much.
    machine = {"cpu_seconds_training": round(time.process_time() - cpu0, 1),
               "load_average_1min": {"start": load0, "end": os.getloadavg()[0]},
               "cpus": os.cpu_count()}
    record = {"command": command, **provenance, "checkpoint": str(out / "best"),
              "hyperparameters": json.loads(json.dumps(asdict(config))),
              "train_queries": len(data.queries), "dev_queries": len(dev_queries),
              "steps": state.global_step, "best_step": state.best_step,
              "best_dev": next(d for d in state.dev if d["step"] == state.best_step),
              "teacher_dev": teacher_dev(dev), "dev": state.dev,
              "threads": config.threads or torch.get_num_threads(), **machine,
              "seconds": {"preparation": preparation, "training": training,
                          "total": round(time.perf_counter() - started, 1)}}
    (out / STUDENT_MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
    log(f"best dev NDCG@10 {state.best_metric:.4f} at step {state.best_step} (teacher "
        f"{record['teacher_dev']['ndcg@10']:.4f}); {training:.0f} s of training: {out / 'best'}")
    return record


def teacher_dev(dev: DevCheck) -> dict[str, float]:
    """The teacher's own dense dev figures, the bar the student is measured against."""
    rows, scores = dense_candidates(dev.catalogue, dev.teacher, min(DEPTH, len(dev.catalogue)),
                                    block=256)
    metrics = evaluate_ranking(dev.judged, dev.queries, rows, scores,
                               metrics=("ndcg@10", "recall@100"))
    return {k: float(v) for k, v in metrics.items()}
