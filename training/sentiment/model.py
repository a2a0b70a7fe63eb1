"""Fine-tune the bundled MiniLM encoder into a review sentiment classifier that reads the star
rating's order.

Model: the mean-pooled, unit-length sentence embedding (`MeanPooledEncoder`, the same module the
search encoder exports) → dropout → a linear head to five logits, one per star rating. A class's
probability is the sum of its stars' (1-2 negative, 3 neutral, 4-5 positive).

Why stars: a 3-star review sits between a 2 and a 4. Three unrelated classes throw that away; the
target here is the review's own star with a share (`neighbour_smoothing`) moved to the
neighbouring stars, so a mixed review close to a 2 or a 4 costs the model less than one read as
its opposite, and the neutral class is learnt as the middle of a scale.

Class imbalance (about 77% positive, 12% neutral, 11% negative) is handled twice:
1. each review's loss is weighted by the square root of its class's inverse frequency, so the
   minority classes shape the encoder without the gradient noise full inverse weights bring;
2. after training, dev chooses the decision: per-class offsets added to log P before the
   arg-max, tuned for macro-F1. They are recorded, not folded into the model, so the served
   probabilities stay calibrated (a temperature fitted on dev's log-likelihood divides the star
   logits inside the graph) for the product prior that averages them.

CPU budget (2 cores shared with other work): the embeddings and the lowest `freeze_layers`
transformer layers are frozen, and their output for every train and dev review is computed once
and kept in memory ("bottom" states, about 2 GB in float32 for the full data). Each training
step then runs only the top layers, forward and backward: with 2 of 6 layers frozen an epoch
costs about two forward passes of the whole encoder instead of about 2.3 without the cache (and
3 when every layer trains). Sequences are truncated to `max_tokens`, and batches group reviews
of similar length so little of the work is padding. How the defaults (4 trainable layers, 2.5
epochs) were chosen, run by run, is in benchmarks/reports/sentiment.md.

Checkpoint folder:
    encoder/        Hugging Face model folder (config, weights, tokenizer files)
    head.pt         the linear head's state dict (bias includes the tuned offsets)
    manifest.json   classes, max_tokens, training settings, dev scores (SentimentManifest)
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fusionrank.core import artefacts
from fusionrank.core.encoding import TextTokenizer, pad
from fusionrank.core.model_folders import bundled_model_path, check_model_folder
from fusionrank.core.sentiment.contract import (
    CLASS_OF_STAR,
    MAX_REVIEW_TOKENS,
    SENTIMENT_CLASSES,
    STAR_RATINGS,
)
from fusionrank.core.sentiment.runtime import SentimentRecord
from fusionrank.export.sentiment.classifier import export_sentiment
from fusionrank.training.encoder import MeanPooledEncoder
from fusionrank.training.sentiment.data import ReviewSet

ENCODER_DIR = "encoder"
HEAD_FILE = "head.pt"
MANIFEST_FILE = "manifest.json"
# Tokenizer files copied beside the weights so the checkpoint loads on its own.
TOKENIZER_FILES = (artefacts.TOKENIZER, "vocab.txt", "tokenizer_config.json",
                   "special_tokens_map.json")
OFFSET_GRID = np.round(np.arange(-3.0, 3.01, 0.1), 2)
TEMPERATURE_GRID = np.round(np.exp(np.linspace(np.log(0.25), np.log(4.0), 161)), 4)
# [stars, classes]: 1 where the star belongs to the class.
STAR_GROUPS = np.eye(len(SENTIMENT_CLASSES), dtype=np.float32)[list(CLASS_OF_STAR)]


@dataclass
class SentimentConfig:
    """Training settings; the defaults are the full run of benchmarks/reports/sentiment.md."""

    model_dir: str | None = None  # None: the bundled all-MiniLM-L6-v2
    max_tokens: int = MAX_REVIEW_TOKENS
    epochs: float = 2.5  # why 2.5: benchmarks/reports/sentiment.md, "History"
    batch_size: int = 32
    encoder_lr: float = 1e-4
    # The head starts from random weights on a unit-length embedding: it needs larger steps.
    head_lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    dropout: float = 0.1
    # The embeddings are always frozen; so are this many lowest transformer layers (of 6).
    freeze_layers: int = 2
    class_weight_power: float = 0.5  # weight = (1 / class frequency) ** power, mean 1
    # The share of each review's target moved from its star to the neighbouring stars
    # (split between two neighbours, all to the one a 1- or 5-star review has).
    neighbour_smoothing: float = 0.2
    evals_per_epoch: int = 2
    max_steps: int | None = None  # stop early (tests, smoke runs)
    # A wall-clock guard for shared machines: past it, training stops after the next dev
    # evaluation (the manifest records the steps done). None: no guard, fully reproducible.
    max_minutes: float | None = None
    limit: int | None = None  # use only the first N training reviews (development)
    seed: int = 13
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    tune_offsets: bool = True


@dataclass
class SentimentManifest:
    classes: list[str]
    max_tokens: int
    source_model: str
    config: dict
    class_weights: list[float]
    decision_offsets: list[float]  # added to log P before the arg-max (`decide`)
    temperature: float  # folded into the head: star logits / temperature
    dev_macro_f1_untuned: float  # plain arg-max, before the offsets
    dev_macro_f1: float
    dev_log_loss: dict[str, float]  # class log-likelihood loss before / after the temperature
    best_step: int
    steps: int  # done (fewer than planned when max_minutes stopped training)
    train_examples: int
    train_seconds: float
    loss_history: list[float] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> SentimentManifest:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


class SentimentClassifier(nn.Module):
    """Token ids → five star-rating logits (1..5 stars); `class_probabilities` groups them."""

    def __init__(self, encoder: MeanPooledEncoder, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.transformer.config.hidden_size, len(STAR_RATINGS))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The whole model, as exported and served."""
        return self.head(self.dropout(self.encoder(input_ids, attention_mask)))

    # Training runs the same computation in two parts, bottom (frozen, computed once per
    # review) and top (trained); tests check the two parts equal `forward`.

    @torch.no_grad()
    def bottom(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               layers: int) -> torch.Tensor:
        """Token states after the embeddings and the lowest `layers` transformer layers."""
        transformer = self.encoder.transformer
        states = transformer.embeddings(input_ids=input_ids,
                                        token_type_ids=torch.zeros_like(input_ids))
        for layer in transformer.encoder.layer[:layers]:
            states = _layer_output(layer(states, additive_mask(attention_mask, states.dtype)))
        return states

    def top(self, states: torch.Tensor, attention_mask: torch.Tensor,
            from_layer: int) -> torch.Tensor:
        """Logits from the token states `bottom` returned."""
        for layer in self.encoder.transformer.encoder.layer[from_layer:]:
            states = _layer_output(layer(states, additive_mask(attention_mask, states.dtype)))
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return self.head(self.dropout(nn.functional.normalize(pooled, p=2, dim=1)))


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[batch, tokens] 1/0 mask → [batch, 1, 1, tokens], 0 where attended and the dtype's
    minimum where padded: the form BERT's eager and SDPA attention both add to their scores."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def _layer_output(output: torch.Tensor | tuple) -> torch.Tensor:
    # transformers 4.x layers return a tuple, 5.x the tensor.
    return output[0] if isinstance(output, tuple) else output


def new_classifier(model_dir: str | Path, dropout: float = 0.1) -> SentimentClassifier:
    from transformers import AutoModel

    transformer = AutoModel.from_pretrained(check_model_folder(model_dir), local_files_only=True)
    return SentimentClassifier(MeanPooledEncoder(transformer), dropout)


def load_classifier(checkpoint: str | Path) -> tuple[SentimentClassifier, SentimentManifest]:
    """A saved classifier in eval mode, and its manifest."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / MANIFEST_FILE).is_file():
        raise FileNotFoundError(f"{checkpoint} is not a sentiment checkpoint: no {MANIFEST_FILE}")
    manifest = SentimentManifest.load(checkpoint / MANIFEST_FILE)
    model = new_classifier(checkpoint / ENCODER_DIR)
    model.head.load_state_dict(torch.load(checkpoint / HEAD_FILE, weights_only=True))
    return model.eval(), manifest


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path,
                      check_texts: Sequence[str]) -> SentimentRecord:
    """A saved checkpoint exported to ONNX (`export_sentiment`), parity-checked on real text."""
    classifier, manifest = load_classifier(checkpoint)
    return export_sentiment(classifier, manifest.classes, manifest.max_tokens,
                            Path(checkpoint) / ENCODER_DIR / artefacts.TOKENIZER, out_dir,
                            check_texts, checkpoint=str(checkpoint),
                            decision_offsets=manifest.decision_offsets,
                            temperature=manifest.temperature)


def save_classifier(model: SentimentClassifier, manifest: SentimentManifest,
                    source_model: Path, checkpoint: Path) -> Path:
    encoder_dir = checkpoint / ENCODER_DIR
    model.encoder.transformer.save_pretrained(encoder_dir)
    for name in TOKENIZER_FILES:
        if (source_model / name).is_file():
            shutil.copyfile(source_model / name, encoder_dir / name)
    torch.save(model.head.state_dict(), checkpoint / HEAD_FILE)
    manifest.save(checkpoint / MANIFEST_FILE)
    return checkpoint


def class_weights(labels: Sequence[int], power: float) -> np.ndarray:
    """(1 / frequency) ** power per class, scaled to mean 1; a class absent from `labels`
    gets the largest weight present."""
    counts = np.bincount(np.asarray(labels), minlength=len(SENTIMENT_CLASSES)).astype(float)
    weights = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** power, np.nan)
    weights = np.nan_to_num(weights, nan=np.nanmax(weights))
    return weights / weights.mean()


def freeze_lower_layers(model: SentimentClassifier, layers: int) -> None:
    """No gradients for the embeddings and the lowest `layers` transformer layers."""
    transformer = model.encoder.transformer
    if not 0 <= layers < len(transformer.encoder.layer):
        raise ValueError(f"freeze_layers must be 0..{len(transformer.encoder.layer) - 1}, "
                         f"got {layers}")
    for parameter in transformer.embeddings.parameters():
        parameter.requires_grad = False
    for layer in transformer.encoder.layer[:layers]:
        for parameter in layer.parameters():
            parameter.requires_grad = False


def bottom_states(model: SentimentClassifier, ids: Sequence[np.ndarray], layers: int,
                  batch_size: int = 64, progress: bool = False) -> list[torch.Tensor]:
    """Each review's frozen-part output, unpadded ([tokens, hidden] float32)."""
    from tqdm import tqdm

    model.eval()
    order = np.argsort([len(s) for s in ids], kind="stable")
    states: list[torch.Tensor | None] = [None] * len(ids)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=f"frozen layers 0-{layers}", unit="batch",
                      disable=not progress, mininterval=5.0):
        rows = order[start : start + batch_size]
        input_ids, mask = tensors(ids, rows)
        out = model.bottom(input_ids, mask, layers)
        for row, sequence, length in zip(rows, out, mask.sum(1).tolist(), strict=True):
            states[row] = sequence[:length].clone()
    return states


def pad_states(states: Sequence[torch.Tensor], rows: Sequence[int]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached states of `rows`, zero-padded into one batch, with the attention mask."""
    longest = max(len(states[i]) for i in rows)
    batch = torch.zeros(len(rows), longest, states[rows[0]].shape[-1])
    mask = torch.zeros(len(rows), longest, dtype=torch.int64)
    for slot, row in enumerate(rows):
        batch[slot, : len(states[row])] = states[row]
        mask[slot, : len(states[row])] = 1
    return batch, mask


def length_bucketed_batches(lengths: Sequence[int], batch_size: int,
                            rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of indices whose members have similar lengths: shuffle, sort within
    windows of 50 batches, cut, shuffle the batches. Padding then costs little."""
    order = rng.permutation(len(lengths))
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def tensors(ids: Sequence[np.ndarray], rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = pad([ids[i] for i in rows])
    return torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)


def predict_logits(model: SentimentClassifier, ids: Sequence[np.ndarray],
                   batch_size: int = 64) -> np.ndarray:
    """Logits for each token sequence, computed in length-sorted chunks."""
    return _predict_in_chunks(model, ids, lambda rows: model(*tensors(ids, rows)), batch_size)


def predict_logits_from_states(model: SentimentClassifier, states: Sequence[torch.Tensor],
                               from_layer: int, batch_size: int = 64) -> np.ndarray:
    """`predict_logits` on cached bottom states (runs only the top layers)."""
    return _predict_in_chunks(
        model, states, lambda rows: model.top(*pad_states(states, rows), from_layer), batch_size)


@torch.no_grad()
def _predict_in_chunks(model: SentimentClassifier, sequences: Sequence,
                       logits_of: Callable[[np.ndarray], torch.Tensor],
                       batch_size: int) -> np.ndarray:
    """`logits_of(rows)` over length-sorted chunks of rows (little padding), in eval mode."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(s) for s in sequences], kind="stable")
    out = np.empty((len(sequences), model.head.out_features), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        out[rows] = logits_of(rows).numpy()
    model.train(was_training)
    return out


def macro_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Mean F1 over the three classes (a class never predicted nor present scores 0). Plain
    numpy: the offset search calls it a few thousand times."""
    n = len(SENTIMENT_CLASSES)
    confusion = np.bincount(np.asarray(labels) * n + np.asarray(predictions),
                            minlength=n * n).reshape(n, n)
    hits = np.diag(confusion).astype(float)
    denominator = confusion.sum(0) + confusion.sum(1)
    return float(np.mean(np.where(denominator > 0, 2 * hits / np.maximum(denominator, 1), 0.0)))


def class_probabilities(star_logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """[n, 5] star logits → [n, 3] class probabilities (softmax over stars, summed per class)."""
    scaled = np.asarray(star_logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    stars = np.exp(scaled)
    stars /= stars.sum(axis=1, keepdims=True)
    return stars @ STAR_GROUPS.astype(np.float64)


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean −log P(true class)."""
    picked = np.asarray(probabilities)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.mean(np.log(np.maximum(picked, 1e-12))))


def fit_temperature(star_logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature (on a log grid, 0.25..4) with the smallest dev class log-loss."""
    losses = [log_loss(class_probabilities(star_logits, t), labels) for t in TEMPERATURE_GRID]
    return float(TEMPERATURE_GRID[int(np.argmin(losses))])


def star_targets(ratings: np.ndarray, smoothing: float) -> np.ndarray:
    """[n, 5] target distributions: 1 − smoothing on each review's star, the rest shared by the
    neighbouring stars."""
    stars = len(STAR_RATINGS)
    index = np.asarray(ratings) - STAR_RATINGS[0]
    targets = np.zeros((len(index), stars), dtype=np.float32)
    for row, star in enumerate(index):
        neighbours = [n for n in (star - 1, star + 1) if 0 <= n < stars]
        targets[row, neighbours] = smoothing / len(neighbours)
        targets[row, star] = 1.0 - smoothing
    return targets


def weighted_soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                                weights: torch.Tensor) -> torch.Tensor:
    """Σ wᵢ·CE(targetᵢ, softmax(logitsᵢ)) / Σ wᵢ: the weighted mean `nn.CrossEntropyLoss(weight)`
    takes, for soft targets."""
    per_review = -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1)
    return (weights * per_review).sum() / weights.sum()


def tune_logit_offsets(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """Offsets (negative's fixed at 0) added to the logits (or log-probabilities) that maximise
    dev macro-F1, searched on a grid; ties go to the smallest change. Returns (offsets,
    macro-F1 with them)."""
    best = (macro_f1(labels, logits.argmax(1)), 0.0, np.zeros(len(SENTIMENT_CLASSES)))
    for neutral in OFFSET_GRID:
        for positive in OFFSET_GRID:
            offsets = np.array([0.0, neutral, positive])
            score = macro_f1(labels, (logits + offsets).argmax(1))
            size = abs(neutral) + abs(positive)
            if score > best[0] + 1e-12 or (abs(score - best[0]) <= 1e-12 and size < best[1]):
                best = (score, size, offsets)
    return best[2], best[0]


@dataclass
class TrainResult:
    checkpoint: Path
    manifest: SentimentManifest


@dataclass
class CachedSplits:
    """Train and dev reviews as frozen-part states (see `bottom_states`) with their labels."""

    train_states: list[torch.Tensor]
    train_labels: np.ndarray  # class indices
    train_ratings: np.ndarray  # 1..5 stars
    dev_states: list[torch.Tensor]
    dev_labels: np.ndarray


def cache_splits(model: SentimentClassifier, reviews: ReviewSet, config: SentimentConfig,
                 tokenizer: TextTokenizer, progress: bool) -> CachedSplits:
    train = reviews.split("train")
    if config.limit:
        train = train.iloc[: config.limit]
    dev = reviews.split("dev")
    if train.empty or dev.empty:
        raise ValueError(f"training needs train and dev reviews; {reviews.summary()}")
    layers = config.freeze_layers
    return CachedSplits(
        bottom_states(model, tokenizer.token_ids(train.text.tolist()), layers, progress=progress),
        train.label.to_numpy(),
        train.rating.to_numpy(),
        bottom_states(model, tokenizer.token_ids(dev.text.tolist()), layers, progress=progress),
        dev.label.to_numpy())


def make_optimiser(model: SentimentClassifier, config: SentimentConfig, total_steps: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the unfrozen parameters (the head at its own rate), and transformers' linear
    schedule: warm-up over `warmup_fraction` of the steps, then linear decay to zero."""
    from transformers import get_linear_schedule_with_warmup

    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(
        [{"params": encoder_params, "lr": config.encoder_lr},
         {"params": model.head.parameters(), "lr": config.head_lr}],
        weight_decay=config.weight_decay)
    warmup = int(total_steps * config.warmup_fraction)
    return optimiser, get_linear_schedule_with_warmup(optimiser, warmup, total_steps)


@dataclass
class FitResult:
    best_dev_macro_f1: float
    best_step: int
    best_state: dict
    losses: list[float]


def fit(model: SentimentClassifier, data: CachedSplits, config: SentimentConfig,
        weights: np.ndarray, started: float, progress: bool) -> FitResult:
    """The training loop over the top layers; evaluates dev macro-F1 `evals_per_epoch` times
    an epoch and keeps the best state."""
    steps_per_epoch = math.ceil(len(data.train_states) / config.batch_size)
    total = math.ceil(steps_per_epoch * config.epochs)
    if config.max_steps:
        total = min(total, config.max_steps)
    eval_every = max(1, steps_per_epoch // max(config.evals_per_epoch, 1))
    optimiser, scheduler = make_optimiser(model, config, total)
    targets = torch.from_numpy(star_targets(data.train_ratings, config.neighbour_smoothing))
    review_weights = torch.from_numpy(np.asarray(weights, np.float32)[data.train_labels])
    frozen = config.freeze_layers

    rng = np.random.default_rng(config.seed)
    lengths = [len(s) for s in data.train_states]  # batches group similar lengths
    batches: list[np.ndarray] = []
    best = FitResult(-1.0, 0, {}, [])
    model.train()
    bar = _progress(total, progress)
    for step in range(1, total + 1):
        if not batches:
            batches = length_bucketed_batches(lengths, config.batch_size, rng)
        rows = batches.pop()
        logits = model.top(*pad_states(data.train_states, rows), frozen)
        loss = weighted_soft_cross_entropy(logits, targets[rows], review_weights[rows])
        loss.backward()
        optimiser.step()
        scheduler.step()
        optimiser.zero_grad(set_to_none=True)
        best.losses.append(loss.item())
        bar.update(1)
        if step % eval_every == 0 or step == total:
            logits = predict_logits_from_states(model, data.dev_states, frozen)
            score = macro_f1(data.dev_labels, class_probabilities(logits).argmax(1))
            if score > best.best_dev_macro_f1:
                best.best_dev_macro_f1, best.best_step = score, step
                best.best_state = copy.deepcopy(model.state_dict())
            if config.max_minutes and time.monotonic() - started > 60 * config.max_minutes:
                break
        bar.set_postfix(loss=f"{np.mean(best.losses[-20:]):.3f}",
                        dev_f1=f"{best.best_dev_macro_f1:.3f}", refresh=False)
    bar.close()
    return best


def train_sentiment(reviews: ReviewSet, config: SentimentConfig, out_dir: str | Path,
                    progress: bool = True) -> TrainResult:
    """Fine-tune on the train split, keep the step with the best dev macro-F1, fit the
    temperature and the decision offsets on dev, and save the checkpoint into `out_dir`."""
    from transformers import set_seed

    started = time.monotonic()
    set_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    source = check_model_folder(config.model_dir or bundled_model_path())
    model = new_classifier(source, config.dropout)
    freeze_lower_layers(model, config.freeze_layers)
    data = cache_splits(model, reviews, config,
                        TextTokenizer(source / artefacts.TOKENIZER, config.max_tokens), progress)
    weights = class_weights(data.train_labels, config.class_weight_power)
    result = fit(model, data, config, weights, started, progress)

    model.load_state_dict(result.best_state)
    model.eval()
    dev_logits = predict_logits_from_states(model, data.dev_states, config.freeze_layers)
    temperature = fit_temperature(dev_logits, data.dev_labels)
    with torch.no_grad():  # the exported graph then returns calibrated probabilities
        model.head.weight /= temperature
        model.head.bias /= temperature
    probabilities = class_probabilities(dev_logits, temperature)
    offsets, tuned = np.zeros(len(SENTIMENT_CLASSES)), result.best_dev_macro_f1
    if config.tune_offsets:
        offsets, tuned = tune_logit_offsets(np.log(np.maximum(probabilities, 1e-12)),
                                            data.dev_labels)
    manifest = SentimentManifest(
        classes=list(SENTIMENT_CLASSES), max_tokens=config.max_tokens, source_model=str(source),
        config=asdict(config), class_weights=[round(float(w), 4) for w in weights],
        decision_offsets=[float(o) for o in offsets], temperature=temperature,
        dev_macro_f1_untuned=round(result.best_dev_macro_f1, 4), dev_macro_f1=round(tuned, 4),
        dev_log_loss={
            "before": round(log_loss(class_probabilities(dev_logits), data.dev_labels), 4),
            "after": round(log_loss(probabilities, data.dev_labels), 4)},
        best_step=result.best_step, steps=len(result.losses),
        train_examples=len(data.train_states),
        train_seconds=round(time.monotonic() - started, 1),
        loss_history=[round(x, 4) for x in result.losses])
    checkpoint = Path(out_dir)
    checkpoint.mkdir(parents=True, exist_ok=True)
    return TrainResult(save_classifier(model, manifest, source, checkpoint), manifest)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="fine-tuning", unit="step", disable=not enabled,
                mininterval=5.0)
