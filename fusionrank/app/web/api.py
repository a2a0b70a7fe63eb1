"""The JSON endpoints the page uses: /api/search, /api/recommend, /api/sentiment, /api/health.

Input is checked by the gRPC contract's own functions (the ones the server and the SDK run), so
the limits and the messages are the contract's; a failed check answers 422 naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from fusionrank.app.web.errors import bad_input
from fusionrank.app.web.gateway import TritonGateway
from fusionrank.app.web.schemas import (
    K_DOC,
    QUERY_DOC,
    ErrorAnswer,
    Health,
    RecommendAnswer,
    RecommendRequest,
    SearchAnswer,
    SentimentAnswer,
    SentimentRequest,
)
from fusionrank.core.contract import DEFAULT_K, MAX_K, RequestError, check_k
from fusionrank.core.recommend.contract import check_history
from fusionrank.core.search.contract import MAX_QUERY_CHARS, check_query
from fusionrank.core.sentiment.contract import check_review, check_review_batch

T = TypeVar("T")

ERRORS = {status: {"model": ErrorAnswer, "description": text} for status, text in [
    (400, "the server rejected the request (INVALID_ARGUMENT)"),
    (422, "the input breaks the contract; `field` names it"),
    (503, "the Triton server is unreachable or does not serve this model"),
    (504, "the Triton server did not answer in time")]}

router = APIRouter(prefix="/api", responses=ERRORS)


def checked(field: str, check: Callable[..., T], *args: object) -> T:
    """A contract check's result, or its RequestError as a 422 naming the field."""
    try:
        return check(*args)
    except RequestError as error:
        raise bad_input(field, str(error)) from None


def gateway(request: Request) -> TritonGateway:
    return request.app.state.gateway


class JsonAnswer(Response):
    """An answer validated where it was built, serialised once by pydantic's own encoder
    (returned as a model, FastAPI would validate and encode it a second time). `response_model`
    on each route still documents it."""

    media_type = "application/json"

    def __init__(self, answer: BaseModel):
        super().__init__(answer.model_dump_json())


@router.get("/search", response_model=SearchAnswer, summary="search with each score explained")
async def search(request: Request,
                 q: Annotated[str, Query(description=QUERY_DOC,
                                         json_schema_extra={"maxLength": MAX_QUERY_CHARS})],
                 k: Annotated[int, Query(description=K_DOC, json_schema_extra={
                     "minimum": 1, "maximum": MAX_K})] = DEFAULT_K) -> JsonAnswer:
    query = checked("q", check_query, q)
    checked("k", check_k, [k])
    return JsonAnswer(await gateway(request).search(query, k))


@router.post("/recommend", response_model=RecommendAnswer,
             summary="recommendations for a session's history")
async def recommend(request: Request, body: RecommendRequest) -> JsonAnswer:
    checked("k", check_k, [body.k])
    ids, times = checked("history", check_history,
                         np.array([e.product_id for e in body.history], dtype=object),
                         np.array([e.time for e in body.history], dtype=np.int64))
    history = list(zip(ids, times.tolist(), strict=True))
    return JsonAnswer(await gateway(request).recommend(history, body.k, body.exclude_purchased))


@router.post("/sentiment", response_model=SentimentAnswer, summary="review sentiment")
async def sentiment(request: Request, body: SentimentRequest) -> JsonAnswer:
    checked("texts", check_review_batch, len(body.texts))
    texts = [checked("texts", check_review, text, row) for row, text in enumerate(body.texts)]
    return JsonAnswer(await gateway(request).sentiment(texts))


@router.get("/health", response_model=Health, responses={},
            summary="whether the Triton server answers, model by model")
async def health(request: Request) -> JsonAnswer:
    return JsonAnswer(await gateway(request).health())

