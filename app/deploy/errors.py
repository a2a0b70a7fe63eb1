"""How a rollout fails, and a Triton error as the one line an operator reads."""

from __future__ import annotations

from tritonclient.utils import InferenceServerException


class RolloutRefused(Exception):
    """A rollout that did not switch, for the reason given: the serving versions still serve."""


def first_line(error: Exception) -> str:
    """The first non-blank line of an error's message (Triton's carry Python tracebacks)."""
    text = error.message() if isinstance(error, InferenceServerException) else str(error)
    return next((line.strip() for line in str(text).splitlines() if line.strip()), repr(error))
