"""`fusionrank evaluate --scale REPOSITORY...`: ranking quality as the catalogue grows.

For each built model repository (in the scale report: `fusionrank build --catalogue` of the
generated 45,782-, 250,000- and 1,000,000-product catalogues, benchmarks/scale.py), the run's
dev and test queries are ranked over that repository's whole catalogue with the very files its
`search_steps` serve and the very code that serves them (`SearchRuntime.load` on the version
folder, `served_retrieval` as the Retrieve step calls it, the served query encoder):

    bm25                       BM25 top-100 over every title
    dense, exact               the served query encoder; exact cosine top-100 over every product
    dense, served retrieval    the same through the served retrieval (ANN above the build's
                               threshold, else the exact graph)
    fused, exact retrieval     the fused ranker over the pool built on the exact dense top-100
    fused, served              the fused ranker over the served retrieval's pool: what the
                               server answers

and the served retrieval's recall@100 against exact. Judgements are the run's split; every
product the judgements do not name (every generated distractor) counts as not relevant.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.encoding import MAX_QUERY_TOKENS, OnnxEncoder, TextEncoder, TextTokenizer
from fusionrank.core.product_table import ProductTable
from fusionrank.core.search.retrieval import served_retrieval
from fusionrank.core.search.runtime import DEPTH, CandidatePool, SearchRuntime, dense_candidates
from fusionrank.training.metrics import evaluate_ranking
from fusionrank.training.search.data import Judgements

SPLITS = ("dev", "test")
SEARCH_STEPS = "search_steps"  # layout one's model: its version folder holds every artefact
QUERY_ENCODER, RANKER = "query_encoder", "ranker"  # layout two's models (a large catalogue's)


def log(message: str) -> None:
    print(f"[evaluate --scale] {message}", file=sys.stderr, flush=True)


def version_folder(repository: Path, model: str) -> Path | None:
    """The served (newest) version folder of `model` in the repository, None if none."""
    versions = sorted((p for p in (Path(repository) / model).glob("*") if p.is_dir()
                       and p.name.isdigit()), key=lambda p: int(p.name))
    return versions[-1] if versions else None


def served_folders(repository: Path) -> tuple[Path, Path]:
    """The version folders of the model that encodes the queries and of the one that
    retrieves and ranks: one and the same in layout one, query_encoder and ranker in two."""
    one = version_folder(repository, SEARCH_STEPS)
    if one is not None:
        return one, one
    encoder, ranker = version_folder(repository, QUERY_ENCODER), version_folder(repository, RANKER)
    if encoder is None or ranker is None:
        raise FileNotFoundError(f"{repository} has neither a {SEARCH_STEPS} model nor "
                                f"{QUERY_ENCODER} and {RANKER}: build it with `fusionrank "
                                "build` (layout auto, one or two)")
    return encoder, ranker


def served_qrels(judgements: Judgements, ids: list[str], split: str) -> dict[str, dict[int, float]]:
    """The split's judgements keyed by the served catalogue's rows (by product id)."""
    served_row = {pid: row for row, pid in enumerate(ids)}
    run_ids = judgements.catalogue.ids
    out: dict[str, dict[int, float]] = {}
    for query, products in judgements.qrels(split).items():
        out[query] = {served_row[run_ids[row]]: grade for row, grade in products.items()
                      if run_ids[row] in served_row}
    return out


def recall_against(exact: np.ndarray, served: np.ndarray) -> float:
    """Mean share of each query's exact top rows that the served retrieval also returns."""
    return float(np.mean([len(np.intersect1d(e, s)) / len(e)
                          for e, s in zip(exact, served, strict=True)]))


def evaluate_repository(repository: Path, judgements: Judgements, threads: int | None) -> dict:
    started = time.perf_counter()
    encoder_folder, folder = served_folders(repository)
    table = ProductTable.open(folder / artefacts.PRODUCTS)
    ids = [pid.decode("utf-8") for pid in table.product_ids(np.arange(len(table)))]
    missing = set(judgements.catalogue.ids) - set(ids)
    if missing:
        raise ValueError(f"{repository} serves a catalogue without {len(missing)} of the "
                         "judged products: build it from a catalogue that keeps every one")
    runtime = SearchRuntime.load(folder, threads)
    retrieval = served_retrieval(folder, threads)
    encoder = TextEncoder(TextTokenizer(encoder_folder / artefacts.TOKENIZER, MAX_QUERY_TOKENS),
                          OnnxEncoder(encoder_folder / artefacts.ENCODER, threads), batch_size=64)
    # Exact retrieval over the float32 embeddings, whichever copy of them the ranker serves
    # (core/search/retrieval.py `product_vectors`).
    embeddings = artefacts.load_array(folder / artefacts.EMBEDDINGS, mmap=True)
    log(f"{repository}: {len(ids)} products, retrieval {retrieval.describe()}")
    out: dict = {"repository": str(repository), "products": len(ids),
                 "retrieval": retrieval.describe(), "splits": {}}
    for split in SPLITS:
        queries = judgements.ranked_queries(split)
        vectors = encoder.encode(queries)
        exact = dense_candidates(embeddings, vectors, DEPTH, block=64)
        clock = time.perf_counter()
        served = retrieval.search(vectors, DEPTH)
        served_ms = (time.perf_counter() - clock) * 1e3 / len(queries)
        pools = {"exact": runtime.candidates(queries, vectors, *exact),
                 "served": runtime.candidates(queries, vectors, *served)}
        for pool in pools.values():
            pool.feedback = runtime.feedback(pool, vectors)
        systems = {"bm25": bm25(runtime, pools["exact"]),
                   "dense, exact": exact, "dense, served retrieval": served,
                   "fused, exact retrieval": fused(runtime, pools["exact"]),
                   "fused, served": fused(runtime, pools["served"])}
        judged = served_qrels(judgements, ids, split)
        out["splits"][split] = {
            "queries": len(queries),
            "recall@100 of served retrieval against exact": recall_against(exact[0], served[0]),
            "served retrieval ms a query (one process, whole split at once)": round(served_ms, 3),
            **{name: evaluate_ranking(judged, queries, rows, scores)
               for name, (rows, scores) in systems.items()}}
        log(f"{split}: " + ", ".join(f"{name} {m['ndcg@10']:.4f}"
                                     for name, m in out["splits"][split].items()
                                     if isinstance(m, dict)))
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def bm25(runtime: SearchRuntime, pool: CandidatePool) -> tuple[np.ndarray, np.ndarray]:
    tops = [runtime.lexical.top(terms, DEPTH) for terms in pool.terms]
    return np.stack([rows for rows, _ in tops]), np.stack([scores for _, scores in tops])


def fused(runtime: SearchRuntime, pool: CandidatePool) -> tuple[np.ndarray, np.ndarray]:
    from fusionrank.core.search.runtime import ranked

    return ranked(pool, runtime.weights)


def run_scale_evaluation(run: Path, repositories: list[Path], out: Path,
                         threads: int | None = None, command: str | None = None) -> dict:
    """Every repository's figures (evaluate_repository), in `out`/scale.json and scale.md."""
    import json

    from fusionrank.training.search.data import SplitConfig, load_judgements
    from fusionrank.training.search.pipeline import load_run

    manifest = load_run(run)
    judgements = load_judgements(manifest["data_file"],
                                 SplitConfig(**manifest["config"]["split"]))
    report = {"run": str(run), "data_file": judgements.source, "command": command,
              "catalogues": [evaluate_repository(Path(r), judgements, threads)
                             for r in repositories]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "scale.md").write_text(scale_table(report) + "\n")
    return report


def scale_table(report: dict, split: str = "test") -> str:
    """One row per catalogue and system: NDCG@10, Recall@100, MRR@10 on `split`."""
    lines = [f"{split} split; unjudged products (every generated one) count as not relevant",
             "", "| products | retrieval | system | NDCG@10 | Recall@100 | MRR@10 |",
             "| ---: | --- | --- | ---: | ---: | ---: |"]
    for catalogue in report["catalogues"]:
        figures = catalogue["splits"][split]
        for name, m in figures.items():
            if isinstance(m, dict):
                lines.append(f"| {catalogue['products']:,} | {catalogue['retrieval']} | {name} "
                             f"| {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | {m['mrr@10']:.4f} |")
        lines.append(f"| {catalogue['products']:,} | {catalogue['retrieval']} | recall@100 of "
                     "the served retrieval against exact | | "
                     f"{figures['recall@100 of served retrieval against exact']:.4f} | |")
    return "\n".join(lines)
