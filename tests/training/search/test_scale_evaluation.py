"""`fusionrank evaluate --scale`: the run's queries ranked over built repositories whose
catalogue adds generated distractors to the real products, once with exact retrieval and once
with the FAISS index the build makes for large catalogues."""

from __future__ import annotations

import json

import pytest

from benchmarks.generate_catalogue import generate_catalogue
from fusionrank.app.cli import main
from fusionrank.core.catalogue import Catalogue, Product
from fusionrank.core.datasets import homedepot_catalogue


@pytest.mark.slow
def test_each_catalogue_is_ranked_with_its_served_retrieval(trained_run, model_dir, tmp_path,
                                                            capsys):
    from fusionrank.app.build import build_search_repository
    from fusionrank.model_repository.search.ensemble import ServingOptions

    real, _ = homedepot_catalogue(trained_run.data)
    generated = generate_catalogue(real.ids, real.titles, 4 * len(real), seed=13)
    catalogue = Catalogue([Product(i, t) for i, t in zip(generated.ids, generated.titles,
                                                         strict=True)], source="generated")
    cache = tmp_path / "embedding_cache"
    # The index served as layout two (one ranker copy beside the query encoder): evaluate
    # finds each model's files in its own version folder.
    options = {"exact": ServingOptions(onnx_threads=1, retrieval="exact"),
               "ann": ServingOptions(onnx_threads=1, retrieval="ann", layout="two",
                                     ranker_instances=1, ranker_threads=2)}
    repositories = {kind: build_search_repository(
        catalogue, model_dir, tmp_path / kind, options[kind], run_dir=trained_run.run,
        embedding_cache=cache) for kind in ("exact", "ann")}
    manifests = {kind: json.loads((r / "fusionrank.json").read_text())
                 for kind, r in repositories.items()}
    assert manifests["ann"]["retrieval"]["kind"] == "ann"
    assert manifests["exact"]["retrieval"]["kind"] == "exact"
    # The second build embedded nothing: every title was in the cache.
    assert manifests["ann"]["index"]["titles_embedded"] == 0

    assert main(["evaluate", "--run", str(trained_run.run), "--scale",
                 str(repositories["exact"]), str(repositories["ann"]), "--out",
                 str(tmp_path / "report"), "--threads", "1"]) == 0
    report = json.loads((tmp_path / "report" / "scale.json").read_text())
    exact, ann = report["catalogues"]
    assert exact["products"] == ann["products"] == len(catalogue)
    assert exact["retrieval"].startswith("exact") and ann["retrieval"].startswith("FAISS")
    for split in ("dev", "test"):
        e, a = exact["splits"][split], ann["splits"][split]
        # The exact build's 8-bit shortlist, rescored, finds the exact top 100.
        assert e["recall@100 of served retrieval against exact"] >= 0.99
        assert 0.8 <= a["recall@100 of served retrieval against exact"] <= 1.0
        # Same catalogue, same embeddings: what does not depend on the index agrees.
        assert e["bm25"] == a["bm25"] and e["dense, exact"] == a["dense, exact"]
        assert e["fused, exact retrieval"] == a["fused, exact retrieval"]
        assert 0 < a["fused, served"]["ndcg@10"] <= 1
    assert "| fused, served |" in capsys.readouterr().out
