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

from fusionrank.contract import DEFAULT_K, SEARCH_MODEL, RequestError
from fusionrank.model_repository.config import VERSION
from fusionrank.model_repository.models.base import Step, Tensors, config_parameters


def read_config(repository: Path, model: str):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    text = (Path(repository) / model / "config.pbtxt").read_text()
    return text_format.Parse(text, mc.ModelConfig())


def load_step(repository: Path, model: str) -> Step:
    """The step a model of the repository runs, built as the server builds it."""
    from google.protobuf import json_format

    config = json_format.MessageToDict(read_config(repository, model),
                                       preserving_proto_field_name=True)
    parameters = config_parameters(config)
    module = importlib.import_module(parameters["module"])
    return module.TritonPythonModel.step_factory(Path(repository) / model / VERSION, parameters)


class SearchPipeline:
    """The `search` ensemble's steps, wired as its config.pbtxt wires them."""

    def __init__(self, repository: str | Path, ensemble: str = SEARCH_MODEL):
        config = read_config(Path(repository), ensemble)
        self.steps = [(load_step(Path(repository), step.model_name), dict(step.input_map),
                       dict(step.output_map)) for step in config.ensemble_scheduling.step]

    def run(self, queries: Sequence[str], k: int = DEFAULT_K) -> Tensors:
        """The search outputs for one request of queries; RequestError on bad input."""
        tensors: Tensors = {
            "QUERY": np.array([q.encode("utf-8") for q in queries], dtype=object).reshape(-1, 1),
            "K": np.full((len(queries), 1), k, dtype=np.int32)}
        for step, input_map, output_map in self.steps:
            (result,) = step([{own: tensors[name] for own, name in input_map.items()}])
            if isinstance(result, RequestError):
                raise result
            tensors |= {output_map[own]: value for own, value in result.items()
                        if own in output_map}
        return tensors

    def search(self, queries: Sequence[str], k: int = DEFAULT_K) -> list[list[tuple[str, float]]]:
        out = self.run(queries, k)
        return [[(pid.decode("utf-8"), float(s)) for pid, s in zip(ids, scores, strict=True)]
                for ids, scores in zip(out["PRODUCT_IDS"], out["SCORES"], strict=True)]

    def products(self, queries: Sequence[str], k: int = DEFAULT_K) -> list[list[dict]]:
        return [[json.loads(p) for p in row] for row in self.run(queries, k)["PRODUCTS"]]
