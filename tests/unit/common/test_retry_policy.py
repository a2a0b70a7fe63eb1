"""The SDK's retry arithmetic (client/retry.py) on a fake clock: the default policy keeps trying
an unavailable server until the call's deadline and never past it, a capped number of tries
is honoured (1 = never retry), and what is not worth another try is given up at once."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from fusionrank.client import (
    FusionRankError,
    InvalidRequestError,
    ModelNotServedError,
    ModelProcessError,
    RequestTimeoutError,
    RetryPolicy,
    ServerOverloadedError,
    ServerUnavailableError,
)
from fusionrank.client.retry import EJECT_S, LAST_TRY_S, Attempts, Replicas

TRY_S = 0.002  # what a try against a refused connection costs here


@dataclass
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Course:
    tries: int  # tries made in all
    answered: bool
    waits: list[float]
    ended: float  # on the fake clock, from the call's start


def run_call(policy: RetryPolicy, timeout_s: float, down_until_s: float = float("inf"),
             failure: FusionRankError | None = None, seed: int = 0, addresses: int = 1) -> Course:
    """One call's course, as the SDK's call loop runs it, against a server that fails each try
    with `failure` (ServerUnavailableError by default) until `down_until_s` after the call's
    start, then answers."""
    clock = FakeClock()
    start = clock.now
    attempts = Attempts(policy, addresses, 0, timeout_s, random.Random(seed), clock)
    waits: list[float] = []
    while True:
        attempts.remaining_s()  # raises RequestTimeoutError as the SDK's loop does
        clock.now += TRY_S
        if clock.now - start >= down_until_s:
            return Course(attempts.tries + 1, True, waits, clock.now - start)
        wait = attempts.backoff_after(failure or ServerUnavailableError("connection refused"))
        if wait is None:
            return Course(attempts.tries, False, waits, clock.now - start)
        assert wait >= 0
        waits.append(wait)
        clock.now += wait


def test_the_default_policy_waits_out_a_5_s_restart_within_a_10_s_deadline():
    for seed in range(20):
        course = run_call(RetryPolicy(), timeout_s=10.0, down_until_s=5.0, seed=seed)
        assert course.answered, seed
        # Found back at most one capped back-off (and a try) after the server is.
        assert 5.0 <= course.ended <= 5.0 + RetryPolicy().max_backoff_s + TRY_S
        assert course.tries > 4  # the old default gave up after 4


def test_retries_go_on_until_the_deadline_and_never_past_it():
    policy = RetryPolicy()
    for seed in range(20):
        course = run_call(policy, timeout_s=10.0, seed=seed)
        assert not course.answered
        assert course.ended <= 10.0  # the last try started before the deadline, none after
        assert course.ended > 10.0 - policy.max_backoff_s - LAST_TRY_S  # not given up early
        assert max(course.waits) <= policy.max_backoff_s


def test_the_back_off_doubles_from_the_first_wait_to_the_cap():
    policy = RetryPolicy(first_backoff_s=0.05, max_backoff_s=0.5, jitter=0.0)
    rng = random.Random(0)
    assert [policy.backoff_s(n, rng) for n in range(7)] == \
        pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5])
    assert policy.backoff_s(10_000, rng) == 0.5  # no overflow, however long the series


def test_jitter_shortens_each_wait_by_at_most_its_share():
    policy = RetryPolicy(first_backoff_s=0.4, max_backoff_s=0.4, jitter=0.5)
    waits = [policy.backoff_s(0, random.Random(seed)) for seed in range(200)]
    assert all(0.2 <= wait <= 0.4 for wait in waits)
    assert max(waits) - min(waits) > 0.15  # spread, so callers do not come back together


def test_a_cap_on_tries_is_kept_and_one_try_never_retries():
    assert run_call(RetryPolicy(attempts=4), timeout_s=10.0).tries == 4
    assert run_call(RetryPolicy(attempts=1), timeout_s=10.0) == Course(1, False, [], TRY_S)
    # A cap never stretches a call past its deadline either.
    long = run_call(RetryPolicy(attempts=1000, first_backoff_s=0.2, max_backoff_s=0.2,
                                jitter=0.0), timeout_s=1.0)
    assert long.tries < 10 and long.ended <= 1.0


@pytest.mark.parametrize("failure", [
    ServerOverloadedError("Exceeds maximum queue size"),
    ModelProcessError("Stub process 'search_steps_0_1' is not healthy."),
], ids=["overloaded", "model process died"])
def test_overload_and_a_dead_model_process_are_retried_until_the_deadline(failure):
    course = run_call(RetryPolicy(), timeout_s=3.0, failure=failure)
    assert course.tries > 4 and course.ended > 3.0 - RetryPolicy().max_backoff_s - LAST_TRY_S


@pytest.mark.parametrize("failure", [
    InvalidRequestError("K = 0 is out of range"),
    ModelNotServedError("sentiment", "the server at 127.0.0.1:8001"),
    RequestTimeoutError("no answer in time"),
    FusionRankError("StatusCode.INTERNAL from x: KeyError: 'K'"),
], ids=["bad input", "model not served", "timeout", "other"])
def test_what_another_try_cannot_mend_is_never_retried(failure):
    assert run_call(RetryPolicy(), timeout_s=10.0, failure=failure) == \
        Course(1, False, [], TRY_S)


def test_each_retry_goes_to_the_next_address():
    attempts = Attempts(RetryPolicy(), 3, 1, 10.0, random.Random(0), FakeClock())
    visited = [attempts.address]
    for _ in range(4):
        attempts.backoff_after(ServerUnavailableError("down"))
        visited.append(attempts.address)
    assert visited == [1, 2, 0, 1, 2]


@pytest.mark.parametrize(("settings", "named"), [
    ({"attempts": 0}, "attempts"), ({"first_backoff_s": 0.0}, "first_backoff_s"),
    ({"first_backoff_s": 2.0, "max_backoff_s": 1.0}, "first_backoff_s"),
    ({"multiplier": 0.5}, "multiplier"), ({"jitter": 1.5}, "jitter"),
])
def test_a_bad_policy_is_refused_naming_the_setting(settings, named):
    with pytest.raises(ValueError, match=named):
        RetryPolicy(**settings)


def replicas(count: int, clock: FakeClock) -> Replicas:
    # The addresses are never connected to: these tests check whose turn it is.
    return Replicas([f"10.0.0.{n}:8001" for n in range(count)], lambda url, **_: url,
                    RetryPolicy(), 10.0, clock)


def test_calls_take_turns_among_the_replicas():
    group = replicas(3, FakeClock())
    assert [group.attempts().address for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_a_replica_that_failed_is_left_out_until_it_may_be_back():
    clock = FakeClock()
    group = replicas(3, clock)
    call = group.attempts()  # address 0
    wait = group.wait_after(call, _unavailable())
    assert wait >= 0 and call.address == 1  # the retry goes to the next one
    clock.now += wait
    assert sorted(group.attempts().address for _ in range(4)) == [1, 1, 2, 2]  # 0 left out
    clock.now += EJECT_S
    assert sorted(group.attempts().address for _ in range(3)) == [0, 1, 2]  # 0 back in turn


def test_with_every_replica_left_out_the_one_back_soonest_is_tried():
    clock = FakeClock()
    group = replicas(2, clock)
    for _ in range(2):
        call = group.attempts()
        group.wait_after(call, _unavailable())
        clock.now += 0.1
    # address 0 failed first, so it is back first
    assert group.attempts().address == 0


def test_what_a_retry_cannot_mend_leaves_the_replica_in_turn():
    group = replicas(2, FakeClock())
    call = group.attempts()
    with pytest.raises(InvalidRequestError):
        group.wait_after(call, _invalid())
    assert [group.attempts().address for _ in range(2)] == [1, 0]


def _unavailable():
    from tritonclient.utils import InferenceServerException

    return InferenceServerException("failed to connect to all addresses",
                                    status="StatusCode.UNAVAILABLE")


def _invalid():
    from tritonclient.utils import InferenceServerException

    return InferenceServerException("QUERY: empty", status="StatusCode.INVALID_ARGUMENT")
