"""Record what a running server answers for fixed real inputs, and compare two recordings.

    python scripts/served_rankings.py record --url 127.0.0.1:8001 --out before.json
    python scripts/served_rankings.py compare before.json after.json

The inputs are picked from the shared datasets by a stable hash, so every run asks the same:
200 distinct Home Depot search terms (search, k = 10), the histories of 100 Online Retail
customers (recommend, k = 10, purchased items kept) and 100 clothing reviews (sentiment).
It talks to the server through raw `tritonclient` gRPC and the wire contract only, so a
refactoring of the code behind the server cannot change what it measures. `compare` exits 1
and names the first differences when any product id, score or probability differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
QUERIES, SHOPPERS, REVIEWS, K = 200, 100, 100, 10
HISTORY_LENGTH = 50  # each shopper's most recent purchases


def stable_pick(values: list[str], n: int, salt: str) -> list[str]:
    return sorted(values, key=lambda v: hashlib.sha256(f"{salt}:{v}".encode()).hexdigest())[:n]


def search_queries(datasets: Path) -> list[str]:
    frame = pd.read_csv(datasets / "homedepot" / "relevance.csv.gz", usecols=["search_term"])
    return stable_pick(sorted(frame.search_term.str.strip().unique()), QUERIES, "search")


def histories(datasets: Path) -> list[tuple[list[str], list[int]]]:
    frame = pd.read_parquet(datasets / "online_retail" / "transactions.parquet",
                            columns=["InvoiceNo", "StockCode", "InvoiceDate", "Quantity",
                                     "CustomerID"]).dropna(subset=["CustomerID"])
    frame = frame[(frame.Quantity > 0) & ~frame.InvoiceNo.astype(str).str.startswith("C")]
    customers = stable_pick(sorted({str(int(c)) for c in frame.CustomerID}), SHOPPERS, "recommend")
    frame = frame.assign(customer=frame.CustomerID.astype(int).astype(str))
    frame = frame[frame.customer.isin(customers)].sort_values(["InvoiceDate", "StockCode"])
    out = []
    for customer in customers:
        rows = frame[frame.customer == customer].tail(HISTORY_LENGTH)
        times = (pd.to_datetime(rows.InvoiceDate).astype("int64") // 10**9).tolist()
        out.append(([str(s) for s in rows.StockCode], [int(t) for t in times]))
    return out


def reviews(datasets: Path) -> list[str]:
    frame = pd.read_csv(datasets / "reviews" / "womens_clothing_reviews.csv.gz",
                        usecols=["review_id", "Review Text"]).dropna()
    texts = dict(zip(frame.review_id.astype(str), frame["Review Text"].str.strip(), strict=True))
    return [texts[i] for i in stable_pick(sorted(texts), REVIEWS, "sentiment")]


FEATURES = ("search", "recommend", "sentiment")


def record(url: str, datasets: Path, features: tuple[str, ...] = FEATURES) -> dict:
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(url)

    def infer(model: str, arrays: dict[str, tuple[np.ndarray, str]], outputs: list[str]):
        inputs = []
        for name, (array, dtype) in arrays.items():
            tensor = grpc.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer(model, inputs,
                              outputs=[grpc.InferRequestedOutput(o) for o in outputs])
        return [result.as_numpy(o) for o in outputs]

    recorded: dict = {feature: [] for feature in features}
    try:
        for query in search_queries(datasets) if "search" in features else []:
            ids, scores = infer("search", {
                "QUERY": (np.array([[query.encode()]], dtype=object), "BYTES"),
                "K": (np.array([[K]], dtype=np.int32), "INT32")}, ["PRODUCT_IDS", "SCORES"])
            recorded["search"].append({"query": query, "ids": [i.decode() for i in ids[0]],
                                       "scores": [float(s) for s in scores[0]]})
        for history, times in histories(datasets) if "recommend" in features else []:
            ids, scores = infer("recommend", {
                "HISTORY": (np.array([[h.encode() for h in history]], dtype=object), "BYTES"),
                "HISTORY_TIMES": (np.array([times], dtype=np.int64), "INT64"),
                "K": (np.array([[K]], dtype=np.int32), "INT32"),
                "EXCLUDE_PURCHASED": (np.array([[0]], dtype=np.int32), "INT32")},
                ["PRODUCT_IDS", "SCORES"])
            recorded["recommend"].append({"history": history,
                                          "ids": [i.decode() for i in ids[0]],
                                          "scores": [float(s) for s in scores[0]]})
        for text in reviews(datasets) if "sentiment" in features else []:
            (probabilities,) = infer("sentiment", {
                "TEXT": (np.array([[text.encode()]], dtype=object), "BYTES")}, ["PROBABILITIES"])
            recorded["sentiment"].append({"text": text,
                                          "probabilities": [float(p) for p in probabilities[0]]})
    finally:
        client.close()
    return recorded


def differences(before: dict, after: dict) -> list[str]:
    found = []
    for feature in FEATURES:
        if feature not in before and feature not in after:
            continue
        if len(before.get(feature, [])) != len(after.get(feature, [])):
            found.append(f"{feature}: {len(before.get(feature, []))} vs "
                         f"{len(after.get(feature, []))} answers")
            continue
        for i, (b, a) in enumerate(zip(before[feature], after[feature], strict=True)):
            if b != a:
                found.append(f"{feature}[{i}]: {json.dumps(b)[:200]} != {json.dumps(a)[:200]}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="ask a running server, write the answers")
    rec.add_argument("--url", default="127.0.0.1:8001")
    rec.add_argument("--datasets", type=Path, default=DATASETS)
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--features", nargs="+", choices=FEATURES, default=list(FEATURES),
                     help="what to ask (a search-only repository: --features search)")
    cmp = commands.add_parser("compare", help="exit 1 unless two recordings are identical")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "record":
        answers = record(args.url, args.datasets, tuple(args.features))
        args.out.write_text(json.dumps(answers, indent=1) + "\n")
        print(f"{args.out}: " + ", ".join(f"{len(v)} {k}" for k, v in answers.items()))
        return 0
    found = differences(*(json.loads(p.read_text()) for p in (args.before, args.after)))
    for line in found[:20]:
        print(line)
    counts = {k: len(v) for k, v in json.loads(args.before.read_text()).items()}
    print(f"{len(found)} differences over {counts}" if found
          else f"identical: {counts} (ids, scores and probabilities, bit for bit)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
