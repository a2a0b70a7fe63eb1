"""Evaluate the exported sentiment classifier against TF-IDF + logistic regression on the
held-out test split, and write the benchmark report (Markdown, JSON, confusion-matrix PNG).

The classifier is scored through `SentimentRuntime`, the tokenizer and exported ONNX graph the
served steps run, so the numbers are those of what is served.
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
class SentimentEvaluation:
    test_reviews: int
    classifier: Scores
    tfidf_logreg: Scores
    majority_class: Scores
    classify_seconds: float
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
    probabilities = SentimentRuntime(artefact_dir, threads)(test.text.tolist(), progress=progress)
    classify_seconds = time.monotonic() - started
    baseline = tfidf_baseline_predictions(train.text.tolist(), train.label.tolist(),
                                          test.text.tolist())
    majority = np.full(len(labels), int(np.bincount(train.label).argmax()))
    return SentimentEvaluation(
        test_reviews=len(test), classifier=scores(labels, probabilities.argmax(1)),
        tfidf_logreg=scores(labels, baseline), majority_class=scores(labels, majority),
        classify_seconds=round(classify_seconds, 1), source=reviews.source,
        majority_label=SENTIMENT_CLASSES[int(majority[0])] if len(majority) else "",
        split_sizes={s: int((reviews.frame.split == s).sum()) for s in SPLITS},
        class_counts={s: reviews.class_counts(s) for s in SPLITS})


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
    png = plot_confusions({"fine-tuned MiniLM (ONNX)": evaluation.classifier,
                           "TF-IDF + logistic regression": evaluation.tfidf_logreg},
                          out_dir / f"{REPORT_NAME}_confusion.png")
    machine = describe_machine()
    record = {"command": command, "machine": machine, "wall_seconds": round(wall_seconds, 1),
              "evaluation": asdict(evaluation), "training": training, "export": export,
              "token_lengths_train": token_lengths}
    json_path = out_dir / f"{REPORT_NAME}.json"
    json_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    md_path = out_dir / f"{REPORT_NAME}.md"
    md_path.write_text(_markdown(record, evaluation, png.name), encoding="utf-8")
    return {"markdown": md_path, "json": json_path, "confusion": png}


def _markdown(record: dict, evaluation: SentimentEvaluation, png_name: str) -> str:
    rows = [("fine-tuned MiniLM (served ONNX)", evaluation.classifier),
            ("TF-IDF + logistic regression (balanced)", evaluation.tfidf_logreg),
            (f"majority class ({evaluation.majority_label})", evaluation.majority_class)]
    table = ["| model | macro-F1 | accuracy | F1 negative | F1 neutral | F1 positive |",
             "| --- | --- | --- | --- | --- | --- |"]
    table += [f"| {name} | {s.macro_f1:.3f} | {s.accuracy:.3f} | "
              + " | ".join(f"{s.per_class_f1[c]:.3f}" for c in SENTIMENT_CLASSES) + " |"
              for name, s in rows]
    training, export = record["training"], record["export"]
    counts = "\n".join(f"| {s} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in
                                                                   SENTIMENT_CLASSES) + " |"
                       for s, c in evaluation.class_counts.items())
    config = training.get("config", {})
    lengths = record["token_lengths_train"]
    return f"""# Review sentiment: fine-tuned MiniLM vs TF-IDF + logistic regression

Three classes from the star rating (1-2 negative, 3 neutral, 4-5 positive) on
`{evaluation.source}`; text = title + review text
(reviews with neither are skipped); split by review, md5 of the review id (buckets 0-7 train,
8 dev, 9 test). Every number below is on the held-out **test** split
({evaluation.test_reviews} reviews), unseen in training, checkpoint choice and offset tuning.

## Result

{chr(10).join(table)}

![confusion matrices]({png_name})

## How it was made

- Command: `{record["command"]}`
- Machine: {record["machine"]}; no GPU. The 2 cores were shared with other jobs during the
  run, so times are upper bounds.
- Wall time of the whole command (load, train, export, parity, evaluation, report):
  {record["wall_seconds"] / 60:.1f} min; training {training.get("train_seconds", 0) / 60:.1f} min;
  classifying the test split through the served steps {evaluation.classify_seconds:.0f} s.
- Training: {training.get("trained_by", "the command above")}.
- Classifier: all-MiniLM-L6-v2 (bundled), mean-pooled unit-length embedding → linear head.
  Embeddings and the lowest {config.get("freeze_layers")} of 6 layers frozen (their output
  computed once per review), top layers and head fine-tuned: {training.get("steps")} steps of
  batch {config.get("batch_size")} ({config.get("epochs")} epochs planned), AdamW, learning
  rate {config.get("encoder_lr")} (encoder) / {config.get("head_lr")} (head), linear decay,
  seed {config.get("seed")}, sequences truncated to {config.get("max_tokens")} word pieces.
- Class imbalance: cross-entropy class weights {training.get("class_weights")} (negative,
  neutral, positive; square root of inverse frequency), then logit offsets
  {training.get("logit_offsets")} tuned on dev for macro-F1 and folded into the head's bias.
  Dev macro-F1 {training.get("dev_macro_f1_untuned")} before the offsets,
  {training.get("dev_macro_f1")} after; best dev checkpoint at step {training.get("best_step")}.
- Review length in word pieces (title + text, train split, untruncated): median
  {lengths["p50"]:.0f}, 75th percentile {lengths["p75"]:.0f}, 90th {lengths["p90"]:.0f},
  95th {lengths["p95"]:.0f}, 99th {lengths["p99"]:.0f}, max {lengths["max"]:.0f}.
- ONNX export: softmax inside the graph, dynamic batch and sequence axes; parity against
  PyTorch on {export.get("parity_texts")} dev reviews: max absolute probability difference
  {export.get("parity_max_abs_diff", float("nan")):.1e} (tolerance 1e-4).

## Data

| split | reviews | negative | neutral | positive |
| --- | --- | --- | --- | --- |
{counts}
"""
