"""What the text models share: checked text → token ids, and token ids → one ONNX Runtime
call over every request of a dynamically batched call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.contract import RequestError
from fusionrank.core.encoding import OnnxEncoder, TextTokenizer, pad
from fusionrank.model_repository.step import Tensors, split_rows


class TokenizeText:
    """TENSOR [rows, 1] BYTES → INPUT_IDS, ATTENTION_MASK padded to the request's longest row,
    or with the parameter `pad_to` to that fixed length (the GPU repository: a native model's
    dynamic batcher joins only requests of one shape, and TensorRT builds for fixed shapes).
    A request with a bad row is rejected whole, with the check's message."""

    TENSOR: str
    MAX_TOKENS: int
    check_batch: Callable[[int], None]
    check_row: Callable[[bytes | str, int], str]

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        max_tokens = int(parameters.get("max_tokens", self.MAX_TOKENS))
        self.tokenizer = TextTokenizer(folder / artefacts.TOKENIZER, max_tokens)
        self.pad_to = int(parameters["pad_to"]) if "pad_to" in parameters else None
        if self.pad_to is not None and self.pad_to < max_tokens:
            raise ValueError(f"pad_to = {self.pad_to} is below max_tokens = {max_tokens}")

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        results: list[Tensors | RequestError] = []
        for request in requests:
            try:
                if self.TENSOR not in request:
                    raise RequestError(f"the input {self.TENSOR} is missing")
                rows = request[self.TENSOR].reshape(-1)
                self.check_batch(len(rows))
                texts = [self.check_row(value, row) for row, value in enumerate(rows)]
            except RequestError as error:
                results.append(error)
                continue
            batch = pad(self.tokenizer.token_ids(texts), self.pad_to)
            results.append({"INPUT_IDS": batch.input_ids, "ATTENTION_MASK": batch.attention_mask})
        return results


class TokenGraph:
    """INPUT_IDS, ATTENTION_MASK of several requests → the graph's OUTPUT for each request."""

    MODEL_FILE: str
    OUTPUT: str

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        threads = int(parameters.get("threads", "0"))
        self.graph = OnnxEncoder(folder / self.MODEL_FILE, threads=threads or None)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        # Requests arrive padded to their own longest row; re-pad them as one batch.
        sequences = [row[mask.astype(bool)]
                     for request in requests
                     for row, mask in zip(request["INPUT_IDS"], request["ATTENTION_MASK"],
                                          strict=True)]
        outputs = self.graph(pad(sequences)).astype(np.float32)
        sizes = [len(request["INPUT_IDS"]) for request in requests]
        return [{self.OUTPUT: part} for part in split_rows(outputs, sizes)]
