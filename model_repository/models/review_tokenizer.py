"""review_tokenizer: review text → token ids for the sentiment classifier.

Rejects, with a RequestError naming the row: empty or whitespace-only text, text that is not
UTF-8, text over MAX_REVIEW_CHARS characters, and requests over MAX_REVIEW_BATCH rows. Text
longer than the model's token window is truncated (the classifier was trained that way).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fusionrank.contract import RequestError
from fusionrank.encoding import TextTokenizer, pad
from fusionrank.model_repository.models.base import Tensors, triton_model
from fusionrank.sentiment_contract import MAX_REVIEW_TOKENS, check_review, check_review_batch

TOKENIZER_FILE = "tokenizer.json"


class TokenizeReviews:
    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        max_tokens = int(parameters.get("max_tokens", MAX_REVIEW_TOKENS))
        self.tokenizer = TextTokenizer(folder / TOKENIZER_FILE, max_tokens)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        results: list[Tensors | RequestError] = []
        for request in requests:
            try:
                if "TEXT" not in request:
                    raise RequestError("the input TEXT is missing")
                texts = request["TEXT"].reshape(-1)
                check_review_batch(len(texts))
                checked = [check_review(text, row) for row, text in enumerate(texts)]
            except RequestError as error:
                results.append(error)
                continue
            batch = pad(self.tokenizer.token_ids(checked))
            results.append({"INPUT_IDS": batch.input_ids, "ATTENTION_MASK": batch.attention_mask})
        return results


TritonPythonModel = triton_model(TokenizeReviews)
