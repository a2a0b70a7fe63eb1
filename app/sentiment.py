"""Sentiment commands: `fusionrank train-sentiment` and `fusionrank sentiment`.

    fusionrank train-sentiment                      # train, export, evaluate, write the report
    fusionrank train-sentiment --max-steps 20 --limit 500 --report-dir /tmp/r   # a smoke run
    fusionrank sentiment "Love it, fits perfectly" "Fell apart after one wash"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from fusionrank.app.clients import add_client_arguments, client_for, not_served_message
from fusionrank.core import artefacts

DEFAULT_OUT = Path("runs/sentiment")
DEFAULT_REPORT_DIR = Path("benchmarks/reports")
PARITY_REVIEWS = 256
CHECKPOINT_DIR = "checkpoint"
FEATURES_DIR = "features"


def add_train_sentiment(commands: argparse._SubParsersAction) -> None:
    from fusionrank.training.sentiment.model import SentimentConfig

    defaults = SentimentConfig()
    parser = commands.add_parser(
        "train-sentiment",
        help="fine-tune the review sentiment classifier, export it to ONNX and write the "
             "benchmark report against TF-IDF + logistic regression")
    parser.add_argument("--reviews", help="reviews file with the dataset's columns (default: "
                                          "reviews/womens_clothing_reviews.csv.gz of --datasets)")
    parser.add_argument("--datasets",
                        help="folder of the shared datasets (default ../shared/datasets)")
    parser.add_argument("--model", help="local Hugging Face encoder folder "
                                        "(default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"checkpoint, ONNX and features go under it (default {DEFAULT_OUT})")
    parser.add_argument("--report-dir", type=Path, default=DEFAULT_REPORT_DIR,
                        help="where sentiment.md/.json/_confusion.png go; 'none' skips evaluation")
    parser.add_argument("--checkpoint", type=Path,
                        help="skip training: export and evaluate this saved checkpoint")
    parser.add_argument("--epochs", type=float, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens,
                        help="word pieces kept per review (title first)")
    parser.add_argument("--freeze-layers", type=int, default=defaults.freeze_layers,
                        help="lowest transformer layers kept frozen (of 6)")
    parser.add_argument("--neighbour-smoothing", type=float,
                        default=defaults.neighbour_smoothing,
                        help="share of each review's star target moved to the neighbouring stars")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    parser.add_argument("--max-minutes", type=float,
                        help="stop training after the first dev evaluation past this time")
    parser.add_argument("--limit", type=int, help="train on the first N training reviews only")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, help="CPU threads for torch and ONNX Runtime")
    parser.add_argument("--product-sentiment", action="store_true",
                        help="also write the product-level sentiment feature (all reviews)")
    parser.add_argument("--prior-weight", type=float, default=10.0,
                        help="product sentiment: reviews' worth of the catalogue-mean prior")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_train_sentiment)


def reviews_path(args: argparse.Namespace) -> Path | None:
    from fusionrank.core.datasets import REVIEWS_FILE, dataset_file

    if args.reviews:
        return Path(args.reviews)
    return dataset_file(REVIEWS_FILE, args.datasets) if args.datasets else None


def run_train_sentiment(args: argparse.Namespace) -> int:
    from fusionrank.training.sentiment.data import load_reviews
    from fusionrank.training.sentiment.model import (
        MANIFEST_FILE,
        SentimentConfig,
        SentimentManifest,
        export_checkpoint,
        train_sentiment,
    )

    started = time.monotonic()
    command = args.command_line
    reviews = load_reviews(reviews_path(args))
    print(reviews.summary(), file=sys.stderr)
    progress = not args.quiet
    if args.checkpoint:
        checkpoint = args.checkpoint
        manifest = SentimentManifest.load(checkpoint / MANIFEST_FILE)
    else:
        config = SentimentConfig(
            model_dir=args.model, max_tokens=args.max_tokens, epochs=args.epochs,
            batch_size=args.batch_size, freeze_layers=args.freeze_layers,
            neighbour_smoothing=args.neighbour_smoothing, max_steps=args.max_steps,
            max_minutes=args.max_minutes, limit=args.limit, seed=args.seed, threads=args.threads)
        result = train_sentiment(reviews, config, args.out / CHECKPOINT_DIR, progress=progress)
        checkpoint, manifest = result.checkpoint, result.manifest
    print(f"checkpoint {checkpoint}: dev macro-F1 {manifest.dev_macro_f1:.4f} "
          f"({manifest.dev_macro_f1_untuned:.4f} by the plain arg-max; temperature "
          f"{manifest.temperature}, decision offsets {manifest.decision_offsets})",
          file=sys.stderr)

    parity_texts = reviews.split("dev").text.tolist()[:PARITY_REVIEWS]
    exported = export_checkpoint(checkpoint, args.out / artefacts.SENTIMENT_EXPORT, parity_texts)
    print(f"ONNX export {args.out / artefacts.SENTIMENT_EXPORT}: parity max |Δp| "
          f"{exported.parity_max_abs_diff:.1e}", file=sys.stderr)

    if str(args.report_dir).lower() != "none":
        _evaluate_and_report(args, reviews, manifest, asdict(exported), command, started,
                             progress)
    if args.product_sentiment:
        from fusionrank.training.sentiment.products import build_product_sentiment

        report = build_product_sentiment(args.out / artefacts.SENTIMENT_EXPORT,
                                         args.out / FEATURES_DIR,
                                         reviews_path(args), args.prior_weight, args.threads,
                                         progress)
        print(report.summary(), file=sys.stderr)
    return 0


def _evaluate_and_report(args, reviews, manifest, export: dict, command: str, started: float,
                         progress: bool) -> None:
    from fusionrank.core.encoding import TextTokenizer
    from fusionrank.training.sentiment.evaluate import (
        evaluate_sentiment,
        token_length_percentiles,
        write_report,
    )

    evaluation = evaluate_sentiment(reviews, args.out / artefacts.SENTIMENT_EXPORT, args.threads,
                                    progress)
    # Untruncated lengths: what a max_tokens choice cuts off.
    tokenizer = TextTokenizer(args.out / artefacts.SENTIMENT_EXPORT / artefacts.TOKENIZER, 100_000)
    lengths = [len(s) for s in tokenizer.token_ids(reviews.split("train").text.tolist())]
    training = {k: v for k, v in asdict(manifest).items() if k != "loss_history"}
    if args.checkpoint:
        training["trained_by"] = (f"an earlier run with the settings below (checkpoint "
                                  f"{args.checkpoint}, reused here with --checkpoint)")
    paths = write_report(args.report_dir, evaluation, training, export, command,
                         time.monotonic() - started, token_length_percentiles(lengths))
    for name, result in (("fine-tuned", evaluation.classifier),
                         ("tf-idf+lr", evaluation.tfidf_logreg)):
        print(f"test {name:<10} macro-F1 {result.macro_f1:.4f}  accuracy {result.accuracy:.4f}",
              file=sys.stderr)
    print(f"report written to {paths['markdown']}", file=sys.stderr)


def add_sentiment(commands: argparse._SubParsersAction) -> None:
    from fusionrank.core.sentiment.contract import MAX_REVIEW_BATCH

    parser = commands.add_parser("sentiment",
                                 help="classify reviews with the served sentiment model")
    parser.add_argument("text", nargs="+", help=f"one or more reviews (up to {MAX_REVIEW_BATCH})")
    add_client_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.set_defaults(run=run_sentiment)


def run_sentiment(args: argparse.Namespace) -> int:
    from fusionrank.client import ModelNotServedError

    try:
        with client_for(args) as client:
            results = client.sentiment(args.text)
    except ModelNotServedError as error:
        print(f"fusionrank sentiment: {not_served_message(error)}", file=sys.stderr)
        return 2
    for result in results:
        if args.json:
            print(json.dumps(result.to_dict(), ensure_ascii=False))
            continue
        p = result.probabilities
        text = result.text if len(result.text) <= 60 else result.text[:57] + "..."
        print(f"{result.label:<8}  neg {p['negative']:.2f}  neu {p['neutral']:.2f}  "
              f"pos {p['positive']:.2f}  {text}")
    return 0


COMMANDS = [add_sentiment, add_train_sentiment]
