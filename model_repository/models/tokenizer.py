"""tokenizer: query text → token ids. Rejects empty, non-UTF-8 and over-long queries."""

from __future__ import annotations

from fusionrank.contract import check_batch, check_query
from fusionrank.encoding import MAX_QUERY_TOKENS
from fusionrank.model_repository.models.base import triton_model
from fusionrank.model_repository.models.token_graph import TOKENIZER_FILE, TokenizeText

__all__ = ["TOKENIZER_FILE", "Tokenize", "TritonPythonModel"]


class Tokenize(TokenizeText):
    TENSOR = "QUERY"
    MAX_TOKENS = MAX_QUERY_TOKENS
    check_batch = staticmethod(check_batch)
    check_row = staticmethod(check_query)


TritonPythonModel = triton_model(Tokenize)
