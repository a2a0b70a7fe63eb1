"""Triton ensembles described as pipelines of named steps.

    search = (Inputs(*SEARCH_INPUTS) >> tokenizer >> query_encoder >> retrieval >> ranker
              ).ensemble("search", SEARCH_OUTPUTS)

Tensors flow by name: a step reads each of its inputs from the ensemble's inputs or from an
earlier step's output of that name (an optional input nothing provides is left out), and the
ensemble's outputs are the steps' outputs of theirs; a step's `tensor_names` renames its
tensors within the ensemble. `config.merged` runs consecutive steps as one model. A name produced
twice, or needed before anything produced it, is an error here rather than a model that fails
to load in the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from fusionrank.core.contract import MAX_BATCH, TensorSpec
from fusionrank.model_repository.config import (
    FIRST_VERSION,
    PythonModel,
    model_input,
    model_output,
    write_config,
)


@dataclass(frozen=True)
class Pipeline:
    inputs: tuple[TensorSpec, ...]
    steps: tuple[PythonModel, ...] = ()

    def __rshift__(self, step: PythonModel) -> Pipeline:
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

    def config(self) -> mc.ModelConfig:
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
                model_name=model.name, model_version=-1,
                # An optional input nothing provides is left unmapped (the step goes without).
                input_map={t.name: model.ensemble_name(t.name) for t in model.inputs
                           if model.ensemble_name(t.name) in available},
                # Intermediate tensors no later step reads are left out of the map.
                output_map={own: name for own, name in produced.items()
                            if name in wanted or name in read_later}))
        missing = sorted(wanted - available)
        if missing:
            raise ValueError(f"{self.name}: no step produces the outputs {missing}")
        return mc.ModelConfig(
            name=self.name, platform="ensemble", max_batch_size=self.max_batch_size,
            input=[model_input(t) for t in self.pipeline.inputs],
            output=[model_output(t) for t in self.outputs],
            ensemble_scheduling=mc.ModelEnsembling(step=steps),
            response_cache=mc.ModelResponseCache(enable=self.response_cache))

    def export(self, repository: Path, version: int = FIRST_VERSION) -> Path:
        """Every step, then the ensemble, under `version`: a build gives all its models one new
        version number, so nothing keyed on (model, version) — Triton's response cache — can
        answer from an earlier build."""
        for model in self.pipeline.steps:
            model.export(repository, version)
        return write_config(self.config(), repository, version)
