"""Request bodies: bounded before they are read, and parsed off the event loop.

A body larger than its endpoint's limit is answered 413 before any of it is parsed: at once
when its Content-Length says so, or as soon as a streamed (chunked) body passes the limit. The
413 closes the connection, so the rest of the body is never read (kept open, the server would
read and drop all of it to reach the next request).
The limits are the largest request the gRPC contract allows (each character counted as a
JSON `\\uXXXX` escape), so no valid request is refused.

Within the limit, a body is parsed and checked (JSON → schema → the contract's checks) in a
worker process once it is larger than INLINE_BYTES: json and pydantic parse in C and Rust
holding the GIL, so a thread would block the event loop just the same, while a body of a few
hundred kilobytes of tiny history entries takes hundreds of milliseconds to parse. What the
page sends (a few kilobytes) is parsed in place, where it costs less than the hop.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from fusionrank.app.web.errors import ApiError, bad_input
from fusionrank.core.recommend.contract import MAX_HISTORY, MAX_PRODUCT_ID_CHARS
from fusionrank.core.sentiment.contract import MAX_REVIEW_BATCH, MAX_REVIEW_CHARS

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

ESCAPED_CHAR_BYTES = 6  # the most one character takes in JSON: "\uXXXX"
ENVELOPE_BYTES = 4096  # keys, numbers, punctuation and whitespace around the texts
RECOMMEND_ENTRY_BYTES = MAX_PRODUCT_ID_CHARS * ESCAPED_CHAR_BYTES + 64  # + "time" and keys
BODY_LIMITS: Mapping[str, int] = {
    "/api/recommend": MAX_HISTORY * RECOMMEND_ENTRY_BYTES + ENVELOPE_BYTES,  # 900 kB
    "/api/sentiment": MAX_REVIEW_BATCH * (MAX_REVIEW_CHARS * ESCAPED_CHAR_BYTES + 8)
    + ENVELOPE_BYTES,  # 1.5 MB
}
OTHER_BODY_LIMIT = 64 * 1024  # every other path: the GET endpoints and pages take no body
INLINE_BYTES = 16 * 1024  # bodies up to this are parsed on the event loop (about 1 ms)


def body_limit(path: str) -> int:
    return BODY_LIMITS.get(path.rstrip("/") or "/", OTHER_BODY_LIMIT)


def declared_length(scope: Mapping[str, Any]) -> int | None:
    """The request's Content-Length, None when it has none (a chunked body) or it is not a
    number (the server's HTTP parser refuses those before the app sees them)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def too_large(send: Callable, limit: int) -> None:
    """The 413 answer, in the shape of every other failure (errors.py). `Connection: close`
    makes uvicorn close the connection once it is sent, leaving the body's rest unread."""
    body = ApiError(413, "too_large", f"the request body is over this endpoint's limit of "
                                      f"{limit:,} bytes", "body").json_bytes()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: a body over its path's limit is answered 413 and never reaches the app.
    One within it is read here (at most the limit, in memory) and handed on whole."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["path"])
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            await too_large(send, limit)  # the body is left unread
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:  # a streamed body: refused as soon as it passes the limit
                await too_large(send, limit)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # what comes after the body: a disconnect
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


def parse_body(model: type[M], raw: bytes) -> M:
    """A request body as its schema, or a 422 naming the first field it is wrong about."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False, include_context=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        raise bad_input(field, f"{field}: {first['msg']}") from None


@dataclass
class BodyParser:
    """Runs a body's parse-and-check function: here for small bodies, in one worker process
    (started on the first large body) for the others."""

    _pool: ProcessPoolExecutor | None = None

    async def run(self, check: Callable[[bytes], T], raw: bytes) -> T:
        if len(raw) <= INLINE_BYTES:
            return check(raw)
        if self._pool is None:
            # spawn: a fresh interpreter, not a fork of a process that runs threads.
            self._pool = ProcessPoolExecutor(1, multiprocessing.get_context("spawn"))
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, check, raw)
        except BrokenProcessPool:
            self._pool = None  # the next large body starts a new worker
            raise ApiError(503, "server_error", "the worker that parses large request bodies "
                                                "stopped; try again") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
