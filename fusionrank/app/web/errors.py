"""What the web app answers when a call cannot be served: one JSON shape for every failure.

    {"error": "invalid_argument", "message": "K = 0 is out of range: ...", "field": "k"}

`error` is one of ERROR_KINDS; the page picks its state (banner, panel note, inline message)
from it, and shows `message` as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from fusionrank.client import (
    FusionRankError,
    InvalidRequestError,
    RequestTimeoutError,
    ServerOverloadedError,
    ServerUnavailableError,
)

ErrorKind = Literal["invalid_argument", "model_missing", "server_unavailable", "overloaded",
                    "timeout", "server_error"]

# HTTP status per kind: bad input found here (the contract's checks, the same functions the
# server runs) is 422; the SDK's or the server's INVALID_ARGUMENT is 400.
STATUS: dict[ErrorKind, int] = {"invalid_argument": 400, "model_missing": 503,
                                "server_unavailable": 503, "overloaded": 503, "timeout": 504,
                                "server_error": 502}


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


def bad_input(field: str, message: str) -> ApiError:
    """Input the contract's checks reject before any call (HTTP 422)."""
    return ApiError(422, "invalid_argument", message, field)


def is_model_missing(error: FusionRankError) -> bool:
    """Triton answers a request for a model it does not serve with 'unknown model'."""
    return "unknown model" in str(error).lower()


def from_sdk(error: FusionRankError, model: str, url: str) -> ApiError:
    """The SDK's error as the page's: a missing model is told apart from a server down."""
    kind: ErrorKind
    if is_model_missing(error):
        kind, message = "model_missing", f"the server at {url} serves no '{model}' model"
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
    return ApiError(STATUS[kind], kind, message)
