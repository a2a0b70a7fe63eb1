"""The server's model processes: they load only what serving needs, and crashes (a model
process or tritonserver killed) leave no extra copy, zombie, orphan or shared-memory file."""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from fusionrank.app.processes import census, configured_copies, stubs
from fusionrank.app.serve import Ports, child_process, children
from fusionrank.app.stub_watch import STUB, StubWatch, live_stubs, stub_model
from tests.support.catalogue import running_server
from tests.support.processes import fusionrank_process, twin_load, write_twin_repository

pytestmark = pytest.mark.server


def test_no_model_process_loads_numba(triton_server):
    """bm25s imports numba wherever it is installed; the model processes block it
    (`triton_model.initialize`), so none maps its LLVM library."""
    if importlib.util.find_spec("numba") is None:
        pytest.skip("numba is not installed: nothing to keep out")
    stubs = {pid: stub_model(pid) for pid, name, state in children(triton_server.process.pid)
             if name == STUB and state != psutil.STATUS_ZOMBIE}
    assert "search_steps" in stubs.values(), stubs  # the model that imports bm25s
    for pid, model in stubs.items():
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "llvmlite" not in maps, f"the {model} model process (pid {pid}) loaded numba"


# --- leaks after crashes (issue 21, item 4) ---------------------------------------------------
# A tiny repository of its own (one Python model, `twin`, in two copies through the repository's
# shim), so each test can kill its processes several times: see tests/support/processes.py.

KILLS = 3
RELOAD_WITHIN_S = 60.0


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s"
        time.sleep(0.1)


def test_killed_model_processes_leave_no_copy_zombie_or_shared_memory(tmp_path):
    repository = write_twin_repository(tmp_path / "repository")
    copies = configured_copies(repository)
    assert copies == {"twin": 2}
    seen: set[str] = set()
    stop, answers, errors = threading.Event(), [], []
    with running_server(repository, tmp_path / "tritonserver.log") as server, \
            StubWatch(server, say=print) as watch:
        pid = server.process.pid
        before = census(pid, [], seen)
        assert (before.live, before.zombies, before.stale_regions) == (copies, 0, 0)
        callers = [threading.Thread(target=twin_load, args=(server.grpc_url, stop, answers,
                                                             errors)) for _ in range(4)]
        for caller in callers:
            caller.start()
        try:
            for kill in range(KILLS):
                victim = max(live_stubs(pid, "twin"))
                siblings = set(live_stubs(pid, "twin")) - {victim}
                os.kill(victim, signal.SIGKILL)
                wait_until(lambda n=kill: len(watch.reloads) > n, RELOAD_WITHIN_S, "reload")
                reload = watch.reloads[-1]
                assert reload.error is None and reload.dead_pids == [victim]
                # The replaced copy's healthy process was retired, not left beside the new one.
                assert set(reload.retired_pids) == siblings
                assert not {victim, *siblings} & set(live_stubs(pid, "twin"))
                after = census(pid, [], seen)
                assert after.live == copies, f"after kill {kill + 1}: {after}"
                assert after.zombies == 0, f"after kill {kill + 1}: {after}"
                assert after.stale_regions == 0, f"after kill {kill + 1}: {after}"
        finally:
            stop.set()
            for caller in callers:
                caller.join()
        assert answers and set(answers) == {3.0}
        assert len(seen) >= 2 + 2 * KILLS  # each reload started a new copy, with new files


def test_a_killed_server_leaves_no_model_process_or_shared_memory(tmp_path):
    repository = write_twin_repository(tmp_path / "repository", work_s=0.2)
    copies = configured_copies(repository)
    ports = Ports.free()
    seen: set[str] = set()
    dead_servers: list[int] = []
    with fusionrank_process("serve", "--repository", str(repository), "--no-web",
                            "--grpc-port", str(ports.grpc), "--http-port", str(ports.http),
                            "--metrics-port", str(ports.metrics),
                            ready="Ctrl-C stops") as serve:
        url = f"127.0.0.1:{ports.grpc}"
        stop, answers, errors = threading.Event(), [], []
        callers = [threading.Thread(target=twin_load, args=(url, stop, answers, errors))
                   for _ in range(4)]
        for caller in callers:
            caller.start()
        try:
            for kill in range(2):
                # The copies are busy (each request works 0.2 s) and answering before the kill.
                served = len(answers)
                wait_until(lambda n=served: len(answers) >= n + 4, 30, "answers before the kill")
                server = child_process(serve.process.pid, "tritonserver")
                first = census(server, dead_servers, seen)
                assert (first.live, first.orphans) == (copies, 0), first
                os.kill(server, signal.SIGKILL)
                dead_servers.append(server)
                wait_until(lambda n=kill: serve.output().count("serving again") > n, 120,
                           "restart")
                # Each model process of the dead server ended itself (or serve stopped it).
                wait_until(lambda old=server: not stubs(old), 10, "end of the old model processes")
                new = child_process(serve.process.pid, "tritonserver")
                after = census(new, dead_servers, seen)
                assert after.live == copies, after
                assert (after.orphans, after.zombies, after.stale_regions) == (0, 0, 0), after
            # The restarted server answers the same callers again.
            served = len(answers)
            wait_until(lambda n=served: len(answers) >= n + 4, 30, "answers after the restart")
        finally:
            stop.set()
            for caller in callers:
                caller.join()
        assert set(answers) == {3.0}
