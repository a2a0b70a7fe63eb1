"""What the web app answers when a call cannot be served: one JSON shape for every failure.

    {"error": "invalid_argument", "message": "K = 0 is out of range: ...", "field": "k"}

`error` is one of ErrorKind; the page picks its state (banner, panel note, inline message)
from it, and shows `message` as it is. Messages name no address of the backend: a visitor
learns that the server is down, not where it runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Literal

from fusionrank.app.clients import not_served_message
from fusionrank.client import (
    FusionRankError,
    InvalidRequestError,
    ModelNotServedError,
    RequestTimeoutError,
    ServerOverloadedError,
    ServerUnavailableError,
)

ErrorKind = Literal["invalid_argument", "model_missing", "server_unavailable", "overloaded",
                    "timeout", "server_error", "too_large"]

# Addresses gRPC and the SDK write into their messages: "ipv4:127.0.0.1:8001",
# "dns:///triton:8001", "10.0.0.5:8001", "[::1]:8001", "unix:/run/triton.sock".
ADDRESS = re.compile(r"\b(?:ipv4:|ipv6:|unix:|dns:)\S+?(?=:?[\s,;]|:?$)"
                     r"|\[[0-9a-fA-F:.]+\](?::\d+)?"
                     r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")

# HTTP status per kind: bad input found here (the contract's checks, the same functions the
# server runs) is 422; the SDK's or the server's INVALID_ARGUMENT is 400.
STATUS: dict[ErrorKind, int] = {"invalid_argument": 400, "model_missing": 503,
                                "server_unavailable": 503, "overloaded": 503, "timeout": 504,
                                "server_error": 502, "too_large": 413}


@dataclass(eq=False)  # not frozen: raising sets attributes on an exception
class ApiError(Exception):
    """A failure the page shows: its kind, the message as the contract or server wrote it, and
    the request field it is about (None when it is not about one)."""

    status: int
    error: ErrorKind
    message: str
    field: str | None = None

    def body(self) -> dict[str, str | None]:
        return {key: value for key, value in asdict(self).items() if key != "status"}

    def json_bytes(self) -> bytes:
        return json.dumps(self.body()).encode("utf-8")


def bad_input(field: str, message: str) -> ApiError:
    """Input the contract's checks reject before any call (HTTP 422)."""
    return ApiError(422, "invalid_argument", message, field)


def without_addresses(message: str, url: str | tuple[str, ...]) -> str:
    """`message` with the backend's addresses, and any other, left out."""
    for address in (url,) if isinstance(url, str) else url:
        message = message.replace(f" at {address}", "").replace(address, "<address>")
    return ADDRESS.sub("<address>", message)


def from_sdk(error: FusionRankError, model: str, url: str | tuple[str, ...]) -> ApiError:
    """The SDK's error as the page's: a missing model is told apart from a server down, and no
    message names `url` (the backend's address) or any other address."""
    kind: ErrorKind
    if isinstance(error, ModelNotServedError):
        kind, message = "model_missing", not_served_message(error)
    elif isinstance(error, InvalidRequestError):
        kind, message = "invalid_argument", str(error)
    elif isinstance(error, ServerOverloadedError):
        kind, message = "overloaded", str(error)
    elif isinstance(error, ServerUnavailableError):
        kind, message = "server_unavailable", str(error)
    elif isinstance(error, RequestTimeoutError):
        kind, message = "timeout", str(error)
    else:
        kind, message = "server_error", str(error)
    return ApiError(STATUS[kind], kind, without_addresses(message, url))
