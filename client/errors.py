"""Errors of the client SDK: each says what went wrong and, where it can, what to do."""

from __future__ import annotations

import re


class FusionRankError(Exception):
    """Any failure of a fusionrank call."""


class InvalidRequestError(FusionRankError, ValueError):
    """The request breaks the contract (rejected locally, or INVALID_ARGUMENT from the server)."""


class ServerUnavailableError(FusionRankError):
    """No server answered at the address, or it is not ready."""


class RequestTimeoutError(FusionRankError, TimeoutError):
    """The server did not answer within the call's timeout."""


class ServerOverloadedError(FusionRankError):
    """The server refused the request at once because it is saturated (a model's queue is
    full, or the request waited longer than the queue allows): try again later, or elsewhere."""


class ModelNotServedError(FusionRankError):
    """The server answers but serves no model of this name (its repository was built without
    it, or the model was unloaded). Not retried: asking again gets the same answer."""

    def __init__(self, model: str, where: str):
        super().__init__(f"{where} serves no '{model}' model")
        self.model = model


# What Triton says when a model's queue policy refuses a request (gRPC UNAVAILABLE).
OVERLOAD_MESSAGES = ("Exceeds maximum queue size", "Request timeout expired")


class ModelProcessError(ServerUnavailableError):
    """A model's process (its Python-backend stub) died under the request: nothing was served
    and, calls being reads, trying again is safe; `fusionrank serve` replaces the process."""


# What Triton 2.51's Python backend answers (INTERNAL) for a request given to a model instance
# whose stub process is gone: "Stub process 'ranker_0_1' is not healthy." (Triton does not
# restart it; app/stub_watch.py reloads the model.)
DEAD_PROCESS_MESSAGES = ("Stub process", "Failed to obtain the health mutex")

# Triton 2.51's NOT_FOUND for a model it does not serve:
# "Request for unknown model: 'sentiment' is not found".
UNKNOWN_MODEL = re.compile(r"unknown model: '([^']+)'")


def from_triton(error: Exception, url: str) -> FusionRankError:
    """Translate tritonclient's InferenceServerException by its gRPC status."""
    status = str(getattr(error, "status", lambda: "")() or "")
    message = getattr(error, "message", lambda: str(error))() or str(error)
    if "INVALID_ARGUMENT" in status:
        return InvalidRequestError(message)
    if "DEADLINE_EXCEEDED" in status:
        return RequestTimeoutError(f"no answer from {url} in time: {message}")
    if "UNAVAILABLE" in status and any(m in message for m in OVERLOAD_MESSAGES):
        return ServerOverloadedError(f"{url} is overloaded and refused the request: {message}")
    if "UNAVAILABLE" in status:
        return ServerUnavailableError(f"cannot reach a Triton server at {url}: {message}")
    if "NOT_FOUND" in status and (unknown := UNKNOWN_MODEL.search(message)):
        return ModelNotServedError(unknown.group(1), f"the server at {url}")
    if "INTERNAL" in status and any(m in message for m in DEAD_PROCESS_MESSAGES):
        return ModelProcessError(f"a model process of {url} died under the request: {message}")
    return FusionRankError(f"{status or 'error'} from {url}: {message}")
