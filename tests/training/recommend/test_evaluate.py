"""The one-run evaluation (`training/recommend/evaluate.py`) end to end on the synthetic shop
with launches, the catalogue embedding stubbed (the real run embeds titles with MiniLM)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusionrank.training.recommend import evaluate as recommend_eval
from tests.support import shop

pytestmark = pytest.mark.slow  # trains the recommender's head


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("recommender")
    transactions = out / "transactions.parquet"
    shop.transactions(launches=True).to_parquet(transactions)
    catalogue = shop.catalogue(launches=True)
    index = out / "index"
    index.mkdir()
    np.save(index / "embeddings.npy", catalogue.embeddings)
    (index / "products.jsonl").write_text("\n".join(catalogue.product_json) + "\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recommend_eval, "embedded_catalogue", lambda out_dir, path: catalogue)
        result = recommend_eval.run(out, transactions, epochs=2, serve_latest=True)
    return out, result


def test_the_run_evaluates_every_ranking_on_the_test_window_only(evaluated):
    _, result = evaluated
    assert set(result.metrics) == {"popularity", "bought_before_then_popularity",
                                   "embedding_similarity", "fused_without_cold_start",
                                   "fused_calibrated_cold_start", "fused_recommender"}
    test_start = result.windows["test"][0].split("..")[0]
    validation_end = result.windows["validation"][0].split("..")[1]
    assert validation_end == test_start  # weights fitted right before, never on, the test
    assert all(w.split("..")[1] <= result.windows["validation"][0].split("..")[0]
               for w in result.windows["head_training"])
    fused = result.metrics["fused_recommender"]
    assert fused["recall@20"] > result.metrics["popularity"]["recall@20"]
    assert result.head["onnx_parity_max_abs_logit_diff"] < 1e-4
    assert result.cold_start["onnx_parity_max_abs_logit_diff"] < 1e-4
    assert "validation window" in result.cold_start["fit"]["provenance"]


def test_cold_start_shows_the_launches_the_warm_head_leaves_out(evaluated):
    """The shop's launches sell to their theme's customers at once: the warm head, which knows
    them only by their (absent) sales, misses some in its top 20; the calibrated cold path,
    which reads their text, finds more, and loses nothing of the overall recall doing so."""
    _, result = evaluated
    warm, served = (result.metrics[name] for name in ("fused_without_cold_start",
                                                      "fused_recommender"))
    assert result.customers["test_targets_new_products"] > 0
    assert served["new_product_recall@20"] > warm["new_product_recall@20"]
    assert served["new_product_slots@20"] > 0
    assert served["recall@20"] >= warm["recall@20"]
    for part in ("few_purchases", "new_products", "rare_products"):
        assert f"slice/{part}/recall@20" in served and f"slice/{part}/customers" in served
    deltas = [row["delta"] for row in result.cold_start["validation_offset_sweep"]]
    assert 0.0 in deltas and result.cold_start["exposure_delta"] in deltas
    assert deltas == sorted(deltas)


def test_the_run_writes_served_artefacts_and_a_report(evaluated, tmp_path):
    from fusionrank.core.artefacts import RECOMMEND_FILES as ARTEFACT_FILES
    from fusionrank.core.recommend.runtime import RecommenderConfig

    out, result = evaluated
    for folder in ("serving", "serving-latest"):
        assert all((out / folder / name).is_file() for name in ARTEFACT_FILES)
        assert (out / folder / "cold_head.onnx").is_file()
        assert (out / folder / "cold_start.json").is_file()
    evaluated_at = RecommenderConfig.load(out / "serving" / "recommender.json").reference_time
    latest_at = RecommenderConfig.load(out / "serving-latest" / "recommender.json").reference_time
    assert latest_at - evaluated_at == 28 * 86_400
    recommend_eval.write_report(result, tmp_path / "recommend", "the command")
    assert json.loads((tmp_path / "recommend.json").read_text())["command"] == "the command"
    report = (tmp_path / "recommend.md").read_text()
    assert "the command" in report and "fused_recommender" in report
    assert "new-product recall@20" in report and "Cold start" in report
    assert (tmp_path / "recommend.png").stat().st_size > 0
