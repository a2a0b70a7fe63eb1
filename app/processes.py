"""The model processes (Python-backend stubs) of one tritonserver, found wherever they are, and
the cleanup after that server died.

A stub's command line names the tritonserver that started it and its shared-memory file
(`fusionrank.model_repository.stub_process`), so a stub re-parented to PID 1 after its server
was killed is still tied to that server, and a cleanup touches only what one server left: other
servers run on the same machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from fusionrank.app.serve import children
from fusionrank.model_repository.stub_process import SHM_FOLDER, StubArgs, remove_region

GONE_WITHIN_S = 5.0  # a SIGKILLed process is gone (or a zombie) well within this


@dataclass(frozen=True)
class Stub:
    pid: int
    ppid: int
    state: str  # a psutil.STATUS_*; STATUS_ZOMBIE: exited, not yet waited for by its parent
    args: StubArgs

    @property
    def zombie(self) -> bool:
        return self.state == psutil.STATUS_ZOMBIE


def process_state(pid: int) -> tuple[str, int] | None:
    """(psutil status, parent pid) of a process, None once it is gone."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            return process.status(), process.ppid()
    except psutil.NoSuchProcess:
        return None


def running(pid: int) -> bool:
    """Whether process `pid` still runs: neither gone nor a zombie."""
    state = process_state(pid)
    return state is not None and state[0] != psutil.STATUS_ZOMBIE


def stub_args(pid: int) -> StubArgs | None:
    """The stub identity of a live process; None for another program, a zombie, or a process
    already gone."""
    try:
        return StubArgs.parse(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
        return None


def stubs(server_pid: int | None = None) -> list[Stub]:
    """The live stubs on this machine, or those the tritonserver of pid `server_pid` started
    (its children, or orphans it left). A zombie has no command line: see `zombies`."""
    found = []
    for process in psutil.process_iter(["cmdline", "ppid", "status"]):
        # process_iter fills in None for what it may not read (another user's, a zombie's).
        args = StubArgs.parse(process.info["cmdline"] or [])
        if args and (server_pid is None or args.server_pid == server_pid):
            found.append(Stub(process.pid, process.info["ppid"], process.info["status"], args))
    return found


def zombies(parent: int) -> list[int]:
    """The zombie children of `parent`."""
    return [pid for pid, _, status in children(parent) if status == psutil.STATUS_ZOMBIE]


def kill_and_wait(pids: list[int], timeout_s: float = GONE_WITHIN_S) -> list[int]:
    """SIGKILL each process and wait (bounded) until it is gone or a zombie; the pids that were
    still running at the deadline."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # (another user's)
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    left = list(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [pid for pid in left if running(pid)]
    return left


@dataclass
class Leftovers:
    """What a dead server left and the cleanup removed."""

    server_pid: int
    killed: list[int] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    still_running: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        text = (f"stopped {len(self.killed)} model process(es) {self.killed} and removed "
                f"{len(self.regions)} shared-memory file(s) left by tritonserver "
                f"{self.server_pid}")
        if self.still_running:
            text += f"; still running: {self.still_running}"
        return text


def clean_after_server(server_pid: int, known_regions: list[str] = ()) -> Leftovers:
    """Stop the model processes the dead tritonserver `server_pid` left behind and remove their
    shared-memory files, with `known_regions` (files of its stubs seen earlier). Each model
    process watches its server and ends itself (`stub_process.watch_server`); this catches one
    that could not (stopped, or built before the watch)."""
    leftover = stubs(server_pid)
    running = kill_and_wait([stub.pid for stub in leftover])
    regions = dict.fromkeys([*(stub.args.region for stub in leftover), *known_regions])
    return Leftovers(server_pid, [stub.pid for stub in leftover],
                     [name for name in regions if remove_region(name)], running)



def clean_after_dead_servers() -> list[Leftovers]:
    """`clean_after_server` for every tritonserver that no longer runs and left model
    processes: a `serve` killed -9 takes its server with it, and a model process caught
    answering that server cannot end itself (it waits on the server holding its interpreter's
    lock, so its watch never runs) and would live on under PID 1."""
    dead = {stub.args.server_pid for stub in stubs() if not running(stub.args.server_pid)}
    return [clean_after_server(pid) for pid in sorted(dead)]


def configured_copies(repository: Path) -> dict[str, int]:
    """{model: model processes its config asks for} for each Python-backend model of a
    repository (the sum of its instance groups' counts)."""
    from fusionrank.model_repository.config import read_config

    copies = {}
    for path in sorted(Path(repository).glob("*/config.pbtxt")):
        config = read_config(repository, path.parent.name)
        if config.backend == "python":
            copies[config.name or path.parent.name] = sum(
                group.count or 1 for group in config.instance_group) or 1
    return copies


@dataclass
class Census:
    """The model processes of one serving tritonserver and what earlier ones left."""

    live: dict[str, int]  # model → live model processes of the server
    zombies: int  # the server's zombie children
    orphans: int  # live model processes of the servers that died before it
    stale_regions: int  # shared-memory files of those seen that no live model process uses
    rss_mib: float  # resident memory of the server's live model processes


def census(server_pid: int, earlier_servers: list[int], seen_regions: set[str]) -> Census:
    """Counts for a leak check: `seen_regions` gathers the shared-memory files of the model
    processes seen so far (this call adds the current ones); a file among them still in
    /dev/shm without a live model process is stale."""
    current = [stub for stub in stubs(server_pid) if not stub.zombie]
    seen_regions.update(stub.args.region for stub in current)
    live: dict[str, int] = {}
    for stub in current:
        live[stub.args.model] = live.get(stub.args.model, 0) + 1
    in_use = {stub.args.region for stub in current}
    stale = [name for name in seen_regions
             if name not in in_use and (SHM_FOLDER / name).exists()]
    return Census(live, len(zombies(server_pid)),
                  sum(len(stubs(pid)) for pid in earlier_servers), len(stale),
                  round(sum(rss_mib(stub.pid) for stub in current), 1))


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid` in MiB; 0 once it is gone."""
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.NoSuchProcess:
        return 0.0
