"""Train and evaluate the recommender in one run, against the popularity and
"bought before, then popularity" baselines, on a held-out period at the end of the data.

Windows (each WINDOW_DAYS long, history = everything before the window's cut):
    head training: the two windows before validation      (labels: purchases in each window)
    validation:    the window before the test window       (fits the fusion weights only)
    test:          the last WINDOW_DAYS days of the data    (reported, never fitted on)

    fusionrank train-recommender --out runs/recommender --report benchmarks/reports/recommend

The served artefact (`<out>/serving`) is the evaluated one: statistics as of the test cut.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrank.core import artefacts
from fusionrank.core.fusion import FusionWeights, rank
from fusionrank.core.machine import describe_machine
from fusionrank.core.recommend.runtime import (
    FEATURE_NAMES,
    OnnxRecommendHead,
    Recommender,
    RecommenderConfig,
    Shopper,
)
from fusionrank.training.recommend.head import (
    Examples,
    FeedbackMLP,
    TrainingLog,
    train_head,
    window_examples,
    window_shoppers,
)
from fusionrank.training.recommend.purchases import (
    WINDOW_DAYS,
    CleaningReport,
    Window,
    copurchase_matrix,
    last_window,
    load_purchases,
    product_stats,
    returning_targets,
    split,
    unix_seconds,
)

K = 20
CUTOFFS = (5, 10, 20, 50)
SIMILARITY_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # × feedback weight 1
HEAD_WINDOWS = 4
DEFAULT_TRANSACTIONS = "../shared/datasets/online_retail/transactions.parquet"


@dataclass
class Catalogue:
    """The catalogue rows the recommender works on: metadata lines and title embeddings."""

    product_json: list[str]
    embeddings: np.ndarray
    embedded_now: bool = True  # False: the embeddings were reused from an earlier run

    @property
    def product_ids(self) -> list[str]:
        return [json.loads(line)["product_id"] for line in self.product_json]


def embedded_catalogue(out_dir: Path, transactions: Path | None) -> Catalogue:
    """The Online Retail catalogue with MiniLM title embeddings (ONNX Runtime), built once under
    `out_dir/index` and reused while the catalogue is unchanged."""
    from fusionrank.core.datasets import online_retail_catalogue
    from fusionrank.core.model_folders import bundled_model_path
    from fusionrank.export.index import build_index
    from fusionrank.training.encoder import export_model_folder

    catalogue, _ = online_retail_catalogue(transactions)
    index = out_dir / "index"
    lines = [json.dumps(p.to_dict(), ensure_ascii=False) for p in catalogue]
    cached = index / artefacts.PRODUCTS
    reuse = (cached.is_file() and cached.read_text(encoding="utf-8").splitlines() == lines
             and (index / artefacts.EMBEDDINGS).is_file())
    if not reuse:
        encoder = export_model_folder(bundled_model_path(), out_dir / "encoder",
                                      catalogue.titles[:256])
        build_index(catalogue, encoder, index, progress=False)
    return Catalogue(lines, np.load(index / artefacts.EMBEDDINGS), embedded_now=not reuse)


def recommender_at(purchases: pd.DataFrame, cut: pd.Timestamp, catalogue: Catalogue,
                   head: OnnxRecommendHead | None = None,
                   weights: FusionWeights | None = None, **config) -> Recommender:
    """A recommender whose statistics and reference time are those of `cut`."""
    before = purchases[purchases.time < cut]
    stats = product_stats(before, catalogue.product_ids, cut)
    copurchase = copurchase_matrix(before, catalogue.product_ids)
    settings = RecommenderConfig(reference_time=unix_seconds(cut), **config)
    return Recommender(catalogue.embeddings, catalogue.product_json, stats, copurchase, settings,
                       weights or FusionWeights({"feedback": 1.0}), head)


# --- rankings -------------------------------------------------------------------------------

Ranking = dict[str, list[str]]  # customer → product ids, best first


def model_ranking(recommender: Recommender, shoppers: dict[str, Shopper], k: int) -> Ranking:
    ids = recommender.product_ids
    return {c: [ids[r] for r in recommender.recommend(s, k)[0]] for c, s in shoppers.items()}


def popularity_ranking(recommender: Recommender, customers: list[str], k: int) -> Ranking:
    top = [recommender.product_ids[r] for r in recommender.popular[:k]]
    return {c: top for c in customers}


def bought_before_ranking(recommender: Recommender, shoppers: dict[str, Shopper],
                          k: int) -> Ranking:
    """Their own purchases (most often, then most recently bought first), then popularity."""
    out = {}
    for customer, shopper in shoppers.items():
        order = np.lexsort((shopper.rows, shopper.days, -shopper.counts))
        rows = list(shopper.rows[order][:k])
        seen = set(rows)
        rows += [r for r in recommender.popular[:k + len(rows)] if r not in seen][:k - len(rows)]
        out[customer] = [recommender.product_ids[r] for r in rows]
    return out


def similarity_ranking(recommender: Recommender, shoppers: dict[str, Shopper],
                       k: int) -> Ranking:
    """The products nearest the shopper vector: the language-model signal alone."""
    ids = recommender.product_ids
    out = {}
    for customer, shopper in shoppers.items():
        similarity = recommender.embeddings @ shopper.vector
        out[customer] = [ids[r] for r in np.lexsort((np.arange(len(ids)), -similarity))[:k]]
    return out


# --- metrics --------------------------------------------------------------------------------

def metrics(ranking: Ranking, targets: dict[str, set[str]], catalogue_size: int,
            new_products: set[str]) -> dict[str, float]:
    """Recall@k and NDCG@k (ranx, binary relevance), coverage of the catalogue in the top K,
    and the recall of products nobody had bought before the cut."""
    from ranx import Qrels, Run, evaluate

    qrels = Qrels({c: {p: 1 for p in items} for c, items in targets.items()})
    run = Run({c: {p: float(len(ids) - i) for i, p in enumerate(ids)}
               for c, ids in ranking.items() if c in targets})
    names = [f"{m}@{k}" for k in CUTOFFS for m in ("recall", "ndcg")]
    scores = {name: float(value) for name, value in evaluate(qrels, run, names).items()}
    shown = {p for ids in ranking.values() for p in ids[:K]}
    scores[f"coverage@{K}"] = len(shown) / catalogue_size
    new_targets = sum(len(items & new_products) for items in targets.values())
    for k in (K, max(CUTOFFS)):
        hits = sum(len(set(ranking[c][:k]) & items & new_products) for c, items in targets.items())
        scores[f"new_product_recall@{k}"] = hits / new_targets if new_targets else 0.0
    return scores


# --- fitting --------------------------------------------------------------------------------

def fit_fusion_weights(recommender: Recommender, shoppers: dict[str, Shopper],
                       targets: dict[str, set[str]]) -> tuple[FusionWeights, dict[str, float]]:
    """The similarity weight (feedback weight 1) with the best validation Recall@K."""
    from ranx import Qrels, Run, evaluate

    ids = recommender.product_ids
    pools = {c: recommender.candidates(s) for c, s in shoppers.items()}
    qrels = Qrels({c: {p: 1 for p in targets[c]} for c in shoppers})
    results = {}
    for w in SIMILARITY_GRID:
        run = {}
        for customer, pool in pools.items():
            rows, _ = rank(pool.rows[None], [(1.0, pool.feedback[None]),
                                              (w, pool.similarity[None])], K)
            run[customer] = {ids[r]: float(K - i) for i, r in enumerate(rows[0])}
        results[str(w)] = float(evaluate(qrels, Run(run), f"recall@{K}"))
    best = max(SIMILARITY_GRID, key=lambda w: (results[str(w)], -w))
    weights = {"feedback": 1.0} | ({"similarity": best} if best else {})
    provenance = (f"similarity weight chosen from {list(SIMILARITY_GRID)} (feedback weight 1) by "
                  f"Recall@{K} of {len(shoppers)} returning customers on the validation window "
                  "before the test window; never fitted on the test window")
    return FusionWeights(weights, provenance), results


def train_on_windows(purchases: pd.DataFrame, catalogue: Catalogue, windows: list[Window],
                     epochs: int) -> tuple[FeedbackMLP, Examples, TrainingLog]:
    parts = [window_examples(recommender_at(purchases, w.cut, catalogue), purchases, w)
             for w in windows]
    examples = Examples.concat(parts)
    model, log = train_head(examples, catalogue.embeddings, epochs=epochs)
    return model, examples, log


def write_serving(folder: Path, recommender: Recommender, index_dir: Path, head_path: Path) -> None:
    """The artefact folder the `recommend` ensemble serves."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (artefacts.EMBEDDINGS, artefacts.PRODUCTS):
        shutil.copyfile(index_dir / name, folder / name)
    if head_path.resolve() != (folder / artefacts.RECOMMEND_HEAD).resolve():
        shutil.copyfile(head_path, folder / artefacts.RECOMMEND_HEAD)
    recommender.stats.save(folder / artefacts.PRODUCT_STATS)
    np.save(folder / artefacts.COPURCHASE, recommender.copurchase)
    recommender.weights.save(folder / artefacts.FUSION_WEIGHTS)
    recommender.config.save(folder / artefacts.RECOMMENDER_CONFIG)


# --- the run --------------------------------------------------------------------------------

@dataclass
class EvaluationResult:
    cleaning: dict
    windows: dict[str, list[str]]
    customers: dict[str, int | bool]
    head: dict
    fusion: dict
    metrics: dict[str, dict[str, float]]
    wall_seconds: float
    load_average_at_start: float  # the machine is shared: a high load slows everything
    serving_dir: str


def run(out_dir: Path, transactions: Path | None = None, epochs: int = 4,
        threads: int = 1, serve_latest: bool = False) -> EvaluationResult:
    """Everything in the module docstring. `serve_latest` also writes `<out>/serving-latest`:
    the same head and weights with statistics as of the end of the data, for production (the
    evaluated `<out>/serving` stays as of the test cut)."""
    import torch

    from fusionrank.export.recommend.head import export_head

    torch.set_num_threads(threads)
    started = time.perf_counter()
    load = os.getloadavg()[0]
    out_dir = Path(out_dir)
    purchases, cleaning = load_purchases(transactions)
    log(cleaning.summary())
    catalogue = embedded_catalogue(out_dir, transactions)
    test = last_window(purchases)
    validation = test.shifted(WINDOW_DAYS)
    head_windows = [validation.shifted(WINDOW_DAYS * (i + 1)) for i in range(HEAD_WINDOWS)]

    model, examples, training = train_on_windows(purchases, catalogue, head_windows, epochs)
    log(f"head trained on {training.examples} candidates ({training.positives} bought) "
        f"in {training.seconds}s; losses {training.losses}")
    check_rows = np.arange(min(2048, len(examples)))
    exported = export_head(model, out_dir / "head" / artefacts.RECOMMEND_HEAD, (
        examples.features[check_rows], examples.shoppers[examples.shopper[check_rows]],
        catalogue.embeddings[examples.row[check_rows]]))
    head = OnnxRecommendHead(exported.path, threads)

    val_model = recommender_at(purchases, validation.cut, catalogue, head)
    val_before, val_after = split(purchases, validation)
    val_targets = returning_targets(val_before, val_after)
    weights, grid = fit_fusion_weights(
        val_model, window_shoppers(val_model, val_before, sorted(val_targets)), val_targets)
    log(f"fusion weights {weights.weights} (validation Recall@{K} by similarity weight: {grid})")

    model_at_test = recommender_at(purchases, test.cut, catalogue, head, weights)
    before, after = split(purchases, test)
    targets = returning_targets(before, after)
    shoppers = window_shoppers(model_at_test, before, sorted(targets))
    new_products = set(after["product"]) - set(before["product"])
    rankings = {
        "popularity": popularity_ranking(model_at_test, list(shoppers), max(CUTOFFS)),
        "bought_before_then_popularity": bought_before_ranking(model_at_test, shoppers,
                                                               max(CUTOFFS)),
        "embedding_similarity": similarity_ranking(model_at_test, shoppers, max(CUTOFFS)),
        "fused_recommender": model_ranking(model_at_test, shoppers, max(CUTOFFS)),
    }
    n_products = len(catalogue.product_json)
    results = {name: metrics(r, targets, n_products, new_products) for name, r in rankings.items()}
    serving = out_dir / artefacts.RECOMMEND_SERVING
    model_at_test.config.provenance = {
        "transactions": str(transactions or DEFAULT_TRANSACTIONS),
        "statistics_as_of": str(test.cut), "head_training_windows": len(head_windows),
        "weights_fitted_on": f"{validation.cut.date()}..{validation.end.date()}",
        "test_recall_at_20": results["fused_recommender"][f"recall@{K}"]}
    write_serving(serving, model_at_test, out_dir / "index", exported.path)
    if serve_latest:
        latest = recommender_at(purchases, test.end, catalogue, head, weights)
        latest.config.provenance = model_at_test.config.provenance | {
            "statistics_as_of": str(test.end)}
        write_serving(out_dir / artefacts.RECOMMEND_SERVING_LATEST, latest, out_dir / "index",
                      exported.path)
    return EvaluationResult(
        cleaning=asdict(cleaning),
        windows={"head_training": [f"{w.cut.date()}..{w.end.date()}" for w in head_windows],
                 "validation": [f"{validation.cut.date()}..{validation.end.date()}"],
                 "test": [f"{test.cut.date()}..{test.end.date()}"]},
        customers={"test_returning": len(targets), "validation_returning": len(val_targets),
                   "catalogue_products": n_products,
                   "catalogue_embedded_now": catalogue.embedded_now,
                   "test_targets_new_products": sum(len(t & new_products)
                                                    for t in targets.values())},
        head={"features": list(FEATURE_NAMES), **asdict(training),
              "onnx_parity_max_abs_logit_diff": exported.max_abs_diff,
              "onnx_parity_rows": exported.rows_checked},
        fusion={"weights": weights.weights, "validation_recall_by_similarity_weight": grid},
        metrics=results, wall_seconds=round(time.perf_counter() - started, 1),
        load_average_at_start=round(load, 2),
        serving_dir=str(serving))


def log(message: str) -> None:
    print(f"[recommend] {message}", file=sys.stderr, flush=True)


# --- the report -----------------------------------------------------------------------------

def write_report(result: EvaluationResult, prefix: Path, command: str) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    payload = asdict(result) | {"command": command, "machine": describe_machine()}
    prefix.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(result, prefix.with_suffix(".png"))
    prefix.with_suffix(".md").write_text(report_markdown(result, prefix, command))


def plot(result: EvaluationResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, values in result.metrics.items():
        for axis, metric in zip(axes, ("recall", "ndcg"), strict=True):
            axis.plot(CUTOFFS, [values[f"{metric}@{k}"] for k in CUTOFFS], marker="o", label=name)
    for axis, metric in zip(axes, ("Recall@k", "NDCG@k"), strict=True):
        axis.set_xlabel("k")
        axis.set_title(f"{metric}, test window {result.windows['test'][0]}")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_markdown(result: EvaluationResult, prefix: Path, command: str) -> str:
    m = result.metrics
    base = m["bought_before_then_popularity"][f"recall@{K}"]
    ours = m["fused_recommender"][f"recall@{K}"]
    table = ["| ranking | Recall@20 | NDCG@20 | Recall@10 | Recall@50 | coverage@20 "
             "| new-product recall@20 / @50 |", "| --- | --- | --- | --- | --- | --- | --- |"]
    table += [f"| {name} | {v['recall@20']:.4f} | {v['ndcg@20']:.4f} | {v['recall@10']:.4f} | "
              f"{v['recall@50']:.4f} | {v['coverage@20']:.3f} | "
              f"{v['new_product_recall@20']:.3f} / {v['new_product_recall@50']:.3f} |"
              for name, v in m.items()]
    c, h, w = result.cleaning, result.head, result.windows
    embedding = ("encoder export and catalogue embedding" if result.customers[
        "catalogue_embedded_now"] else "catalogue embeddings reused from an earlier run")
    grid = ", ".join(f"{k}: {v:.4f}"
                     for k, v in result.fusion["validation_recall_by_similarity_weight"].items())
    lines = [
        "# Recommendation from purchase history — Online Retail",
        "",
        f"Command (from the repository root): `{command}`",
        "",
        f"Machine: {describe_machine()}; no GPU; shared with other jobs (1-minute load average "
        f"{result.load_average_at_start} at the start). Wall time of the whole run (cleaning, "
        f"{embedding}, head training, ONNX export, weight fitting, evaluation): "
        f"**{result.wall_seconds} s**.",
        "",
        "## Result",
        "",
        f"Test window {w['test'][0]} (end exclusive): the last {WINDOW_DAYS} days of the data "
        "here, the dataset's own held-out weeks start the next day. "
        f"{result.customers['test_returning']} returning customers (bought before the cut and "
        "in the window), each judged on the distinct products they bought in the window. Recall "
        "and NDCG from `ranx`, binary relevance. Coverage: share of the "
        f"{result.customers['catalogue_products']} catalogue products shown in anyone's top 20. "
        "New-product recall: recall of the "
        f"{result.customers['test_targets_new_products']} (customer, product) targets that "
        "nobody had bought before the cut.",
        "",
        *table,
        "",
        f"Fused recommender vs \"bought before, then popularity\": Recall@20 {ours:.4f} vs "
        f"{base:.4f}, **{(ours / base - 1) * 100:+.1f} %** relative (target: +10 %); NDCG@20 "
        f"{m['fused_recommender']['ndcg@20']:.4f} vs "
        f"{m['bought_before_then_popularity']['ndcg@20']:.4f}.",
        "",
        f"![Recall and NDCG at k]({prefix.with_suffix('.png').name})",
        "",
        "## Method",
        "",
        f"- Cleaning ({c['rows_read']} invoice lines → {c['purchases']} purchases; rules in "
        f"`training/recommend/purchases.py`): dropped {c['cancellations']} cancellations, "
        f"{c['returns']} returns (quantity ≤ 0), {c['non_products']} non-product lines "
        f"(postage, fees, manual adjustments), {c['guest_orders']} guest-order lines, "
        f"{c['bad_prices']} lines priced ≤ 0, and merged {c['duplicate_lines']} repeated lines "
        "of one product on one invoice.",
        f"- Time split, never random: head trained on the windows {', '.join(w['head_training'])}"
        f"; fusion weights fitted on {w['validation'][0]}; test {w['test'][0]}. Each window's "
        "features use only purchases before its cut.",
        "- Shopper = recency-weighted mean (half-life 30 days) of the all-MiniLM-L6-v2 title "
        "embeddings (ONNX Runtime) of the products they bought. Candidates = their previous "
        "purchases + the 100 most popular products (last 4 weeks) + the 100 embedding-nearest "
        "products + the 100 products most co-purchased with theirs (item-item cosine over "
        "customers, before the cut).",
        "- Feedback head: MLP over the standardised behavioural features "
        f"({', '.join(h['features'])}) and shopper ⊙ product embedding → 64 → 64 → 1, "
        "trained with a listwise loss (softmax "
        "over each shopper's candidate pool, −log-likelihood of what they bought) on "
        f"{h['examples']} candidates ({h['positives']} bought), {h['epochs']} epochs in "
        f"{h['seconds']} s on 1 thread. ONNX export parity: max |Δlogit| "
        f"{h['onnx_parity_max_abs_logit_diff']:.1e} over {h['onnx_parity_rows']} rows.",
        "- Fusion S = Σ wᵢ·signalᵢ (`fusionrank.core.fusion.rank`), weights "
        f"{result.fusion['weights']}, chosen by validation Recall@20 over similarity weights "
        f"(feedback weight 1): {grid}. A weight of 0 means the similarity adds nothing beyond "
        "its use as a head feature.",
        "- The evaluator ranks through `fusionrank.core.recommend.runtime.Recommender.recommend`, "
        "the code "
        f"the served `recommend` ensemble runs; its artefacts are in `{result.serving_dir}`.",
        "",
        "## Reading the numbers",
        "",
        "- The issue quotes ≈0.31 (bought before) and ≈0.14 (popularity) Recall@20 on the "
        "dataset's own held-out weeks (mid-November to December, the Christmas peak). This "
        "window ends earlier, and plain recall (hits / all of a customer's distinct products, a "
        "median of about 20) puts the same baselines lower here; what is compared is the "
        "relative gain within one window.",
        "- Products nobody had bought before the cut can enter the candidate pool through the "
        "embedding neighbours (the similarity-only ranking finds "
        f"{m['embedding_similarity']['new_product_recall@20']:.1%} of them in its top 20), but "
        "the fused ranking puts only "
        f"{m['fused_recommender']['new_product_recall@50']:.1%} of them in a top 50: they are a "
        f"small share of the targets ({result.customers['test_targets_new_products']}), and the "
        "head, trained on windows where unsold products were rarely bought, ranks them low. "
        "Raising them would need a target that values novelty, not only Recall@20.",
        "",
    ]
    return "\n".join(lines)


__all__ = ["CleaningReport", "EvaluationResult", "run"]
