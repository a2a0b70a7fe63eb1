"""The web application: the shop's page (a Jinja2 template, a little JavaScript and CSS) and the
JSON endpoints it calls, over one Triton server reached through the async SDK. Request bodies
are bounded and large ones parsed off the event loop (bodies.py); nothing a visitor sees names
the Triton server's address.

    uvicorn.run(create_app(WebSettings("127.0.0.1:8001")), port=8080)   # or `fusionrank web`

Nothing about a shopper is stored here: the session (history, basket) lives in the browser.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from fusionrank.app.web.api import router
from fusionrank.app.web.bodies import BodyLimit, BodyParser
from fusionrank.app.web.errors import ApiError, bad_input
from fusionrank.app.web.gateway import TritonGateway
from fusionrank.app.web.schemas import RecommendRequest, SentimentRequest
from fusionrank.core.contract import DEFAULT_K, MAX_K
from fusionrank.core.search.contract import MAX_QUERY_CHARS
from fusionrank.core.sentiment.contract import MAX_REVIEW_CHARS

HERE = Path(__file__).parent
DESCRIPTION = """Search with each result's score explained, recommendations from the shopper's
session, and review sentiment, answered by fusionrank's models on a Triton server. Failures
answer `{"error", "message", "field"}`: 422 for input that breaks the gRPC contract (the same
checks and limits as the server), 413 for a body over the endpoint's limit (the contract's
largest request), 400 for the server's INVALID_ARGUMENT, 503 when the server is unreachable or
does not serve the model (`error` says which), 504 on a timeout."""


@dataclass(frozen=True)
class WebSettings:
    # the Triton server's gRPC address, or its replicas' (the calls take turns, fail over)
    triton_url: str | tuple[str, ...] = "127.0.0.1:8001"
    timeout_s: float = 10.0  # per call to the server


def api_error(_request: Request, failure: ApiError) -> JSONResponse:
    return JSONResponse(failure.body(), status_code=failure.status)


def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's own 422 (a missing field, a number that is not one) in the same shape as the
    contract's: the first problem, its field named."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"][1:]) or str(first["loc"][0])
    return api_error(_request, bad_input(field, f"{field}: {first['msg']}"))


def document_bodies(app: FastAPI, *models: type[BaseModel]) -> None:
    """Put the schemas of the bodies the routes parse themselves (api.json_body) into the
    OpenAPI page's components, where their routes refer to them."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schemas = generate()["components"]["schemas"]
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update({model.__name__: schema, **schema.pop("$defs", {})})
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: WebSettings) -> FastAPI:
    templates = Jinja2Templates(directory=HERE / "templates")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gateway = TritonGateway(settings.triton_url, settings.timeout_s)
        app.state.body_parser = BodyParser()
        try:
            yield
        finally:
            app.state.body_parser.close()
            await app.state.gateway.close()

    app = FastAPI(title="fusionrank shop", description=DESCRIPTION, lifespan=lifespan)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)
    app.add_middleware(BodyLimit)
    document_bodies(app, RecommendRequest, SentimentRequest)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request, q: str = "") -> HTMLResponse:
        return templates.TemplateResponse(request, "index.html", {
            "query": q, "default_k": DEFAULT_K,
            "max_k": MAX_K, "max_query_chars": MAX_QUERY_CHARS,
            "max_review_chars": MAX_REVIEW_CHARS})

    return app
