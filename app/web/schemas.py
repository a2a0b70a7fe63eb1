"""The JSON the web app's endpoints take and give, as FastAPI documents them (/docs).

Limits are not restated here: the endpoints check input with the gRPC contract's own
functions (fusionrank.core.contract and each feature's contract), and the schema only quotes
the contract's constants so the OpenAPI page shows them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from fusionrank.app.web.errors import ErrorKind
from fusionrank.core.catalogue import Product
from fusionrank.core.contract import DEFAULT_K, MAX_K
from fusionrank.core.recommend.contract import MAX_HISTORY
from fusionrank.core.search.contract import MAX_QUERY_CHARS
from fusionrank.core.sentiment.contract import (
    MAX_REVIEW_BATCH,
    MAX_REVIEW_CHARS,
    SENTIMENT_CLASSES,
)

K_DOC = f"how many products, 1 to {MAX_K} (default {DEFAULT_K})"
QUERY_DOC = f"the shopper's query: UTF-8 text, 1 to {MAX_QUERY_CHARS} characters once trimmed"


class ScorePart(BaseModel):
    """One signal's share of the ranking score S: contribution = weight × value."""

    signal: str = Field(description="similarity, feedback, lexical, or reranker (the "
                                    "cross-encoder's logit, where the build serves one)")
    value: float
    weight: float = Field(description="the weight fitted on dev for this signal")
    contribution: float


class RankedProduct(BaseModel):
    product_id: str
    score: float = Field(description="the served score (FP32 on the wire)")
    product: Product


class SearchHit(RankedProduct):
    parts: list[ScorePart] = Field(
        description="S broken into its signals, in the served order; the float64 sum of the "
                    "contributions, rounded to float32, equals `score`")


class SearchAnswer(BaseModel):
    query: str
    corrected: str | None = Field(description="the query as the server spelling-corrected it; "
                                              "null when no term was corrected")
    k: int
    hits: list[SearchHit]
    served_ms: float = Field(description="time of the call to the Triton server, in ms")


class HistoryEntry(BaseModel):
    product_id: str
    time: int = Field(0, description="unix seconds of the action; 0 means unknown")


class RecommendRequest(BaseModel):
    history: list[HistoryEntry] = Field(
        default_factory=list,
        description=f"the session's viewed and basket products, at most {MAX_HISTORY}")
    k: int = Field(DEFAULT_K, description=K_DOC, json_schema_extra={"minimum": 1,
                                                                    "maximum": MAX_K})
    exclude_purchased: bool = Field(False, description="leave out products in the history")


class RecommendAnswer(BaseModel):
    items: list[RankedProduct]
    unknown_ids: int = Field(description="history entries the recommender does not know")
    popular: bool = Field(description="true when no history entry is known: the ranking is "
                                      "the popular products (a fresh session)")
    served_ms: float


class SentimentRequest(BaseModel):
    texts: list[str] = Field(
        description=f"1 to {MAX_REVIEW_BATCH} reviews, each 1 to {MAX_REVIEW_CHARS} characters",
        json_schema_extra={"minItems": 1, "maxItems": MAX_REVIEW_BATCH})


class SentimentResult(BaseModel):
    text: str
    label: Literal[SENTIMENT_CLASSES]  # type: ignore[valid-type]
    probabilities: dict[str, float]
    score: float = Field(description="P(positive) − P(negative)")


class SentimentAnswer(BaseModel):
    classes: list[str] = list(SENTIMENT_CLASSES)
    results: list[SentimentResult]
    served_ms: float


ModelState = Literal["ready", "missing", "unavailable", "error"]


class Health(BaseModel):
    """No address of the backend: a visitor learns whether it answers, not where it runs."""

    ready: bool = Field(description="true when the server answers and serves search")
    models: dict[str, ModelState]
    message: str | None = Field(description="why the server or a model is not ready")


class ErrorAnswer(BaseModel):
    error: ErrorKind
    message: str
    field: str | None = None
