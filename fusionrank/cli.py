"""`fusionrank`: one command line, one subcommand per job.

    fusionrank build   --catalogue online_retail --out build
    fusionrank serve   --repository build/model_repository
    fusionrank search  "cordless drill" -k 10
    fusionrank recommend --history 85123A,71053 -k 10
    fusionrank sentiment "Love this dress"
    fusionrank train | evaluate | train-recommender | train-sentiment | export-tensorrt
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from fusionrank.contract import DEFAULT_K, MAX_K
from fusionrank.training.cli import add_evaluate, add_train
from fusionrank.training.recommend_cli import add_recommend, add_train_recommender
from fusionrank.training.sentiment_cli import add_sentiment, add_train_sentiment

DEFAULT_BUILD = Path("build")
DEFAULT_URL = "127.0.0.1:8001"


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def add_build(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "build", help="export the encoder, embed a catalogue and write the Triton model repository")
    parser.add_argument("--catalogue", default="online_retail",
                        help="a catalogue file (.csv/.parquet/.jsonl[.gz]) or a shared dataset: "
                             "online_retail, homedepot (default: online_retail)")
    parser.add_argument("--datasets",
                        help="folder of the shared datasets (default ../shared/datasets)")
    parser.add_argument("--lenient", action="store_true",
                        help="skip bad catalogue rows (each counted, reported) instead of failing")
    parser.add_argument("--run", dest="run_dir", type=Path,  # `run` is the command's function
                        help="a finished `fusionrank train` run to serve (default: the newest "
                             "under runs/; with none, a short default run is trained first)")
    parser.add_argument("--pretrained", action="store_true",
                        help="serve the pretrained encoder alone (no trained run)")
    parser.add_argument("--model", help="with --pretrained: a local Hugging Face encoder folder "
                                        "(default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_BUILD)
    parser.add_argument("--recommender", type=Path, default=Path("runs/recommender"),
                        help="trained recommender (train-recommender --out); trained first "
                             "when absent")
    parser.add_argument("--sentiment", type=Path, default=Path("runs/sentiment"),
                        help="trained review sentiment model (train-sentiment --out); served "
                             "as the sentiment ensemble when present")
    parser.add_argument("--reviews", type=Path,
                        help="reviews file (the shared dataset's columns): adds each product's "
                             "review sentiment to the catalogue, with the sentiment model")
    parser.add_argument("--no-recommend", action="store_true",
                        help="serve search only, without the recommend ensemble")
    parser.add_argument("--encoder-instances", type=int, default=1)
    parser.add_argument("--max-queue-delay-us", type=int, default=200,
                        help="how long the dynamic batcher waits to fill a batch")
    parser.add_argument("--retrieval-instances", type=int, default=1)
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                        help="query encoder precision (int8: ONNX Runtime dynamic quantisation)")
    parser.add_argument("--threads", type=int, default=2,
                        help="ONNX Runtime threads per model copy")
    parser.set_defaults(run=run_build)


def load_named_catalogue(name: str, datasets: str | None, lenient: bool):
    from fusionrank import datasets as shared
    from fusionrank.catalogue import load_catalogue

    adapters = {"online_retail": shared.online_retail_catalogue,
                "homedepot": shared.homedepot_catalogue}
    if name in adapters:
        if datasets:
            shared.datasets_dir(datasets)  # fails early with a clear message
            relative = {"online_retail": shared.ONLINE_RETAIL_FILE,
                        "homedepot": shared.HOMEDEPOT_FILE}[name]
            return adapters[name](Path(datasets) / relative)
        return adapters[name]()
    return load_catalogue(name, lenient=lenient)


def run_build(args: argparse.Namespace) -> int:
    from fusionrank.export.onnx_encoder import bundled_model_path
    from fusionrank.model_repository.build import ServingOptions, build_search_repository

    catalogue, report = load_named_catalogue(args.catalogue, args.datasets, args.lenient)
    print(report.summary(), file=sys.stderr)
    if args.reviews:
        catalogue = with_review_sentiment(catalogue, args.sentiment, args.reviews,
                                          args.out / "artefacts" / "reviews")
    options = ServingOptions(encoder_instances=args.encoder_instances,
                             retrieval_instances=args.retrieval_instances,
                             onnx_threads=args.threads, precision=args.precision,
                             max_queue_delay_us=args.max_queue_delay_us)
    model = Path(args.model) if args.model else bundled_model_path()
    run = None if args.pretrained else (args.run_dir or newest_run() or train_default_run())
    if run is not None:
        print(f"serving the trained run {run}", file=sys.stderr)
    repository = build_search_repository(catalogue, model, args.out, options, run_dir=run)
    if not args.no_recommend:
        add_recommender(repository, args.recommender)
    add_sentiment_model(repository, args.sentiment)
    print(f"model repository written to {repository}", file=sys.stderr)
    return 0


RUNS = Path("runs")
DEFAULT_RUN = RUNS / "relevance"
SHORT_RUN_STEPS = 60


def newest_run() -> Path | None:
    """The most recently finished `fusionrank train` run under runs/."""
    finished = sorted(RUNS.glob("*/run.json"), key=lambda p: p.stat().st_mtime)
    return finished[-1].parent if finished else None


def train_default_run() -> Path:
    from fusionrank.training.cli import main as training_main

    print(f"no trained run under {RUNS}/: training a short default run ({SHORT_RUN_STEPS} "
          f"fine-tuning steps, about 5 minutes on 2 cores) into {DEFAULT_RUN} first; "
          "`fusionrank train` makes the full one", file=sys.stderr)
    if training_main(["train", "--out", str(DEFAULT_RUN), "--max-steps",
                      str(SHORT_RUN_STEPS)]) != 0:
        raise CommandError("the default training run failed")
    return DEFAULT_RUN


def add_sentiment_model(repository: Path, trained: Path) -> None:
    from fusionrank.model_repository.build import add_ensemble
    from fusionrank.model_repository.sentiment import sentiment_ensemble

    exported = trained / "onnx"
    if not exported.is_dir():
        print(f"no trained sentiment model in {trained}: the sentiment ensemble is left out "
              "(`fusionrank train-sentiment` trains one)", file=sys.stderr)
        return
    add_ensemble(repository, sentiment_ensemble(exported), {"artefacts": str(exported.resolve())})


def with_review_sentiment(catalogue, trained: Path, reviews: Path, out: Path):
    """The catalogue with each product's review sentiment (by product id) as a feature."""
    from dataclasses import replace

    from fusionrank.catalogue import Catalogue
    from fusionrank.training.product_sentiment import (
        build_product_sentiment,
        load_product_sentiment,
    )

    if not (trained / "onnx").is_dir():
        raise CommandError(f"--reviews needs a trained sentiment model in {trained}: "
                           "run `fusionrank train-sentiment` first")
    report = build_product_sentiment(trained / "onnx", out, reviews)
    feature = load_product_sentiment(report.path)
    products = [replace(p, review_count=feature.review_count(p.product_id),
                        review_sentiment=feature.score(p.product_id)
                        if feature.review_count(p.product_id) else None)
                for p in catalogue]
    matched = sum(1 for p in products if p.review_count)
    print(f"review sentiment: {matched} of {len(products)} products have reviews in {reviews}",
          file=sys.stderr)
    return Catalogue(products, source=catalogue.source)


def add_recommender(repository: Path, trained: Path) -> None:
    from fusionrank.model_repository.build import add_ensemble
    from fusionrank.model_repository.recommend import recommend_ensemble
    from fusionrank.training.recommend_eval import run as train_recommender

    serving = trained / "serving-latest"  # statistics up to the end of the purchase log
    if not serving.is_dir():
        print(f"no trained recommender in {trained}: training one now (a few minutes; "
              "`fusionrank train-recommender` does this on its own)", file=sys.stderr)
        train_recommender(trained, serve_latest=True)
    add_ensemble(repository, recommend_ensemble(serving), {"artefacts": str(serving.resolve())})


def add_serve(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="run Triton Inference Server on a model repository")
    parser.add_argument("--repository", type=Path, default=DEFAULT_BUILD / "model_repository")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--verbose", action="store_true", help="Triton's verbose log")
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from fusionrank.serve import Ports, TritonServer

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # SIGTERM stops as cleanly as Ctrl-C does
    server = TritonServer(args.repository, Ports(args.grpc_port, args.http_port, args.metrics_port),
                          host=args.host, verbose=args.verbose)
    try:
        server.start()
        print(f"serving {args.repository} — gRPC {server.grpc_url}, HTTP {args.host}:"
              f"{args.http_port}, metrics {args.host}:{args.metrics_port}; Ctrl-C stops",
              file=sys.stderr, flush=True)
        return server.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def add_search(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("search", help="search the served catalogue")
    parser.add_argument("query", nargs="+", help="one or more queries")
    parser.add_argument("-k", type=int, default=DEFAULT_K, help=f"results per query (1..{MAX_K})")
    parser.add_argument("--url", default=DEFAULT_URL, help="Triton gRPC address")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.set_defaults(run=run_search)


def run_search(args: argparse.Namespace) -> int:
    from fusionrank.client import FusionRankClient

    with FusionRankClient(args.url, timeout_s=args.timeout) as client:
        results = client.search_batch(args.query, k=args.k)
    for query, hits in zip(args.query, results, strict=True):
        if args.json:
            print(json.dumps({"query": query, "results": [h.to_dict() for h in hits]},
                             ensure_ascii=False))
            continue
        print(f"\n{query}")
        for rank, hit in enumerate(hits, start=1):
            price = f"  £{hit.product.price:.2f}" if hit.product.price is not None else ""
            print(f"{rank:>3}. {hit.score:6.3f}  {hit.product_id:<12} {hit.product.title}{price}")
    return 0


def add_export_tensorrt(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export-tensorrt", help="build a TensorRT FP16/INT8 engine of the query encoder "
                                "(on the GPU machine that will serve it)")
    parser.add_argument("--onnx", type=Path,
                        default=DEFAULT_BUILD / "artefacts" / "encoder" / "encoder.onnx")
    parser.add_argument("--precision", choices=["fp16", "int8"], default="fp16")
    parser.add_argument("--calibration-queries", type=int, default=2048,
                        help="real Home Depot search terms used to calibrate INT8")
    parser.add_argument("--out", type=Path, help="engine file (default: beside the ONNX file)")
    parser.set_defaults(run=run_export_tensorrt)


def run_export_tensorrt(args: argparse.Namespace) -> int:
    from fusionrank.encoding import MAX_QUERY_TOKENS, TextTokenizer
    from fusionrank.export.tensorrt import ShapeProfile, build_engine, calibration_batches

    profile = ShapeProfile()
    batches = []
    if args.precision == "int8":
        from fusionrank.datasets import read_homedepot

        queries = read_homedepot().search_term.drop_duplicates().head(args.calibration_queries)
        tokenizer = TextTokenizer(args.onnx.parent / "tokenizer.json", MAX_QUERY_TOKENS)
        batches = calibration_batches(queries.tolist(), tokenizer, profile)
    out = args.out or args.onnx.with_suffix(f".{args.precision}.plan")
    engine = build_engine(args.onnx, out, args.precision, profile, batches)
    print(f"TensorRT engine written to {engine}", file=sys.stderr)
    return 0


COMMANDS = [add_build, add_serve, add_search, add_recommend, add_sentiment, add_train,
            add_evaluate, add_train_recommender, add_train_sentiment, add_export_tensorrt]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="fusionrank", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from fusionrank.catalogue import CatalogueError
    from fusionrank.client import FusionRankError

    try:
        return args.run(args)
    except (CommandError, CatalogueError, FusionRankError, FileNotFoundError, ValueError,
            RuntimeError) as error:
        print(f"fusionrank {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
