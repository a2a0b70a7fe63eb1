"""The JSON endpoints the page uses: /api/search, /api/recommend, /api/sentiment, /api/health.

Input is checked by the gRPC contract's own functions (the ones the server and the SDK run), so
the limits and the messages are the contract's; a failed check answers 422 naming the field.
A POST body is bounded (413 over its limit) and parsed off the event loop when it is large
(bodies.py): `recommend_call` and `sentiment_texts` are what runs there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from fusionrank.app.web.bodies import BodyParser, parse_body
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
    (413, "the request body is over the endpoint's limit (the contract's largest request)"),
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


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that parses its body itself (app.py adds the
    schema to the page's components)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


async def checked_body(request: Request, check: Callable[[bytes], T]) -> T:
    """The request's body through `check`, off the event loop when it is large."""
    parser: BodyParser = request.app.state.body_parser
    return await parser.run(check, await request.body())


@dataclass(frozen=True)
class RecommendCall:
    history: list[tuple[str, int]]
    k: int
    exclude_purchased: bool


def recommend_call(raw: bytes) -> RecommendCall:
    """A /api/recommend body checked by the schema and the contract (maybe in a worker: only
    what passed the contract's bounds comes back)."""
    body = parse_body(RecommendRequest, raw)
    checked("k", check_k, [body.k])
    ids, times = checked("history", check_history,
                         np.array([e.product_id for e in body.history], dtype=object),
                         np.array([e.time for e in body.history], dtype=np.int64))
    return RecommendCall(list(zip(ids, times.tolist(), strict=True)), body.k,
                         body.exclude_purchased)


def sentiment_texts(raw: bytes) -> list[str]:
    """A /api/sentiment body's reviews, checked by the schema and the contract."""
    body = parse_body(SentimentRequest, raw)
    checked("texts", check_review_batch, len(body.texts))
    return [checked("texts", check_review, text, row) for row, text in enumerate(body.texts)]


@router.post("/recommend", response_model=RecommendAnswer, openapi_extra=json_body(
    RecommendRequest), summary="recommendations for a session's history")
async def recommend(request: Request) -> JsonAnswer:
    call = await checked_body(request, recommend_call)
    return JsonAnswer(await gateway(request).recommend(call.history, call.k,
                                                       call.exclude_purchased))


@router.post("/sentiment", response_model=SentimentAnswer,
             openapi_extra=json_body(SentimentRequest), summary="review sentiment")
async def sentiment(request: Request) -> JsonAnswer:
    texts = await checked_body(request, sentiment_texts)
    return JsonAnswer(await gateway(request).sentiment(texts))


@router.get("/health", response_model=Health, responses={},
            summary="whether the Triton server answers, model by model")
async def health(request: Request) -> JsonAnswer:
    return JsonAnswer(await gateway(request).health())
