"""The `recommend` ensemble: purchase history in, ranked products out.

    recommend = (Inputs(HISTORY, HISTORY_TIMES, K, EXCLUDE_PURCHASED)
                 >> recommend_history >> recommend_ranker).ensemble("recommend", RECOMMEND_OUTPUTS)

HISTORY_TIMES is optional (Triton's `optional: true`, declared in its TensorSpec). Each model's
tensors are the ones its step declares (`steps.py`).

`artefact_dir` is the folder `fusionrank train-recommender` writes (`<out>/serving`): catalogue
embeddings and metadata, product statistics, the ONNX feedback head, fusion weights, config,
and the cold head with its calibration where the folder has them (RecommendRank loads both or
refuses a folder with one), and the encoder that embedded the catalogue where it ships it (both
steps embed the products a live catalogue adds with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fusionrank.core import artefacts
from fusionrank.core.recommend.contract import (
    RECOMMEND_INPUTS,
    RECOMMEND_MODEL,
    RECOMMEND_OUTPUTS,
)
from fusionrank.core.recommend.live import ENCODER_FILES
from fusionrank.model_repository.config import PythonModel
from fusionrank.model_repository.ensemble import Ensemble, Inputs
from fusionrank.model_repository.recommend import steps

HISTORY_FILES = (artefacts.EMBEDDINGS, artefacts.PRODUCTS, artefacts.RECOMMENDER_CONFIG)


@dataclass
class RecommendServing:
    """Copies of each step, and the dynamic batcher's wait (0: histories rarely share a shape,
    and Triton batches only requests of one shape)."""

    history_instances: int = 1
    ranker_instances: int = 1
    max_queue_delay_us: int = 0
    onnx_threads: int = 1


def recommend_ensemble(artefact_dir: str | Path,
                       options: RecommendServing | None = None) -> Ensemble:
    options = options or RecommendServing()
    folder = Path(artefact_dir)
    missing = [f for f in artefacts.RECOMMEND_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks the recommender artefacts {missing}: "
                                "run `fusionrank train-recommender` first")
    # The encoder that embedded the catalogue, where the folder ships it: both steps embed
    # the products a live catalogue adds (core/recommend/live.py).
    encoder = [name for name in ENCODER_FILES if (folder / name).is_file()]
    encode = PythonModel(
        "recommend_history", steps.EncodeHistory,
        artefacts={name: folder / name for name in (*HISTORY_FILES, *encoder)},
        instances=options.history_instances, max_queue_delay_us=options.max_queue_delay_us)
    cold_start = [name for name in (artefacts.COLD_HEAD, artefacts.COLD_START)
                  if (folder / name).is_file()]
    rank = PythonModel(
        "recommend_ranker", steps.RecommendRank,
        artefacts={name: folder / name
                   for name in (*artefacts.RECOMMEND_FILES, *cold_start, *encoder)},
        parameters={"threads": str(options.onnx_threads)},
        instances=options.ranker_instances, max_queue_delay_us=options.max_queue_delay_us)
    pipeline = Inputs(*RECOMMEND_INPUTS) >> encode >> rank
    return pipeline.ensemble(RECOMMEND_MODEL, RECOMMEND_OUTPUTS)
