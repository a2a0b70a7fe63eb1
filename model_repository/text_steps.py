"""What the text models share: checked text → token ids, and token ids → one ONNX Runtime
call over every request of a dynamically batched call. Each feature's subclass declares its
tensors (`CONTRACT`); these classes read and answer them in the declared order."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.contract import RequestError, TensorSpec
from fusionrank.core.encoding import OnnxEncoder, TextTokenizer, pad
from fusionrank.model_repository.step import StepContract, Tensors, split_rows


class TokenizeText:
    """Text [rows, 1] BYTES → token ids and attention mask, padded to the request's longest
    row, or with the parameter `pad_to` to that fixed length (the GPU repository: a native
    model's dynamic batcher joins only requests of one shape, and TensorRT builds for fixed
    shapes). A request with a bad row is rejected whole, with the check's message."""

    # (text,) → (token ids, attention mask), both ragged: each request is padded on its own.
    CONTRACT: ClassVar[StepContract]
    MAX_TOKENS: int
    check_batch: Callable[[int], None]
    check_row: Callable[[bytes | str, int], str]

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        max_tokens = int(parameters.get("max_tokens", self.MAX_TOKENS))
        self.tokenizer = TextTokenizer(folder / artefacts.TOKENIZER, max_tokens)
        self.pad_to = int(parameters["pad_to"]) if "pad_to" in parameters else None
        if self.pad_to is not None and self.pad_to < max_tokens:
            raise ValueError(f"pad_to = {self.pad_to} is below max_tokens = {max_tokens}")

    @classmethod
    def padded_to(cls, length: int) -> StepContract:
        """The contract of the step with the parameter `pad_to` = length: token tensors of
        fixed dims, no longer ragged."""
        return replace(cls.CONTRACT, outputs=tuple(TensorSpec(spec.name, spec.dtype, (length,))
                                                   for spec in cls.CONTRACT.outputs))

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        (text,) = self.CONTRACT.inputs
        input_ids, attention_mask = self.CONTRACT.outputs
        results: list[Tensors | RequestError] = []
        for request in requests:
            try:
                if text.name not in request:
                    raise RequestError(f"the input {text.name} is missing")
                rows = request[text.name].reshape(-1)
                self.check_batch(len(rows))
                texts = [self.check_row(value, row) for row, value in enumerate(rows)]
            except RequestError as error:
                results.append(error)
                continue
            batch = pad(self.tokenizer.token_ids(texts), self.pad_to)
            results.append({input_ids.name: batch.input_ids,
                            attention_mask.name: batch.attention_mask})
        return results


class TokenGraph:
    """Token ids and attention mask of several requests → the graph's one output for each
    request, from one ONNX Runtime call."""

    # (token ids, attention mask) → (the graph's output,)
    CONTRACT: ClassVar[StepContract]
    MODEL_FILE: str

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        threads = int(parameters.get("threads", "0"))
        self.graph = OnnxEncoder(folder / self.MODEL_FILE, threads=threads or None)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        input_ids, attention_mask = self.CONTRACT.inputs
        # Requests arrive padded to their own longest row; re-pad them as one batch.
        sequences = [row[mask.astype(bool)]
                     for request in requests
                     for row, mask in zip(request[input_ids.name], request[attention_mask.name],
                                          strict=True)]
        outputs = self.graph(pad(sequences)).astype(np.float32)
        sizes = [len(request[input_ids.name]) for request in requests]
        return [self.respond(part) for part in split_rows(outputs, sizes)]

    def respond(self, output: np.ndarray) -> Tensors:
        """One request's tensors from its rows of the graph's output."""
        return {self.CONTRACT.outputs[0].name: output}
