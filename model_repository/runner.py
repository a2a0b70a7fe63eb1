"""Any ensemble of a built model repository, run in process: its steps built from their version
folders and chained as its `config.pbtxt` wires them, as the server does, without a server.

    search = InProcessEnsemble("build/model_repository", "search")
    outputs = search({"QUERY": ..., "K": ...})   # one request; RequestError on bad input

It reads the same artefacts and runs the same steps as Triton, so it is the reference the
served ensembles are checked and benchmarked against, and how the CLI answers without a server.
A native ONNX model (the GPU repository's) runs its `model.onnx` with ONNX Runtime on the CPU;
a TensorRT engine runs only in Triton on a GPU.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from fusionrank.core.artefacts import check_manifest
from fusionrank.core.contract import RequestError
from fusionrank.core.encoding import onnx_session
from fusionrank.model_repository.config import (
    MODEL_FILES,
    ONNX_RUNTIME,
    STEP_PARAMETER,
    read_config,
    served_version,
)
from fusionrank.model_repository.step import (
    Chain,
    Step,
    Tensors,
    config_parameters,
    load_step_class,
    timed,
)


class OnnxGraph:
    """A native onnxruntime model's graph, run on the CPU: each request's tensors in, the
    config's outputs out."""

    def __init__(self, folder: Path, config: mc.ModelConfig):
        self.session = onnx_session(folder / (config.default_model_filename
                                              or MODEL_FILES[ONNX_RUNTIME]))
        self.outputs = [output.name for output in config.output]

    def __call__(self, requests: list[Tensors]) -> list[Tensors]:
        return [dict(zip(self.outputs, self.session.run(self.outputs, request), strict=True))
                for request in requests]


def step_parameters(config: mc.ModelConfig) -> dict[str, str]:
    """A Python-backend model's parameters, as Triton hands them to its step."""
    return config_parameters(json_format.MessageToDict(config, preserving_proto_field_name=True))


def load_step(repository: str | Path, model: str) -> Step:
    """The step a model of the repository runs, built as the server builds it."""
    message = read_config(repository, model)
    if message.backend == ONNX_RUNTIME or message.platform == "onnxruntime_onnx":
        return OnnxGraph(served_version(repository, model), message)
    if message.backend != "python":
        raise ValueError(f"{model} runs on Triton's {message.platform or message.backend} "
                         "backend, on a GPU: the in-process runner cannot run it")
    parameters = step_parameters(message)
    step = load_step_class(parameters[STEP_PARAMETER])
    folder = served_version(repository, model)
    check_manifest(folder)  # as the server's load checks it
    return step(folder, parameters)


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
        # An output the request's options left out (search's DETAIL) is absent, as served.
        return {name: tensors[name] for name in self.outputs if name in tensors}
