"""Keeping a tritonserver up: `fusionrank serve` (one server, or each of `--replicas N`) waits on
it and starts it again when it exits by itself (a crash, a kill), a bounded number of times in a
row, cleaning what the dead one left first."""

from __future__ import annotations

import sys
import threading
import time

MAX_RESTARTS = 3  # restarts of a crashed tritonserver in a row before `serve` gives up
STEADY_S = 600  # a server that ran this long before it exited starts a new count
RESTART_PAUSE_S = 1.0  # times the restart's number: 1 s, 2 s, 3 s


def clean_after_dead_server(pid: int, name: str = "fusionrank serve") -> None:
    """Stop the model processes a dead tritonserver left and remove their shared-memory files
    (each normally ends itself: `stub_process.watch_server`), before a restart loads new ones."""
    from fusionrank.app.processes import clean_after_server

    leftovers = clean_after_server(pid)
    if leftovers.killed or leftovers.regions or leftovers.still_running:
        print(f"{name}: {leftovers}", file=sys.stderr, flush=True)


def keep_serving(server, max_restarts: int, name: str = "fusionrank serve",
                 stopping: threading.Event | None = None) -> int:
    """Wait on the running tritonserver; when it exits by itself (a crash, a kill), start it
    again, up to `max_restarts` times in a row (a run of STEADY_S resets the count), then return
    1, having said so. With `stopping`: return 0 once it is set (the server was stopped on
    purpose, not to be started again)."""
    restarts = 0
    while True:
        started = time.monotonic()
        code = server.process.wait()
        if stopping is not None and stopping.is_set():
            return 0
        clean_after_dead_server(server.process.pid, name)
        if time.monotonic() - started >= STEADY_S:
            restarts = 0
        if restarts >= max_restarts:
            print(f"{name}: tritonserver exited with code {code} after {restarts} "
                  "restart(s) in a row; giving up (see its log above)", file=sys.stderr,
                  flush=True)
            return 1
        restarts += 1
        print(f"{name}: tritonserver exited with code {code}; restarting "
              f"({restarts} of {max_restarts})", file=sys.stderr, flush=True)
        time.sleep(RESTART_PAUSE_S * restarts)
        if stopping is not None and stopping.is_set():
            return 0
        server.start()
        print(f"{name}: serving again on gRPC {server.grpc_url}", file=sys.stderr, flush=True)
