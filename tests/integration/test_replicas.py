"""`fusionrank serve --replicas 2` as a real process, with the SDK balancing across its replicas:
a replica killed with -9 under load at concurrency 8 fails no call and is brought back by
`serve`; `fusionrank deploy --rolling` switches both replicas to a new build under load with no
failed call, refuses while a replica is down (or rolls the others with --skip-down); ports in
use are refused before anything starts."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import tritonclient.grpc as grpcclient

from benchmarks.harness import ClosedLoop
from fusionrank.app.deploy.rolling import is_ready
from fusionrank.app.replicas import PORT_STEP, copy_repository, free_replica_ports, server_pid
from fusionrank.client import FusionRankClient
from tests.support.processes import FUSIONRANK, fusionrank_process

pytestmark = pytest.mark.server

CONCURRENCY = 8
QUERIES = ["ceiling fan", "teapot", "wool scarf", "garden tools", "cordless drill"]


@pytest.fixture(scope="module")
def replicas(served_repository, tmp_path_factory):
    """`fusionrank serve --replicas 2` on a copy of served_repository: (process, repository,
    the two gRPC addresses)."""
    folder = tmp_path_factory.mktemp("replicas")
    repository = folder / "model_repository"
    copy_repository(served_repository, repository)
    base = free_replica_ports(2).grpc
    with fusionrank_process("serve", "--repository", str(repository), "--replicas", "2",
                            "--no-web", "--grpc-port", str(base), "--http-port", str(base + 1),
                            "--metrics-port", str(base + 2), "--cache-mib", "0",
                            "--max-restarts", "10", ready="on 2 replicas") as process:
        yield process, repository, [f"127.0.0.1:{base}", f"127.0.0.1:{base + PORT_STEP}"]
        process.process.send_signal(signal.SIGTERM)
        process.process.wait(timeout=60)


def successes(url: str) -> int:
    """The searches the server at `url` has answered, once its count stops moving: Triton
    counts a request when it releases it, a little after the caller has its answer."""
    client = grpcclient.InferenceServerClient(url)
    try:
        last = None
        for _ in range(20):  # bounded: 20 × 0.25 s
            stats = client.get_inference_statistics("search", as_json=True)["model_stats"]
            count = sum(int(s["inference_stats"].get("success", {}).get("count", 0))
                        for s in stats)
            if count == last:
                return count
            last = count
            time.sleep(0.25)
        return last
    finally:
        client.close()


def back(url: str, repository: Path, killed: int) -> bool:
    """Whether the replica at `url` answers again, from a server other than `killed` that
    `serve` has recorded."""
    return is_ready(url) and server_pid(repository, url) != killed


def wait_until(condition, what: str, timeout_s: float = 120.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"{what} not within {timeout_s:.0f} s"
        time.sleep(0.2)
    return time.monotonic() - started


def searching(urls: list[str]) -> ClosedLoop:
    """CONCURRENCY callers in closed loops (benchmarks/harness.py), each a FusionRankClient over
    `urls` with the SDK's default retries; every call's failure is recorded."""
    turn = itertools.count()

    def caller(loop: ClosedLoop) -> None:
        with FusionRankClient(urls, timeout_s=20) as client:
            while loop.running:
                with loop.call():
                    client.search(QUERIES[next(turn) % len(QUERIES)], k=3)

    return ClosedLoop(CONCURRENCY, caller)


def outcome(load: ClosedLoop) -> tuple[list[str], int]:
    """(the failed calls' errors, how many calls were answered)."""
    failed = [c.error for c in load.calls if c.error]
    return failed, len(load.calls) - len(failed)


def test_calls_take_turns_across_the_replicas(replicas):
    _, _, urls = replicas
    before = [successes(u) for u in urls]
    with FusionRankClient(urls) as client:
        for turn in range(20):
            client.search(f"{QUERIES[turn % len(QUERIES)]} {turn}", k=2)
    served = [successes(u) - b for u, b in zip(urls, before, strict=True)]
    assert served == [10, 10], served


def test_a_replica_killed_under_load_fails_no_call_and_serve_brings_it_back(replicas):
    process, repository, urls = replicas
    victim = server_pid(repository, urls[1])
    with searching(urls) as load:
        time.sleep(2)
        os.kill(victim, signal.SIGKILL)
        recovered = wait_until(lambda: back(urls[1], repository, victim),
                               "the killed replica back")
        time.sleep(2)
    failed, answered = outcome(load)
    assert failed == [] and answered > 50, (failed[:3], answered)
    assert recovered < 60
    assert "restarting" in process.output()
    before = successes(urls[1])
    with FusionRankClient(urls) as client:
        for turn in range(6):
            client.search(f"lamp {turn}", k=1)
    assert successes(urls[1]) - before == 3  # back in turn


def test_a_rolling_deploy_switches_both_replicas_under_load(replicas, next_build):
    _, repository, urls = replicas
    with searching(urls) as load:
        time.sleep(1)
        result = subprocess.run([*FUSIONRANK, "deploy", "--rolling", "--repository",
                                 str(repository), "--source", str(next_build),
                                 "--drain-s", "1"], capture_output=True, text=True,
                                timeout=300)
        time.sleep(1)
    assert result.returncode == 0, result.stderr
    assert "rolling rollout switched" in result.stderr
    assert result.stderr.count(": switched in") == 2, result.stderr
    failed, answered = outcome(load)
    assert failed == [] and answered > 50, (failed[:3], answered)
    for url in urls:  # each replica now serves the new build's products
        with FusionRankClient(url) as client:
            assert client.search("compact cordless drill driver", k=1)[0].product_id == "N-DRILL"


def serves_next_build(url: str) -> bool:
    with FusionRankClient(url) as client:
        return client.search("compact cordless drill driver", k=1)[0].product_id == "N-DRILL"


def test_a_rolling_deploy_with_a_replica_down_is_refused_or_skips_it(replicas, served_repository,
                                                                      next_build):
    """Replica 1 killed (serve restarts it): a rolling deploy of the other build is refused
    and changes nothing; with --skip-down it switches replica 0 and reports replica 1."""
    _, repository, urls = replicas
    wait_until(lambda: all(is_ready(u) for u in urls), "both replicas ready")
    was_next = serves_next_build(urls[0])
    other = served_repository if was_next else next_build
    victim = server_pid(repository, urls[1])
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not is_ready(urls[1]), "replica 1 down", 10)
    refused = subprocess.run([*FUSIONRANK, "deploy", "--rolling", "--repository",
                              str(repository), "--source", str(other)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert f"{urls[1]} is down; nothing was changed" in refused.stderr
    assert serves_next_build(urls[0]) == was_next  # replica 0 untouched

    wait_until(lambda: back(urls[1], repository, victim), "replica 1 back")
    os.kill(server_pid(repository, urls[1]), signal.SIGKILL)
    wait_until(lambda: not is_ready(urls[1]), "replica 1 down", 10)
    skipped = subprocess.run([*FUSIONRANK, "deploy", "--rolling", "--skip-down",
                              "--repository", str(repository), "--source", str(other)],
                             capture_output=True, text=True, timeout=300)
    assert skipped.returncode == 0, skipped.stderr
    assert f"{urls[1]}: skipped: down" in skipped.stderr
    assert f"{urls[0]}: switched" in skipped.stderr
    assert serves_next_build(urls[0]) != was_next


def test_replica_ports_in_use_are_refused_before_anything_starts(served_repository):
    base = free_replica_ports(2).grpc
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + PORT_STEP))  # replica 1's gRPC port
        holder.listen()
        result = subprocess.run(
            [*FUSIONRANK, "serve", "--repository", str(served_repository), "--replicas", "2",
             "--no-web", "--grpc-port", str(base), "--http-port", str(base + 1),
             "--metrics-port", str(base + 2)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"replica 1: gRPC port {base + PORT_STEP} is in use" in result.stderr
    assert "nothing was started" in result.stderr
    assert not any("tritonserver" in p.name() and str(base) in " ".join(p.cmdline())
                   for p in psutil.process_iter(["name", "cmdline"]))
    bad = subprocess.run([*FUSIONRANK, "serve", "--repository", str(served_repository),
                          "--replicas", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--replicas must be at least 1" in bad.stderr
