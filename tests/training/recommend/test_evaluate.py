"""The one-run evaluation (`training/recommend_eval.py`) end to end on the synthetic shop, with
the catalogue embedding stubbed (the real run embeds titles with MiniLM)."""

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
    shop.transactions().to_parquet(transactions)
    catalogue = shop.catalogue()
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
                                   "embedding_similarity", "fused_recommender"}
    test_start = result.windows["test"][0].split("..")[0]
    validation_end = result.windows["validation"][0].split("..")[1]
    assert validation_end == test_start  # weights fitted right before, never on, the test
    assert all(w.split("..")[1] <= result.windows["validation"][0].split("..")[0]
               for w in result.windows["head_training"])
    fused = result.metrics["fused_recommender"]
    assert fused["recall@20"] > result.metrics["popularity"]["recall@20"]
    assert result.head["onnx_parity_max_abs_logit_diff"] < 1e-4


def test_the_run_writes_served_artefacts_and_a_report(evaluated, tmp_path):
    from fusionrank.core.artefacts import RECOMMEND_FILES as ARTEFACT_FILES
    from fusionrank.core.recommend.runtime import RecommenderConfig

    out, result = evaluated
    for folder in ("serving", "serving-latest"):
        assert all((out / folder / name).is_file() for name in ARTEFACT_FILES)
    evaluated_at = RecommenderConfig.load(out / "serving" / "recommender.json").reference_time
    latest_at = RecommenderConfig.load(out / "serving-latest" / "recommender.json").reference_time
    assert latest_at - evaluated_at == 28 * 86_400
    recommend_eval.write_report(result, tmp_path / "recommend", "the command")
    assert json.loads((tmp_path / "recommend.json").read_text())["command"] == "the command"
    report = (tmp_path / "recommend.md").read_text()
    assert "the command" in report and "fused_recommender" in report
    assert (tmp_path / "recommend.png").stat().st_size > 0
