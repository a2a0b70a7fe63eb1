"""`fusionrank train-recommender` and `fusionrank recommend` (registered by fusionrank/cli.py).

    fusionrank train-recommender --out runs/recommender --report benchmarks/reports/recommend
    fusionrank recommend --history 85123A,71053 -k 10                      # through the server
    fusionrank recommend --history 85123A,71053@1320000000 --artefacts runs/recommender/serving
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fusionrank.contract import DEFAULT_K, MAX_K

DEFAULT_URL = "127.0.0.1:8001"


def add_train_recommender(commands: argparse._SubParsersAction) -> None:
    from fusionrank.training.recommend_eval import add_arguments

    parser = commands.add_parser(
        "train-recommender",
        help="train the purchase-history recommender, evaluate it against the baselines on the "
             "last 4 weeks, and write the artefacts the `recommend` ensemble serves")
    add_arguments(parser)
    parser.set_defaults(run=run_train_recommender)


def run_train_recommender(args: argparse.Namespace) -> int:
    from fusionrank.training.recommend_eval import run_from_args

    return run_from_args(args, "fusionrank " + " ".join(sys.argv[1:]))


def add_recommend(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("recommend", help="recommend products from a purchase history")
    parser.add_argument("--history", default="",
                        help="comma-separated product ids, oldest first; ID@UNIXSECONDS gives a "
                             "purchase time (empty: cold start, the popular products)")
    parser.add_argument("-k", type=int, default=DEFAULT_K, help=f"products to return (1..{MAX_K})")
    parser.add_argument("--exclude-purchased", action="store_true",
                        help="leave out products already in the history")
    parser.add_argument("--url", default=DEFAULT_URL, help="Triton gRPC address")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds")
    parser.add_argument("--artefacts", type=Path,
                        help="rank in this process from a train-recommender serving folder "
                             "instead of asking the server")
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
    if args.artefacts:
        result = recommend_in_process(args.artefacts, history, args.k, args.exclude_purchased)
    else:
        from fusionrank.client import FusionRankClient

        with FusionRankClient(args.url, timeout_s=args.timeout) as client:
            result = client.recommend(history, args.k, args.exclude_purchased)
    if args.json:
        print(json.dumps({"unknown_ids": result.unknown_ids,
                          "results": [item.to_dict() for item in result.items]},
                         ensure_ascii=False))
        return 0
    if result.unknown_ids:
        print(f"{result.unknown_ids} history entries not in the catalogue were ignored",
              file=sys.stderr)
    for rank, item in enumerate(result.items, start=1):
        price = f"  £{item.product.price:.2f}" if item.product.price is not None else ""
        print(f"{rank:>3}. {item.score:7.3f}  {item.product_id:<10} {item.product.title}{price}")
    return 0


def recommend_in_process(folder: Path, history: list, k: int, exclude_purchased: bool):
    """The served steps, called directly (no server): the same code and artefacts."""
    import numpy as np

    from fusionrank.catalogue import Product
    from fusionrank.client.recommend import Recommendations, RecommendedProduct, history_tensors
    from fusionrank.contract import check_k
    from fusionrank.model_repository.models.history import EncodeHistory
    from fusionrank.model_repository.models.recommend_ranker import RecommendRank

    check_k([k])
    ids, times = history_tensors(history)
    shopper = only_result(EncodeHistory(folder, {})([{"HISTORY": ids, "HISTORY_TIMES": times}]))
    request = shopper | {"K": np.array([[k]], np.int32),
                         "EXCLUDE_PURCHASED": np.array([[int(exclude_purchased)]], np.int32)}
    ranked = only_result(RecommendRank(folder, {})([request]))
    items = [RecommendedProduct(pid.decode(), float(score), Product(**json.loads(meta)))
             for pid, score, meta in zip(ranked["PRODUCT_IDS"][0], ranked["SCORES"][0],
                                         ranked["PRODUCTS"][0], strict=True) if pid]
    return Recommendations(items, int(shopper["UNKNOWN_IDS"][0, 0]))


def only_result(results: list):
    """A step's answer to one request; its RequestError (a ValueError) is raised."""
    (result,) = results
    if isinstance(result, Exception):
        raise result
    return result
