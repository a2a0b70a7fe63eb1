"""Triton ensembles described as pipelines of named steps.

    search = (Inputs(*SEARCH_INPUTS) >> tokenizer >> query_encoder >> retrieval >> ranker
              ).ensemble("search", SEARCH_OUTPUTS)

A step is a Python-backend model (`PythonModel`, its logic a step class, whose tensors are the
ones the class declares: `step.StepContract`) or a graph Triton runs natively (`NativeModel`:
ONNX Runtime, TensorRT, the graph's tensors), each declared as a typed config.

Tensors flow by name: a step reads each of its inputs from the ensemble's inputs or from an
earlier step's output of that name (an optional input nothing provides is left out), and the
ensemble's outputs are the steps' outputs of theirs; a step's `tensor_names` renames its
tensors within the ensemble. `config.merged` runs consecutive steps as one model. A name produced
twice, or needed before anything produced it, is an error here rather than a model that fails
to load in the server.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from fusionrank.core.contract import MAX_BATCH, TensorSpec
from fusionrank.model_repository.config import (
    FIRST_VERSION,
    ServedModel,
    model_input,
    model_output,
    write_config,
)

LATEST = -1  # a step's model_version: the newest ready version of its model


@dataclass(frozen=True)
class Pipeline:
    inputs: tuple[TensorSpec, ...]
    steps: tuple[ServedModel, ...] = ()

    def __rshift__(self, step: ServedModel) -> Pipeline:
        return Pipeline(self.inputs, (*self.steps, step))

    def ensemble(self, name: str, outputs: tuple[TensorSpec, ...],
                 max_batch_size: int = MAX_BATCH, response_cache: bool = False) -> Ensemble:
        return Ensemble(name, self, outputs, max_batch_size, response_cache)


def Inputs(*specs: TensorSpec) -> Pipeline:
    return Pipeline(tuple(specs))


@dataclass(frozen=True)
class Ensemble:
    name: str
    pipeline: Pipeline
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = MAX_BATCH
    # Triton keeps the ensemble's answers in its response cache (when the server has one):
    # a request equal to an earlier one, input for input, is answered without running a step.
    response_cache: bool = False

    def config(self, version: int = LATEST) -> mc.ModelConfig:
        """The ensemble's config, its steps pinned to `version` of their models (the build's
        own): one request then runs one build's models from start to end, even while a rollout
        (`fusionrank deploy`) has two versions of a model loaded. LATEST: whichever is newest."""
        available = {t.name for t in self.pipeline.inputs}
        wanted = {t.name for t in self.outputs}
        read = [{model.ensemble_name(t.name) for t in model.inputs if not t.optional}
                for model in self.pipeline.steps]
        optional = [{model.ensemble_name(t.name) for t in model.inputs if t.optional}
                    for model in self.pipeline.steps]
        steps = []
        for position, model in enumerate(self.pipeline.steps):
            missing = sorted(read[position] - available)
            if missing:
                raise ValueError(f"{self.name}: step {model.name} needs {missing}, which no "
                                 "ensemble input or earlier step provides")
            produced = {t.name: model.ensemble_name(t.name) for t in model.outputs}
            twice = sorted(set(produced.values()) & available)
            if twice:
                raise ValueError(f"{self.name}: step {model.name} produces {twice} again")
            available.update(produced.values())
            read_later = set().union(*read[position + 1:], *optional[position + 1:])
            steps.append(mc.ModelEnsembling.Step(
                model_name=model.name, model_version=version,
                # An optional input nothing provides is left unmapped (the step goes without).
                input_map={t.name: model.ensemble_name(t.name) for t in model.inputs
                           if model.ensemble_name(t.name) in available},
                # Intermediate tensors no later step reads are left out of the map.
                output_map={own: name for own, name in produced.items()
                            if name in wanted or name in read_later}))
        missing = sorted(wanted - available)
        if missing:
            raise ValueError(f"{self.name}: no step produces the outputs {missing}")
        # Triton checks only the NUMBER of inputs of a model with an optional one, so a request
        # lacking a required input but sending the optional one passes, and the step waiting
        # for the missing tensor never runs ("unexpected deadlock"). Every input of such an
        # ensemble is declared optional: each step then runs with what came, and the step
        # (Triton's own check, or `triton_model`'s) names the input that is missing.
        loose = any(t.optional for t in self.pipeline.inputs)
        return mc.ModelConfig(
            name=self.name, platform="ensemble", max_batch_size=self.max_batch_size,
            input=[model_input(replace(t, optional=True) if loose else t)
                   for t in self.pipeline.inputs],
            output=[model_output(t) for t in self.outputs],
            ensemble_scheduling=mc.ModelEnsembling(step=steps),
            response_cache=mc.ModelResponseCache(enable=self.response_cache))

    def export(self, repository: Path, version: int = FIRST_VERSION) -> Path:
        """Every step, then the ensemble, under `version`: a build gives all its models one new
        version number, so nothing keyed on (model, version) — Triton's response cache — can
        answer from an earlier build."""
        for model in self.pipeline.steps:
            model.export(repository, version)
        return write_config(self.config(version), repository, version)
