"""Balancing, retries and fail-over of the SDK's calls. Given several addresses (replicas),
the calls take turns among them (round robin). Every fusionrank call is a read (search,
recommend, sentiment), so one that met an unreachable or overloaded server, or a model process
that died under it (ModelProcessError), is tried again, on the next address, after a capped
exponential back-off with jitter, for as long as the call's deadline (`timeout_s`) leaves time;
and the address that failed is left out of the turns for EJECT_S, so the calls after it go
straight to the replicas that answer (then a call tries it again). A server
that `fusionrank serve` restarts (about 5 s) is thus waited for by a call with a 10 s deadline
instead of failing it. Bad input (INVALID_ARGUMENT), a model the server does not serve and a
spent deadline are never retried, and no wait runs past the deadline.

    with FusionRankClient(["10.0.0.5:8001", "10.0.0.6:8001"], timeout_s=2) as client: ...
    FusionRankClient(url, retry=NEVER_RETRY)                 # never retry: see every failure
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

from fusionrank.client.errors import (
    FusionRankError,
    RequestTimeoutError,
    ServerOverloadedError,
    ServerUnavailableError,
    from_triton,
)

RETRYABLE = (ServerUnavailableError, ServerOverloadedError)  # ModelProcessError is the former
Client = TypeVar("Client")
Clock = Callable[[], float]

# A retry is only worth making if the try itself still has this long before the deadline: the
# last back-off is shortened to leave it (a refused connection fails in about a millisecond).
LAST_TRY_S = 0.05
# How long an address that failed is left out of the turns: while a replica is down (a restart
# takes 5-20 s) about one call in EJECT_S tries it and is retried elsewhere, and a replica that
# is back takes its turns again within EJECT_S.
EJECT_S = 2.0


@dataclass(frozen=True)
class RetryPolicy:
    """How a call that failed in a retryable way is tried again.

    The wait before retry n is min(max_backoff_s, first_backoff_s × multiplier^n), shortened
    by a random share of up to `jitter` (so callers that failed together do not come back
    together). `attempts=None` (the default) retries until the call's deadline; a number caps
    the tries, and 1 never retries."""

    attempts: int | None = None  # tries in all, across the addresses; None: until the deadline
    first_backoff_s: float = 0.05
    max_backoff_s: float = 0.5  # a restarted server is found at most this late
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be at least 1 (or None: until the deadline), "
                             f"not {self.attempts}")
        if not 0 < self.first_backoff_s <= self.max_backoff_s:
            raise ValueError(f"first_backoff_s must be above 0 and at most max_backoff_s "
                             f"({self.max_backoff_s}), not {self.first_backoff_s}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, not {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter}")

    def allows(self, tries: int) -> bool:
        """Whether a call that has made `tries` tries may make another (deadline aside)."""
        return self.attempts is None or tries < self.attempts

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number `retry` (0 = the first retry)."""
        # The exponent is bounded so that a long retry series never overflows a float.
        full = min(self.max_backoff_s, self.first_backoff_s * self.multiplier ** min(retry, 64))
        return full * (1.0 - self.jitter * rng.random())


DEFAULT_RETRY = RetryPolicy()
NEVER_RETRY = RetryPolicy(attempts=1)

# gRPC's own reconnection back-off (1 s growing 1.6× to 120 s) would keep a channel failing
# fast for up to 4 s after a restarted server is back; capped like the retries' back-off, the
# channel is reconnected by the time a retry comes. The rest are tritonclient's defaults, which
# passing any channel argument replaces.
_KEEPALIVE = KeepAliveOptions()
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.keepalive_time_ms", _KEEPALIVE.keepalive_time_ms),
    ("grpc.keepalive_timeout_ms", _KEEPALIVE.keepalive_timeout_ms),
    ("grpc.keepalive_permit_without_calls", _KEEPALIVE.keepalive_permit_without_calls),
    ("grpc.http2.max_pings_without_data", _KEEPALIVE.http2_max_pings_without_data),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


class Replicas(Generic[Client]):
    """A client's server addresses, a tritonclient client for each, whose turn comes next, and
    which are left out for now (they failed less than EJECT_S ago). `current`: the address
    that answered last."""

    def __init__(self, url: str | Sequence[str], connect: Callable[..., Client],
                 retry: RetryPolicy, timeout_s: float, clock: Clock = time.monotonic):
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("at least one server address is needed")
        self.clients = [connect(u, channel_args=CHANNEL_ARGS) for u in self.urls]
        self.retry, self.timeout_s, self.clock = retry, timeout_s, clock
        self.current = 0
        self._turns = itertools.count()  # next() is atomic: threads sharing a client take turns
        self._out_until = [0.0] * len(self.urls)
        self._rng = random.Random()

    def attempts(self, retry: RetryPolicy | None = None,
                 timeout_s: float | None = None) -> Attempts:
        """A new call's course, starting at the address whose turn it is among those not left
        out (the one back soonest when all are); `retry` and `timeout_s` replace the client's
        own for this call."""
        turn, now = next(self._turns), self.clock()
        serving = [a for a, until in enumerate(self._out_until) if until <= now]
        first = serving[turn % len(serving)] if serving else self.following(-1)
        return Attempts(retry or self.retry, len(self.urls), first,
                        self.timeout_s if timeout_s is None else timeout_s, self._rng,
                        self.clock, self.following)

    def following(self, address: int) -> int:
        """The first address after `address` (round the list) that is not left out; the one
        back soonest when all are."""
        count, now = len(self.urls), self.clock()
        order = [(address + step) % count for step in range(1, count + 1)]
        for candidate in order:
            if self._out_until[candidate] <= now:
                return candidate
        return min(order, key=self._out_until.__getitem__)

    def wait_after(self, attempts: Attempts, error: Exception) -> float:
        """After a try that failed with tritonclient's `error`: how long to wait before the next
        (which goes to the next address); raises the call's FusionRankError instead when it is
        not worth another. The sync and asyncio clients' call loops share it."""
        failure = from_triton(error, self.urls[attempts.address])
        if isinstance(failure, RETRYABLE) and len(self.urls) > 1:
            self._out_until[attempts.address] = self.clock() + EJECT_S
        wait = attempts.backoff_after(failure)
        if wait is None:
            raise failure
        return wait


class Attempts:
    """One call's course: which address each try goes to, how long it may take, and whether
    a failure is worth another try (and after how long). `clock` is time.monotonic but in
    tests of the arithmetic."""

    def __init__(self, policy: RetryPolicy, count: int, first: int, timeout_s: float,
                 rng: random.Random, clock: Clock = time.monotonic,
                 following: Callable[[int], int] | None = None):
        self.policy, self.count, self.rng, self.clock = policy, count, rng, clock
        self.deadline = clock() + timeout_s
        self.tries, self.address = 0, first
        # where a retry goes: the next address round the list, or the Replicas' choice
        self.following = following or (lambda address: (address + 1) % count)

    def remaining_s(self) -> float:
        left = self.deadline - self.clock()
        if left <= 0:
            raise RequestTimeoutError("the call's deadline passed before the server answered")
        return left

    def backoff_after(self, failure: FusionRankError) -> float | None:
        """The wait before trying again (on the next address), or None to give up: the
        failure is not retryable, the policy's tries are spent, or the deadline leaves no
        time for another try after the wait (the last wait is shortened to leave one)."""
        self.tries += 1
        if not isinstance(failure, RETRYABLE) or not self.policy.allows(self.tries):
            return None
        wait = self.policy.backoff_s(self.tries - 1, self.rng)
        wait = min(wait, self.deadline - self.clock() - LAST_TRY_S)
        if wait < 0:
            return None
        self.address = self.following(self.address)
        return wait
