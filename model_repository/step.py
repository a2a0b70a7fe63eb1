"""What every Python-backend model of the repository shares.

A model's logic is a `Step`: per-request input tensors in, per-request output tensors (or a
`RequestError`) out. A step is a thin adapter over its feature's runtime in `fusionrank.core`;
the tests and the in-process runner call steps directly, and `triton_model` wraps one for
Triton's Python backend, where a dynamically batched `execute` call hands it several requests
at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from fusionrank.core.contract import RequestError

Tensors = dict[str, np.ndarray]


class Step(Protocol):
    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]: ...


class StepFactory(Protocol):
    def __call__(self, folder: Path, parameters: Mapping[str, str]) -> Step: ...


def only_valid(requests: list[Tensors], check) -> tuple[list[int], list[Tensors | RequestError]]:
    """Run `check` on each request; the indices that passed, and a result list pre-filled with
    the errors of those that did not (the rest to be filled by the caller)."""
    results: list[Tensors | RequestError] = [{} for _ in requests]
    valid: list[int] = []
    for i, request in enumerate(requests):
        try:
            check(request)
            valid.append(i)
        except RequestError as error:
            results[i] = error
    return valid, results


def return_freed_memory() -> None:
    """Give the memory freed after a step's load (its temporaries) back to the system, where
    glibc allows it: a model process's resident size is then what it holds."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def split_rows(array: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(array, np.cumsum(sizes)[:-1]) if sizes else []


def config_parameters(model_config: Mapping) -> dict[str, str]:
    return {k: v["string_value"] for k, v in model_config.get("parameters", {}).items()}


def triton_model(factory: StepFactory) -> type:
    """A `TritonPythonModel` class running the step that `factory` builds from the model's
    version folder and config parameters."""

    class TritonPythonModel:
        def initialize(self, args: dict[str, str]) -> None:
            import triton_python_backend_utils as pb_utils

            self._pb = pb_utils
            config = json.loads(args["model_config"])
            self._outputs = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"])
                             for o in config["output"]}
            self._inputs = [i["name"] for i in config["input"]]
            folder = Path(args["model_repository"]) / args["model_version"]
            self._step = factory(folder, config_parameters(config))

        def execute(self, requests: list) -> list:
            pb = self._pb
            tensors = []
            for request in requests:
                inputs = {}
                for name in self._inputs:
                    tensor = pb.get_input_tensor_by_name(request, name)
                    if tensor is not None:
                        inputs[name] = tensor.as_numpy()
                tensors.append(inputs)
            responses = []
            for result in self._step(tensors):
                if isinstance(result, RequestError):
                    error = pb.TritonError(str(result), pb.TritonError.INVALID_ARG)
                    responses.append(pb.InferenceResponse(output_tensors=[], error=error))
                else:
                    responses.append(pb.InferenceResponse(output_tensors=[
                        pb.Tensor(name, np.asarray(value, dtype=self._outputs[name]))
                        for name, value in result.items()]))
            return responses

    TritonPythonModel.step_factory = staticmethod(factory)
    return TritonPythonModel
