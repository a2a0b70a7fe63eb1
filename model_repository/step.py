"""What every Python-backend model of the repository shares.

A model's logic is a `Step`: per-request input tensors in, per-request output tensors (or a
`RequestError`) out. A step is a thin adapter over its feature's runtime in `fusionrank.core`;
the tests and the in-process runner call steps directly, and `triton_model` wraps one for
Triton's Python backend, where a dynamically batched `execute` call hands it several requests
at once.

Each step class declares the tensors it reads and answers, its `CONTRACT` (a `StepContract`), as
an operator of NVIDIA Merlin Systems declares its input and output schema: `config.PythonModel`
declares them to Triton from there, the ensemble wires the steps by them, and the step indexes
its tensors by the declared specs (`request[EMBEDDING.name]`).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from fusionrank.core.artefacts import check_manifest
from fusionrank.core.contract import RequestError, TensorSpec

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class StepContract:
    """The tensors a step reads (`inputs`) and answers (`outputs`), each by name, dtype and
    dims (without the batch dimension). An optional input may be absent from a request; an
    optional output may be absent from an answer (search's Rank leaves out what the request's
    DETAIL did not ask for)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            names = [spec.name for spec in specs]
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                raise ValueError(f"the {kind}(s) {twice} are declared twice")


def declared_contract(step: type) -> StepContract:
    """The contract a step class declares (its `CONTRACT` attribute)."""
    contract = getattr(step, "CONTRACT", None)
    if not isinstance(contract, StepContract):
        raise TypeError(f"the step {step.__qualname__} declares no CONTRACT: a step class "
                        "declares the tensors it reads and answers as a StepContract")
    return contract


class Step(Protocol):
    """A step class also declares `CONTRACT: StepContract` (`Chain` excepted: its tensors are
    those of the steps it chains, which `config.merged` computes)."""

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


def return_freed_memory(after_load: bool = True) -> None:
    """Give the memory freed after a step's load (its temporaries) back to the system, where
    glibc allows it: a model process's resident size is then what it holds.

    Garbage cycles are collected first. After a load (`after_load`) what survives is then
    frozen (gc.freeze): the loaded artefacts' objects (vocabularies, dicts of hundreds of
    thousands of entries) are never traversed again by a full collection, which otherwise
    cost a search process a tenth of a second at each new state of a live catalogue."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    if after_load:
        gc.freeze()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def split_rows(array: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(array, np.cumsum(sizes)[:-1]) if sizes else []


def config_parameters(model_config: Mapping) -> dict[str, str]:
    return {k: v["string_value"] for k, v in model_config.get("parameters", {}).items()}


CHAIN_PARAMETER, CHAIN_OUTPUTS = "chain", "chain_outputs"  # a merged model's parameters


@contextmanager
def timed(timings: dict[str, float] | None, name: str) -> Iterator[None]:
    """Adds the seconds the block took to timings[name] (nothing when timings is None)."""
    start = time.perf_counter()
    yield
    if timings is not None:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def load_step_class(path: str) -> StepFactory:
    """The step class a "module:Class" path names."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class Chain:
    """Several consecutive steps in one model, so a request crosses one process boundary
    instead of one per step. The `chain` parameter lists them (JSON: [{"step": "module:Class",
    "names": {own: ensemble name}}, ...], written by `config.merged`). Each request's tensors
    flow through the steps in turn, by name, as the ensemble would pass them; a request a step
    rejects leaves the chain with that error while the others go on. Answers the tensors the
    `chain_outputs` parameter names (comma-separated)."""

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        links = json.loads(parameters[CHAIN_PARAMETER])
        self.steps = [(load_step_class(link["step"])(folder, parameters), link.get("names", {}))
                      for link in links]
        self.outputs = parameters[CHAIN_OUTPUTS].split(",")

    def __call__(self, requests: list[Tensors],
                 timings: dict[str, float] | None = None) -> list[Tensors | RequestError]:
        """`timings`, where given, gathers the seconds each step took, by class name."""
        tensors = [dict(request) for request in requests]
        results: list[Tensors | RequestError] = [{} for _ in requests]
        live = list(range(len(requests)))
        for step, names in self.steps:
            if not live:
                break
            own = [{**tensors[i], **{name: tensors[i][alias] for name, alias in names.items()
                                     if alias in tensors[i]}} for i in live]
            with timed(timings, type(step).__name__):
                answers = step(own)
            passed = []
            for i, result in zip(live, answers, strict=True):
                if isinstance(result, RequestError):
                    results[i] = result
                else:
                    tensors[i] |= {names.get(name, name): value for name, value in result.items()}
                    passed.append(i)
            live = passed
        for i in live:
            results[i] = {name: tensors[i][name] for name in self.outputs if name in tensors[i]}
        return results


def triton_model(factory: StepFactory) -> type:
    """A `TritonPythonModel` class running the step that `factory` builds from the model's
    version folder and config parameters."""

    class TritonPythonModel:
        def initialize(self, args: dict[str, str]) -> None:
            import triton_python_backend_utils as pb_utils
            from threadpoolctl import threadpool_limits

            from fusionrank.model_repository.stub_process import watch_server

            # A process whose server died (kill -9, a crash) ends itself and removes its
            # shared-memory file, rather than living on under PID 1 (stub_process.py).
            watch_server()
            # A model copy is one process on one core; Triton runs the copies side by side.
            # numpy's BLAS threads would busy-wait on the cores the other copies compute on
            # (a 100-row matrix-vector product then took 10 % of a copy's time under load).
            threadpool_limits(limits=1, user_api="blas")
            # No model process needs numba, but bm25s imports it wherever it is installed (ranx
            # installs it, for the evaluation) though we run its numpy backend: that loaded
            # ~57 MB of LLVM into every search model copy. Now its import fails, as bm25s
            # allows for.
            sys.modules.setdefault("numba", None)
            self._pb = pb_utils
            config = json.loads(args["model_config"])
            self._outputs = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"])
                             for o in config["output"]}
            self._inputs = [i["name"] for i in config["input"]]
            # Triton checks only the NUMBER of inputs of a model with an optional one: a
            # request may then lack a required input (see `Ensemble.config`).
            self._required = [i["name"] for i in config["input"] if not i.get("optional")]
            folder = Path(args["model_repository"]) / args["model_version"]
            check_manifest(folder)  # the artefacts the build placed, unchanged, or no load
            self._step = factory(folder, config_parameters(config))

        def execute(self, requests: list) -> list:
            pb = self._pb
            tensors, lacking = [], []
            for request in requests:
                inputs = {}
                for name in self._inputs:
                    tensor = pb.get_input_tensor_by_name(request, name)
                    if tensor is not None:
                        inputs[name] = tensor.as_numpy()
                tensors.append(inputs)
                lacking.append([name for name in self._required if name not in inputs])
            complete = [inputs for inputs, names in zip(tensors, lacking, strict=True)
                        if not names]
            answers = iter(self._step(complete) if complete else [])
            responses = []
            for names in lacking:
                result = RequestError(f"the request lacks the required input(s) "
                                      f"{', '.join(names)}") if names else next(answers)
                if isinstance(result, RequestError):
                    error = pb.TritonError(str(result), pb.TritonError.INVALID_ARG)
                    responses.append(pb.InferenceResponse(output_tensors=[], error=error))
                else:
                    # Only what the config declares: a step may answer more (optional
                    # outputs a repository built before them does not list).
                    responses.append(pb.InferenceResponse(output_tensors=[
                        pb.Tensor(name, np.asarray(value, dtype=self._outputs[name]))
                        for name, value in result.items() if name in self._outputs]))
            return responses

    TritonPythonModel.step_factory = staticmethod(factory)
    return TritonPythonModel
