"""Fine-tune the sentence encoder on graded query–product judgements.

    model (training/encoder.py) + loss (training/losses.py) + dev evaluator
    (training/search/evaluators.py)

One epoch visits every training query once, with one of its positives (grade ≥ the positive
threshold) drawn at random and one hard negative (training/search/negatives.py). The draw
depends only on (seed, epoch), so a resumed run sees the very batches the interrupted one would
have.

Output folder:
    best/        Hugging Face folder of the best dev checkpoint + checkpoint.json (its manifest)
    last/        the latest state: the same folder + trainer_state.pt (optimiser, scheduler, RNG)
    history.json losses and dev metrics;  training_curve.png
Every folder is written under a temporary name and renamed, so an interrupted save never
leaves a half-written `best/`.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fusionrank.training.encoder import EncoderWithTokenizer
from fusionrank.training.losses import GradedMultipleNegativesLoss
from fusionrank.training.search.evaluators import DEV_METRIC, DevRetrievalEvaluator

CHECKPOINT_MANIFEST = "checkpoint.json"
STATE_FILE = "trainer_state.pt"


@dataclass
class FinetuneConfig:
    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    scale: float = 20.0
    # Grades from 1.33 up are positives, weighted by (grade − 1) / 2: Recall@100 counts every
    # grade above 1 as relevant, and the low ones were what it missed most when only grades
    # from 2.33 up were positives.
    positive_threshold: float = 1.3
    # None (or 0): one pair per training query and epoch (the full run's steps and time:
    # benchmarks/reports/relevance.md).
    pairs_per_epoch: int | None = None
    max_query_tokens: int = 16  # queries average 6 word pieces
    max_title_tokens: int = 32  # titles average 20 word pieces with [CLS]/[SEP]; 94% fit in 32
    # Layers kept as pretrained (with the word embeddings) from the bottom: 2 save a third of
    # the backward pass on CPU; training all of them scored better on dev.
    frozen_layers: int = 0
    patience: int = 1  # evaluations without improvement before stopping
    seed: int = 13
    max_steps: int | None = None
    checkpoint_every: int = 100  # steps between saves of last/
    threads: int | None = None


@dataclass
class Pair:
    query: str
    positive: int  # catalogue row
    grade: float
    negatives: list[int]  # candidate hard negatives (one is drawn per step)
    relevant: frozenset[int]  # rows judged relevant for the query (masked as in-batch negatives)


@dataclass
class TrainingState:
    epoch: int = 0  # epochs fully done
    step_in_epoch: int = 0  # batches of the current epoch done
    global_step: int = 0
    best_metric: float = -math.inf
    best_step: int = 0
    evaluations_without_gain: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    dev: list[dict] = field(default_factory=list)
    finished: bool = False

    def record(self, dev: dict, metric: str) -> bool:
        """Keep a dev evaluation; whether it is the best so far on `metric` (the patience
        count restarts then, and grows otherwise)."""
        self.dev.append(dev)
        if dev[metric] > self.best_metric:
            self.best_metric, self.best_step = dev[metric], self.global_step
            self.evaluations_without_gain = 0
            return True
        self.evaluations_without_gain += 1
        return False

    def write_history(self, out_dir: Path) -> None:
        history = {"losses": self.losses, "dev": self.dev, "best_step": self.best_step,
                   "best_metric": self.best_metric}
        (out_dir / "history.json").write_text(json.dumps(history, indent=1) + "\n")

    @classmethod
    def resumed(cls, saved: dict, optimizer, scheduler) -> TrainingState:
        """The state a `last/` checkpoint saved ({"trainer", "optimizer", "scheduler",
        "torch_rng"}), with the optimiser, the schedule and torch's RNG put back as they were."""
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        trainer = dict(saved["trainer"])
        trainer["losses"] = [tuple(x) for x in trainer["losses"]]
        return cls(**trainer)


@dataclass
class Provenance:
    """What the manifest records besides the hyper-parameters."""

    data_file: str
    data_sha256: str
    split: dict
    init_model: str


def write_model_folder(model: EncoderWithTokenizer, target: Path,
                       extra: Callable[[Path], object]) -> None:
    """Save `model` as the Hugging Face folder `target`, with `extra(folder)` adding files,
    under a temporary name renamed at the end: an interrupted save never leaves a half-written
    folder."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp)
    extra(tmp)
    swap_in(tmp, target)


def swap_in(tmp: Path, target: Path) -> None:
    """The folder `tmp` becomes `target` (the one there before removed): an interrupted save
    never leaves a half-written `target`."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def adamw_with_warmup(parameters, learning_rate: float, weight_decay: float, total_steps: int,
                      warmup_fraction: float):
    """AdamW and transformers' linear schedule: warm-up over `warmup_fraction` of the steps
    (at least one), then linear decay to zero at the last step."""
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    warmup = max(1, int(total_steps * warmup_fraction))
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def optimisation_step(loss: torch.Tensor, module: torch.nn.Module, optimizer, scheduler) -> None:
    """Back-propagate `loss`, clip the gradient norm to 1, step the optimiser and schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
    optimizer.step()
    scheduler.step()


def epoch_batches(pairs_by_query: dict[str, list[Pair]], config: FinetuneConfig,
                  epoch: int) -> list[list[tuple[Pair, int]]]:
    """This epoch's batches of (pair, drawn hard negative row, or -1 for none)."""
    rng = np.random.default_rng([config.seed, epoch])
    chosen: list[tuple[Pair, int]] = []
    for query in sorted(pairs_by_query):
        options = pairs_by_query[query]
        pair = options[int(rng.integers(len(options)))]
        negative = int(pair.negatives[int(rng.integers(len(pair.negatives)))]) \
            if pair.negatives else -1
        chosen.append((pair, negative))
    order = rng.permutation(len(chosen))
    chosen = [chosen[i] for i in order]
    if config.pairs_per_epoch:
        chosen = chosen[: config.pairs_per_epoch]
    size = config.batch_size
    # A trailing batch of one would have no in-batch negatives: drop it.
    batches = [chosen[i : i + size] for i in range(0, len(chosen), size)]
    return [b for b in batches if len(b) > 1]


def batch_tensors(batch: list[tuple[Pair, int]], titles: list[str]):
    """Query texts, document texts (positives then hard negatives), weights and the mask of
    candidates that are not negatives for each query."""
    queries = [p.query for p, _ in batch]
    doc_rows = [p.positive for p, _ in batch] + [n for _, n in batch if n >= 0]
    excluded = torch.zeros(len(batch), len(doc_rows), dtype=torch.bool)
    for i, (pair, _) in enumerate(batch):
        for j, row in enumerate(doc_rows):
            if j != i and row in pair.relevant:
                excluded[i, j] = True
    weights = torch.tensor([(p.grade - 1.0) / 2.0 for p, _ in batch], dtype=torch.float32)
    return queries, [titles[r] for r in doc_rows], weights, excluded


class Finetuner:
    def __init__(self, init_model: Path, out_dir: Path, pairs: list[Pair], titles: list[str],
                 evaluator: DevRetrievalEvaluator, config: FinetuneConfig,
                 provenance: Provenance):
        if not pairs:
            raise ValueError("no training pairs: the train split has no judgement at or above "
                             f"the positive threshold {config.positive_threshold}")
        self.config = config
        self.out_dir = Path(out_dir)
        self.titles = titles
        self.evaluator = evaluator
        self.provenance = provenance
        self.pairs_by_query: dict[str, list[Pair]] = {}
        for pair in pairs:
            self.pairs_by_query.setdefault(pair.query, []).append(pair)
        if config.threads:
            torch.set_num_threads(config.threads)
        from transformers import set_seed

        set_seed(config.seed)
        self.model = EncoderWithTokenizer(init_model)
        self.loss = GradedMultipleNegativesLoss(config.scale)
        steps_per_epoch = len(epoch_batches(self.pairs_by_query, config, 0))
        if steps_per_epoch == 0:
            raise ValueError("too few training pairs for one batch of two")
        self.total_steps = steps_per_epoch * config.epochs
        if config.max_steps:
            self.total_steps = min(self.total_steps, config.max_steps)
        trainable = self.model.freeze(config.frozen_layers)
        self.optimizer, self.scheduler = adamw_with_warmup(
            trainable, config.learning_rate, config.weight_decay, self.total_steps,
            config.warmup_fraction)
        self.state = TrainingState()

    # ---- checkpoints -------------------------------------------------------------------
    @property
    def best_dir(self) -> Path:
        return self.out_dir / "best"

    @property
    def last_dir(self) -> Path:
        return self.out_dir / "last"

    def _write_folder(self, target: Path, extra) -> None:
        write_model_folder(self.model, target, extra)

    def manifest(self, dev: dict) -> dict:
        return {"created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                **asdict(self.provenance), "hyperparameters": asdict(self.config),
                "dev_metric": {"name": DEV_METRIC, "value": dev.get(DEV_METRIC), **dev},
                "step": self.state.global_step, "epoch": self.state.epoch}

    def save_best(self, dev: dict) -> None:
        manifest = self.manifest(dev)
        self._write_folder(self.best_dir, lambda d: (d / CHECKPOINT_MANIFEST).write_text(
            json.dumps(manifest, indent=2) + "\n"))

    def save_last(self) -> None:
        state = {"optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(),
                 "torch_rng": torch.get_rng_state(), "trainer": asdict(self.state),
                 "config": asdict(self.config), "provenance": asdict(self.provenance)}
        self._write_folder(self.last_dir, lambda d: torch.save(state, d / STATE_FILE))
        self.write_history()

    def try_resume(self) -> bool:
        path = self.last_dir / STATE_FILE
        if not path.is_file():
            return False
        saved = torch.load(path, weights_only=False)
        if saved["provenance"]["data_sha256"] != self.provenance.data_sha256 \
                or saved["provenance"]["split"] != self.provenance.split:
            raise ValueError(f"{self.last_dir} was trained on other data or another split; "
                             "use a new --out folder or delete it")
        self.model.load_weights(self.last_dir)
        self.state = TrainingState.resumed(saved, self.optimizer, self.scheduler)
        print(f"resuming {self.out_dir} at step {self.state.global_step} "
              f"(best dev {DEV_METRIC} {self.state.best_metric:.4f} at step "
              f"{self.state.best_step})", file=sys.stderr)
        return True

    # ---- training ----------------------------------------------------------------------
    def evaluate(self) -> dict:
        started = time.perf_counter()
        dev = self.evaluator(self.model)
        dev = {**dev, "step": self.state.global_step, "epoch": self.state.epoch,
               "seconds": round(time.perf_counter() - started, 1)}
        print(f"dev after step {self.state.global_step}: "
              + ", ".join(f"{k} {v:.4f}" for k, v in dev.items() if k.startswith(("ndcg", "mrr"))),
              file=sys.stderr)
        return dev

    def after_evaluation(self, dev: dict) -> None:
        if self.state.record(dev, DEV_METRIC):
            self.save_best(dev)

    def train(self, resume: bool = True) -> TrainingState:
        if not (resume and self.try_resume()):
            self.out_dir.mkdir(parents=True, exist_ok=True)
            # The starting point is the first candidate for best: fine-tuning must beat it.
            self.after_evaluation(self.evaluate())
        config = self.config
        self.model.module.train()
        while not self.state.finished and self.state.epoch < config.epochs:
            batches = epoch_batches(self.pairs_by_query, config, self.state.epoch)
            bar = tqdm(batches, desc=f"epoch {self.state.epoch + 1}/{config.epochs}",
                       unit="batch", initial=self.state.step_in_epoch)
            for batch in batches[self.state.step_in_epoch:]:
                if config.max_steps and self.state.global_step >= config.max_steps:
                    break
                loss = self.step(batch)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
                if self.state.global_step % config.checkpoint_every == 0:
                    self.save_last()
            bar.close()
            stopped_early = self.state.step_in_epoch < len(batches)
            if not stopped_early:
                self.state.epoch += 1
                self.state.step_in_epoch = 0
            self.after_evaluation(self.evaluate())
            if stopped_early or self.state.evaluations_without_gain >= config.patience:
                self.state.finished = True
            self.save_last()
        self.state.finished = True
        self.save_last()
        self.plot()
        return self.state

    def step(self, batch: list[tuple[Pair, int]]) -> float:
        queries, documents, weights, excluded = batch_tensors(batch, self.titles)
        q = self.model.embed(queries, self.config.max_query_tokens)
        d = self.model.embed(documents, self.config.max_title_tokens)
        loss = self.loss(q, d, weights, excluded)
        optimisation_step(loss, self.model.module, self.optimizer, self.scheduler)
        self.state.global_step += 1
        self.state.step_in_epoch += 1
        value = float(loss.detach())
        self.state.losses.append((self.state.global_step, value))
        return value

    # ---- reporting ---------------------------------------------------------------------
    def write_history(self) -> None:
        self.state.write_history(self.out_dir)

    def plot(self) -> Path:
        return plot_curve(self.state, self.out_dir / "training_curve.png")


def plot_curve(state: TrainingState, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(7, 4))
    if state.losses:
        steps, losses = zip(*state.losses, strict=True)
        window = max(1, len(losses) // 50)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        left.plot(steps, losses, color="0.8", linewidth=0.6, label="loss (per step)")
        left.plot(steps[window - 1:], smooth, color="C0", label=f"loss ({window}-step mean)")
    left.set_xlabel("step")
    left.set_ylabel("training loss")
    right = left.twinx()
    if state.dev:
        right.plot([d["step"] for d in state.dev], [d[DEV_METRIC] for d in state.dev], "o-",
                   color="C3", label=f"dev {DEV_METRIC}")
    right.set_ylabel(f"dev {DEV_METRIC} (sub-corpus)")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles=handles, loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
