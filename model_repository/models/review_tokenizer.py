"""review_tokenizer: review text → token ids for the sentiment classifier.

Rejects, with a RequestError naming the row: empty or whitespace-only text, text that is not
UTF-8, text over MAX_REVIEW_CHARS characters, and requests over MAX_REVIEW_BATCH rows. Text
longer than the model's token window is truncated (the classifier was trained that way).
"""

from __future__ import annotations

from fusionrank.model_repository.models.base import triton_model
from fusionrank.model_repository.models.token_graph import TOKENIZER_FILE, TokenizeText
from fusionrank.sentiment_contract import MAX_REVIEW_TOKENS, check_review, check_review_batch

__all__ = ["TOKENIZER_FILE", "TokenizeReviews", "TritonPythonModel"]


class TokenizeReviews(TokenizeText):
    TENSOR = "TEXT"
    MAX_TOKENS = MAX_REVIEW_TOKENS
    check_batch = staticmethod(check_review_batch)
    check_row = staticmethod(check_review)


TritonPythonModel = triton_model(TokenizeReviews)
