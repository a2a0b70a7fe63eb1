"""Evaluate the exported sentiment classifier against TF-IDF + logistic regression on the
held-out test split, and write the benchmark report (Markdown, JSON, confusion-matrix PNG).

The classifier is scored through `SentimentRuntime`, the tokenizer, exported ONNX graph and
decision the served steps run, so the numbers are those of what is served. The report puts it
beside the three-class model it replaced (`sentiment_three_class.json`: that model's report,
kept as it was measured) and measures how well its probabilities are calibrated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fusionrank.core.machine import describe_machine
from fusionrank.core.sentiment.contract import SENTIMENT_CLASSES
from fusionrank.training.sentiment.data import SPLITS, ReviewSet

REPORT_NAME = "sentiment"
# The report of the three-class model served before the star-rating one (same test split).
PREVIOUS_REPORT = "sentiment_three_class.json"
CALIBRATION_BINS = 15


@dataclass
class Scores:
    macro_f1: float
    accuracy: float
    per_class_f1: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted, in SENTIMENT_CLASSES order


def scores(labels: Sequence[int], predictions: Sequence[int]) -> Scores:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    classes = list(range(len(SENTIMENT_CLASSES)))
    per_class = f1_score(labels, predictions, labels=classes, average=None, zero_division=0)
    return Scores(
        macro_f1=round(float(np.mean(per_class)), 4),
        accuracy=round(float(accuracy_score(labels, predictions)), 4),
        per_class_f1={n: round(float(f), 4) for n, f in zip(SENTIMENT_CLASSES, per_class,
                                                            strict=True)},
        confusion=confusion_matrix(labels, predictions, labels=classes).tolist())


def tfidf_baseline_predictions(train_texts: Sequence[str], train_labels: Sequence[int],
                               test_texts: Sequence[str]) -> np.ndarray:
    """TF-IDF (word 1-2 grams, sublinear tf) + logistic regression with balanced class
    weights: the classical baseline, trained on the same train split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(class_weight="balanced", max_iter=2000))
    model.fit(list(train_texts), list(train_labels))
    return model.predict(list(test_texts))


@dataclass
class Calibration:
    """How far the served probabilities are from the frequencies they claim (test split)."""

    log_loss: float  # mean −log P(true class)
    expected_calibration_error: float  # of the most probable class, CALIBRATION_BINS bins
    bins: list[dict[str, float]]  # per bin: mean confidence, accuracy, reviews


def calibration(probabilities: np.ndarray, labels: np.ndarray,
                bins: int = CALIBRATION_BINS) -> Calibration:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    table, error = [], 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap = abs(confidence[members].mean() - correct[members].mean())
            error += members.mean() * gap
            table.append({"confidence": round(float(confidence[members].mean()), 4),
                          "accuracy": round(float(correct[members].mean()), 4),
                          "reviews": int(members.sum())})
    picked = probabilities[np.arange(len(labels)), labels]
    return Calibration(round(float(-np.mean(np.log(np.maximum(picked, 1e-12)))), 4),
                       round(float(error), 4), table)


@dataclass
class SentimentEvaluation:
    test_reviews: int
    classifier: Scores
    tfidf_logreg: Scores
    majority_class: Scores
    classify_seconds: float
    calibration: Calibration | None = None
    source: str = ""
    majority_label: str = ""
    split_sizes: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)


def evaluate_sentiment(reviews: ReviewSet, artefact_dir: str | Path,
                       threads: int | None = None, progress: bool = True) -> SentimentEvaluation:
    import time

    from fusionrank.core.sentiment.runtime import SentimentRuntime

    train, test = reviews.split("train"), reviews.split("test")
    labels = test.label.to_numpy()
    started = time.monotonic()
    runtime = SentimentRuntime(artefact_dir, threads)
    probabilities = runtime(test.text.tolist(), progress=progress)
    decided = runtime.labels(probabilities)
    classify_seconds = time.monotonic() - started
    baseline = tfidf_baseline_predictions(train.text.tolist(), train.label.tolist(),
                                          test.text.tolist())
    majority = np.full(len(labels), int(np.bincount(train.label).argmax()))
    return SentimentEvaluation(
        test_reviews=len(test), classifier=scores(labels, decided),
        tfidf_logreg=scores(labels, baseline), majority_class=scores(labels, majority),
        classify_seconds=round(classify_seconds, 1),
        calibration=calibration(probabilities, labels), source=reviews.source,
        majority_label=SENTIMENT_CLASSES[int(majority[0])] if len(majority) else "",
        split_sizes={s: int((reviews.frame.split == s).sum()) for s in SPLITS},
        class_counts={s: reviews.class_counts(s) for s in SPLITS})


def repository_path(path: str) -> str:
    """`path` relative to the working directory (the repository root) when it lies inside it,
    as it is otherwise."""
    absolute = Path(path).resolve()
    return str(absolute.relative_to(Path.cwd())) if absolute.is_relative_to(Path.cwd()) else path


def previous_model(out_dir: Path) -> tuple[Scores, str] | None:
    """The three-class model's test scores and the command that measured them, if kept."""
    path = out_dir / PREVIOUS_REPORT
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return Scores(**record["evaluation"]["classifier"]), record["command"]


def plot_confusions(named: dict[str, Scores], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(named), figsize=(5 * len(named), 4.4))
    for axis, (name, result) in zip(np.atleast_1d(axes), named.items(), strict=True):
        matrix = np.asarray(result.confusion)
        # Colour by the share of each true class, so the minority rows are readable too.
        shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (row, col), count in np.ndenumerate(matrix):
            axis.text(col, row, f"{count}\n{shares[row, col]:.0%}", ha="center", va="center",
                      color="white" if shares[row, col] > 0.5 else "black", fontsize=9)
        axis.set_xticks(range(3), SENTIMENT_CLASSES)
        axis.set_yticks(range(3), SENTIMENT_CLASSES)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(f"{name}\nmacro-F1 {result.macro_f1:.3f}, accuracy {result.accuracy:.3f}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def token_length_percentiles(lengths: Sequence[int]) -> dict[str, float]:
    values = np.asarray(lengths)
    return {f"p{p}": float(np.percentile(values, p)) for p in (50, 75, 90, 95, 99)} | {
        "max": float(values.max()), "mean": round(float(values.mean()), 1)}


def write_report(out_dir: str | Path, evaluation: SentimentEvaluation, training: dict,
                 export: dict, command: str, wall_seconds: float,
                 token_lengths: dict[str, float]) -> dict[str, Path]:
    """benchmarks/reports/sentiment.{md,json} and sentiment_confusion.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if "source_model" in training:  # a report must not record this machine's folders
        training = training | {"source_model": repository_path(training["source_model"])}
    previous = previous_model(out_dir)
    panels = {"star-rating MiniLM (served ONNX)": evaluation.classifier}
    if previous:
        panels["three-class MiniLM (before)"] = previous[0]
    panels["TF-IDF + logistic regression"] = evaluation.tfidf_logreg
    png = plot_confusions(panels, out_dir / f"{REPORT_NAME}_confusion.png")
    machine = describe_machine()
    record = {"command": command, "machine": machine, "wall_seconds": round(wall_seconds, 1),
              "evaluation": asdict(evaluation), "training": training, "export": export,
              "token_lengths_train": token_lengths,
              "previous_model": ({"scores": asdict(previous[0]), "command": previous[1],
                                  "report": PREVIOUS_REPORT} if previous else None)}
    json_path = out_dir / f"{REPORT_NAME}.json"
    json_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    md_path = out_dir / f"{REPORT_NAME}.md"
    md_path.write_text(_markdown(record, evaluation, png.name, previous), encoding="utf-8")
    return {"markdown": md_path, "json": json_path, "confusion": png}


def _confusion_table(result: Scores) -> str:
    head = "| true \\ predicted | " + " | ".join(SENTIMENT_CLASSES) + " |"
    lines = [head, "| --- |" + " --- |" * len(SENTIMENT_CLASSES)]
    lines += [f"| {name} | " + " | ".join(str(v) for v in row) + " |"
              for name, row in zip(SENTIMENT_CLASSES, result.confusion, strict=True)]
    return "\n".join(lines)


def _markdown(record: dict, evaluation: SentimentEvaluation, png_name: str,
              previous: tuple[Scores, str] | None) -> str:
    rows = [("star-rating MiniLM (served ONNX, dev-chosen decision)", evaluation.classifier)]
    if previous:
        rows.append(("three-class MiniLM (served before; its own report)", previous[0]))
    rows += [("TF-IDF + logistic regression (balanced)", evaluation.tfidf_logreg),
             (f"majority class ({evaluation.majority_label})", evaluation.majority_class)]
    table = ["| model | macro-F1 | accuracy | F1 negative | F1 neutral | F1 positive |",
             "| --- | --- | --- | --- | --- | --- |"]
    table += [f"| {name} | {s.macro_f1:.3f} | {s.accuracy:.3f} | "
              + " | ".join(f"{s.per_class_f1[c]:.3f}" for c in SENTIMENT_CLASSES) + " |"
              for name, s in rows]
    confusions = "\n\n".join(f"{name}:\n\n{_confusion_table(s)}" for name, s in rows[:-1])
    training, export = record["training"], record["export"]
    counts = "\n".join(f"| {s} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in
                                                                   SENTIMENT_CLASSES) + " |"
                       for s, c in evaluation.class_counts.items())
    config = training.get("config", {})
    lengths = record["token_lengths_train"]
    calibrated = evaluation.calibration
    bins = "\n".join(f"| {b['confidence']:.3f} | {b['accuracy']:.3f} | {b['reviews']} |"
                     for b in calibrated.bins) if calibrated else ""
    previous_line = (f"- The three-class model's row is from its own report "
                     f"(`{PREVIOUS_REPORT}`, command `{previous[1]}`), on the same test split."
                     if previous else "")
    log_loss = training.get("dev_log_loss", {})
    return f"""# Review sentiment: a star-rating MiniLM vs the three-class one and TF-IDF + LR

Three classes from the star rating (1-2 negative, 3 neutral, 4-5 positive) on
`{evaluation.source}`; text = title + review text
(reviews with neither are skipped); split by review, md5 of the review id (buckets 0-7 train,
8 dev, 9 test). Every number below is on the held-out **test** split
({evaluation.test_reviews} reviews), unseen in training, checkpoint choice, calibration and the
choice of the decision offsets.

## Result

{chr(10).join(table)}

![confusion matrices]({png_name})

Confusion matrices (rows: true class, columns: predicted):

{confusions}

### Calibration of the served probabilities

The product prior averages P(positive) − P(negative) over a product's reviews, so the
probabilities themselves must mean what they say. Test log-loss
{calibrated.log_loss if calibrated else float("nan"):.4f}; expected calibration error of the
most probable class ({CALIBRATION_BINS} bins)
{calibrated.expected_calibration_error if calibrated else float("nan"):.4f}.

| mean confidence | accuracy | reviews |
| --- | --- | --- |
{bins}

## How it was made

- Command: `{record["command"]}`
- Machine: {record["machine"]}; no GPU. The 2 cores were shared with other jobs during the
  run, so times are upper bounds.
- Wall time of the whole command (load, train, export, parity, evaluation, report):
  {record["wall_seconds"] / 60:.1f} min; training {training.get("train_seconds", 0) / 60:.1f} min;
  classifying the test split through the served steps {evaluation.classify_seconds:.0f} s.
- Training: {training.get("trained_by", "the command above")}.
- Classifier: all-MiniLM-L6-v2 (bundled), mean-pooled unit-length embedding → linear head to
  five star-rating logits; a class's probability is the sum of its stars' (softmax over the
  stars). Embeddings and the lowest {config.get("freeze_layers")} of 6 layers frozen (their
  output computed once per review), top layers and head fine-tuned: {training.get("steps")}
  steps of batch {config.get("batch_size")} ({config.get("epochs")} epochs planned), AdamW,
  learning rate {config.get("encoder_lr")} (encoder) / {config.get("head_lr")} (head), linear
  decay, seed {config.get("seed")}, sequences truncated to {config.get("max_tokens")} word pieces.
- The rating's order: each review's target is its own star with
  {config.get("neighbour_smoothing")} of the mass moved to the neighbouring stars (label
  smoothing between neighbours), so a 3-star review is learnt as the middle of the scale.
- Class imbalance: each review's loss weighted by its class's weight
  {training.get("class_weights")} (negative, neutral, positive; square root of inverse
  frequency).
- Dev chooses the rest: the checkpoint (best dev macro-F1, step {training.get("best_step")});
  a temperature {training.get("temperature")} dividing the star logits (dev log-loss
  {log_loss.get("before")} → {log_loss.get("after")}; folded into the graph, so the served
  probabilities are calibrated); and the decision offsets {training.get("decision_offsets")}
  added to log P before the arg-max (the served LABEL), tuned for macro-F1. Dev macro-F1
  {training.get("dev_macro_f1_untuned")} by the plain arg-max, {training.get("dev_macro_f1")}
  with the offsets.
{previous_line}
- Review length in word pieces (title + text, train split, untruncated): median
  {lengths["p50"]:.0f}, 75th percentile {lengths["p75"]:.0f}, 90th {lengths["p90"]:.0f},
  95th {lengths["p95"]:.0f}, 99th {lengths["p99"]:.0f}, max {lengths["max"]:.0f}.
- ONNX export: softmax and the per-class sums inside the graph, dynamic batch and sequence
  axes; parity against PyTorch on {export.get("parity_texts")} dev reviews: max absolute
  probability difference {export.get("parity_max_abs_diff", float("nan")):.1e} (tolerance 1e-4).

## Data

| split | reviews | negative | neutral | positive |
| --- | --- | --- | --- | --- |
{counts}
"""
