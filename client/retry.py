"""Retries and fail-over of the SDK's calls: every fusionrank call is a read (search, recommend,
sentiment), so one that met an unreachable or overloaded server, or a model process that died
under it (ModelProcessError), is tried again, on the next address, after a bounded exponential
back-off with jitter, within the caller's deadline.
Bad input (INVALID_ARGUMENT) and a spent deadline are never retried.

    with FusionRankClient(["10.0.0.5:8001", "10.0.0.6:8001"], timeout_s=2) as client: ...
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from fusionrank.client.errors import (
    FusionRankError,
    RequestTimeoutError,
    ServerOverloadedError,
    ServerUnavailableError,
    from_triton,
)

RETRYABLE = (ServerUnavailableError, ServerOverloadedError)
Client = TypeVar("Client")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # tries in all, across the addresses; 1 = never retry
    first_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0
    jitter: float = 0.5  # each back-off is shortened by a random share of up to this much

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number `retry` (0 = the first retry)."""
        full = min(self.max_backoff_s, self.first_backoff_s * self.multiplier ** retry)
        return full * (1.0 - self.jitter * rng.random())


DEFAULT_RETRY = RetryPolicy()


class Replicas(Generic[Client]):
    """A client's server addresses, a tritonclient client for each, and the one that answered
    last (where the next call goes first)."""

    def __init__(self, url: str | Sequence[str], connect: Callable[[str], Client],
                 retry: RetryPolicy, timeout_s: float):
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("at least one server address is needed")
        self.clients = [connect(u) for u in self.urls]
        self.retry, self.timeout_s = retry, timeout_s
        self.current = 0
        self._rng = random.Random()

    def attempts(self) -> Attempts:
        """A new call's course, starting where the last call was answered."""
        return Attempts(self.retry, len(self.urls), self.current, self.timeout_s, self._rng)

    def wait_after(self, attempts: Attempts, error: Exception) -> float:
        """After a try that failed with tritonclient's `error`: how long to wait before the next
        (which goes to the next address); raises the call's FusionRankError instead when it is
        not worth another. The sync and asyncio clients' call loops share it."""
        failure = from_triton(error, self.urls[attempts.address])
        wait = attempts.backoff_after(failure)
        if wait is None:
            raise failure
        return wait


class Attempts:
    """One call's course: which address each try goes to, how long it may take, and whether
    a failure is worth another try (and after how long)."""

    def __init__(self, policy: RetryPolicy, count: int, first: int, timeout_s: float,
                 rng: random.Random):
        self.policy, self.count, self.rng = policy, count, rng
        self.deadline = time.monotonic() + timeout_s
        self.tries, self.address = 0, first

    def remaining_s(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RequestTimeoutError("the call's deadline passed before the server answered")
        return left

    def backoff_after(self, failure: FusionRankError) -> float | None:
        """The wait before trying again (on the next address), or None to give up."""
        self.tries += 1
        if not isinstance(failure, RETRYABLE) or self.tries >= self.policy.attempts:
            return None
        wait = self.policy.backoff_s(self.tries - 1, self.rng)
        if self.deadline - time.monotonic() <= wait:
            return None
        self.address = (self.address + 1) % self.count
        return wait
