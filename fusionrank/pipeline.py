"""The search pipeline in-process: the model repository's own steps, chained without a server.

It reads the same artefacts and runs the same code as the served `search` ensemble, so it is
the reference the server is checked and benchmarked against.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fusionrank.contract import DEFAULT_K, RequestError
from fusionrank.model_repository.config import VERSION
from fusionrank.model_repository.models.base import Step, Tensors, config_parameters


def load_step(repository: Path, model: str) -> Step:
    """The step a model of the repository runs, built as the server builds it."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2 as mc

    folder = Path(repository) / model
    config = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
    as_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
    parameters = config_parameters(as_json)
    module = importlib.import_module(parameters["module"])
    return module.TritonPythonModel.step_factory(folder / VERSION, parameters)


class SearchPipeline:
    STEPS = ("tokenizer", "query_encoder", "retrieval", "ranker")

    def __init__(self, repository: str | Path):
        self.steps = [load_step(Path(repository), name) for name in self.STEPS]

    def run(self, queries: Sequence[str], k: int = DEFAULT_K) -> Tensors:
        """The search outputs for one request of queries; RequestError on bad input."""
        tensors: Tensors = {
            "QUERY": np.array([q.encode("utf-8") for q in queries], dtype=object).reshape(-1, 1),
            "K": np.full((len(queries), 1), k, dtype=np.int32)}
        for step in self.steps:
            (result,) = step([tensors])
            if isinstance(result, RequestError):
                raise result
            tensors |= result
        return tensors

    def search(self, queries: Sequence[str], k: int = DEFAULT_K) -> list[list[tuple[str, float]]]:
        out = self.run(queries, k)
        return [[(pid.decode("utf-8"), float(s)) for pid, s in zip(ids, scores, strict=True)]
                for ids, scores in zip(out["PRODUCT_IDS"], out["SCORES"], strict=True)]

    def products(self, queries: Sequence[str], k: int = DEFAULT_K) -> list[list[dict]]:
        return [[json.loads(p) for p in row] for row in self.run(queries, k)["PRODUCTS"]]
