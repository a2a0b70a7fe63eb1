"""tokenizer: query text → token ids. Rejects empty, non-UTF-8 and over-long queries."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fusionrank.contract import RequestError, check_batch, check_query
from fusionrank.encoding import MAX_QUERY_TOKENS, TextTokenizer, pad
from fusionrank.model_repository.models.base import Tensors, triton_model

TOKENIZER_FILE = "tokenizer.json"


class Tokenize:
    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        max_tokens = int(parameters.get("max_tokens", MAX_QUERY_TOKENS))
        self.tokenizer = TextTokenizer(folder / TOKENIZER_FILE, max_tokens)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        results: list[Tensors | RequestError] = []
        for request in requests:
            try:
                queries = request["QUERY"].reshape(-1)
                check_batch(len(queries))
                texts = [check_query(q, row) for row, q in enumerate(queries)]
            except RequestError as error:
                results.append(error)
                continue
            batch = pad(self.tokenizer.token_ids(texts))
            results.append({"INPUT_IDS": batch.input_ids, "ATTENTION_MASK": batch.attention_mask})
        return results


TritonPythonModel = triton_model(Tokenize)
