"""Any ensemble of a built model repository, run in process: its steps built from their version
folders and chained as its `config.pbtxt` wires them, as the server does, without a server.

    search = InProcessEnsemble("build/model_repository", "search")
    outputs = search({"QUERY": ..., "K": ...})   # one request; RequestError on bad input

It reads the same artefacts and runs the same steps as Triton, so it is the reference the
served ensembles are checked and benchmarked against, and how the CLI answers without a server.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from fusionrank.core.contract import RequestError
from fusionrank.model_repository.config import STEP_PARAMETER, served_version
from fusionrank.model_repository.step import (
    Chain,
    Step,
    Tensors,
    config_parameters,
    load_step_class,
    timed,
)


def read_config(repository: str | Path, model: str) -> mc.ModelConfig:
    path = Path(repository) / model / "config.pbtxt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {repository} a model repository built "
                                f"with the {model} model?")
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def load_step(repository: str | Path, model: str) -> Step:
    """The step a model of the repository runs, built as the server builds it."""
    config = json_format.MessageToDict(read_config(repository, model),
                                       preserving_proto_field_name=True)
    parameters = config_parameters(config)
    step = load_step_class(parameters[STEP_PARAMETER])
    return step(served_version(repository, model), parameters)


class InProcessEnsemble:
    """An ensemble's steps, wired as its config wires them."""

    def __init__(self, repository: str | Path, name: str):
        config = read_config(repository, name)
        if config.platform != "ensemble":
            raise ValueError(f"{name} in {repository} is not an ensemble")
        self.name = name
        self.outputs = [output.name for output in config.output]
        self.steps = [(load_step(repository, step.model_name), dict(step.input_map),
                       dict(step.output_map)) for step in config.ensemble_scheduling.step]

    def __call__(self, inputs: Tensors, timings: dict[str, float] | None = None) -> Tensors:
        """The ensemble's outputs for one request; a RequestError for bad input, as the server
        answers INVALID_ARGUMENT. `timings`, where given, gathers the seconds each step took
        (the steps of a merged model each on their own), by class name."""
        tensors = dict(inputs)
        for step, input_map, output_map in self.steps:
            request = [{own: tensors[name] for own, name in input_map.items() if name in tensors}]
            if isinstance(step, Chain):
                (result,) = step(request, timings)
            else:
                with timed(timings, type(step).__name__):
                    (result,) = step(request)
            if isinstance(result, RequestError):
                raise result
            tensors |= {output_map[own]: value for own, value in result.items()
                        if own in output_map}
        return {name: tensors[name] for name in self.outputs}
