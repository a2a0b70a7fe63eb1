"""The repository the integration tests serve, built in code: search over a catalogue (fused
with a trained run where there is one), the recommender and the sentiment classifier."""

from __future__ import annotations

from pathlib import Path

from fusionrank.core.catalogue import Catalogue


def build_served_repository(catalogue: Catalogue, model_dir: Path, out: Path, run: Path | None,
                            recommender: Path, sentiment_out: Path,
                            precision: str = "int8") -> Path:
    from fusionrank.app.build import add_ensemble, build_search_repository
    from fusionrank.core import artefacts
    from fusionrank.model_repository.recommend.ensemble import recommend_ensemble
    from fusionrank.model_repository.search.ensemble import ServingOptions
    from fusionrank.model_repository.sentiment.ensemble import SentimentServing, sentiment_ensemble

    options = ServingOptions(onnx_threads=1, max_queue_delay_us=100, precision=precision)
    repository = build_search_repository(catalogue, model_dir, out, options, run_dir=run)
    add_ensemble(repository, recommend_ensemble(recommender), {"artefacts": str(recommender)})
    exported = sentiment_out / artefacts.SENTIMENT_EXPORT
    add_ensemble(repository, sentiment_ensemble(exported, SentimentServing(onnx_threads=1)),
                 {"artefacts": str(exported)})
    return repository
