"""Recommend commands: `fusionrank train-recommender` and `fusionrank recommend`.

    fusionrank train-recommender --out runs/recommender --report benchmarks/reports/recommend
    fusionrank recommend --history 85123A,71053 -k 10                       # through the server
    fusionrank recommend --history 85123A,71053@1320000000 --repository build/model_repository
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fusionrank.app.clients import add_client_arguments, client_for
from fusionrank.core.contract import DEFAULT_K, MAX_K


def add_train_recommender(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train-recommender",
        help="train the purchase-history recommender, evaluate it against the baselines on the "
             "last 4 weeks, and write the artefacts the `recommend` ensemble serves")
    parser.add_argument("--out", type=Path, default=Path("runs/recommender"),
                        help="folder for the encoder, index, head and served artefacts")
    parser.add_argument("--transactions", type=Path,
                        help="Online Retail transactions.parquet "
                             "(default: ../shared/datasets/online_retail/transactions.parquet)")
    parser.add_argument("--report", type=Path,
                        help="write PREFIX.md, PREFIX.json and PREFIX.png (e.g. "
                             "benchmarks/reports/recommend)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    parser.add_argument("--serve-latest", action="store_true",
                        help="also write OUT/serving-latest: statistics as of the end of the "
                             "data (for production; OUT/serving is the evaluated artefact)")
    parser.set_defaults(run=run_train_recommender)


def run_train_recommender(args: argparse.Namespace) -> int:
    from fusionrank.training.recommend.evaluate import K, log, run, write_report

    command = args.command_line
    result = run(args.out, args.transactions, epochs=args.epochs, threads=args.threads,
                 serve_latest=args.serve_latest)
    for name, values in result.metrics.items():
        log(f"{name:<32} Recall@{K} {values[f'recall@{K}']:.4f}  NDCG@{K} "
            f"{values[f'ndcg@{K}']:.4f}  coverage {values[f'coverage@{K}']:.3f}")
    log(f"wall time {result.wall_seconds}s; served artefacts in {result.serving_dir}")
    if args.report:
        write_report(result, args.report, command)
        log(f"report written to {args.report.with_suffix('.md')}")
    return 0


def add_recommend(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("recommend", help="recommend products from a purchase history")
    parser.add_argument("--history", default="",
                        help="comma-separated product ids, oldest first; ID@UNIXSECONDS gives a "
                             "purchase time (empty: cold start, the popular products)")
    parser.add_argument("-k", type=int, default=DEFAULT_K, help=f"products to return (1..{MAX_K})")
    parser.add_argument("--exclude-purchased", action="store_true",
                        help="leave out products already in the history")
    add_client_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run_recommend)


def parse_history(text: str) -> list[str | tuple[str, int]]:
    """"85123A,71053@1320000000" → ["85123A", ("71053", 1320000000)]."""
    history: list[str | tuple[str, int]] = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        product_id, _, when = entry.partition("@")
        if not when:
            history.append(product_id)
            continue
        try:
            history.append((product_id, int(when)))
        except ValueError:
            raise ValueError(f"bad purchase time in {entry!r}: expected ID@UNIXSECONDS") from None
    return history


def run_recommend(args: argparse.Namespace) -> int:
    history = parse_history(args.history)
    with client_for(args) as client:
        result = client.recommend(history, args.k, args.exclude_purchased)
    if args.json:
        print(json.dumps({"unknown_ids": result.unknown_ids, "cold_start": result.cold_start,
                          "results": [item.to_dict() for item in result.items]},
                         ensure_ascii=False))
        return 0
    if result.unknown_ids:
        print(f"{result.unknown_ids} history entries not in the catalogue were ignored",
              file=sys.stderr)
    if result.cold_start:
        print("no product of the history is in the catalogue: these are the popular products "
              "(cold start)", file=sys.stderr)
    for rank, item in enumerate(result.items, start=1):
        price = f"  £{item.product.price:.2f}" if item.product.price is not None else ""
        print(f"{rank:>3}. {item.score:7.3f}  {item.product_id:<10} {item.product.title}{price}")
    return 0


COMMANDS = [add_recommend, add_train_recommender]
