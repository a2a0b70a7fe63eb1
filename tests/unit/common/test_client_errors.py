"""The SDK's reading of Triton's errors: which failures a call may safely try again."""

from __future__ import annotations

import random

from tritonclient.utils import InferenceServerException

from fusionrank.client import FusionRankError, InvalidRequestError, ModelProcessError
from fusionrank.client.errors import from_triton
from fusionrank.client.retry import Attempts, RetryPolicy

URL = "127.0.0.1:8001"


def error(status: str, message: str) -> FusionRankError:
    return from_triton(InferenceServerException(message, status=status), URL)


def retried(failure: FusionRankError) -> bool:
    attempts = Attempts(RetryPolicy(attempts=4), 1, 0, 10.0, random.Random(0))
    return attempts.backoff_after(failure) is not None


def test_a_dead_model_process_is_retried():
    # What Triton 2.51 answers for a request given to an instance whose stub was killed.
    failure = error("StatusCode.INTERNAL",
                    "in ensemble 'search', Stub process 'ranker_0_1' is not healthy.")
    assert isinstance(failure, ModelProcessError)
    assert "ranker_0_1" in str(failure)
    assert retried(failure)


def test_other_internal_errors_and_bad_input_are_not():
    internal = error("StatusCode.INTERNAL", "Failed to process the request(s): KeyError: 'K'")
    assert type(internal) is FusionRankError and not retried(internal)
    invalid = error("StatusCode.INVALID_ARGUMENT", "K = 0 is out of range")
    assert isinstance(invalid, InvalidRequestError) and not retried(invalid)
