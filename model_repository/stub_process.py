"""What a Python-backend model process (Triton's stub) is, read from its own command line, and
the watchdog that ends it when its server is gone.

Triton 2.51's python backend starts each stub as (stub_launcher.cc):

    triton_python_backend_stub MODEL_PY SHM_REGION DEFAULT_BYTES GROWTH_BYTES SERVER_PID
        BACKEND_DIR IPC_HANDLE INSTANCE_NAME RUNTIME_MODELDIR

SHM_REGION names its shared-memory file, /dev/shm/SHM_REGION; SERVER_PID is the tritonserver
that started it. Both are what a cleanup needs: they tie a process, or a file left behind, to
one server among the several that may run on a machine.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SHM_FOLDER = Path("/dev/shm")
REGION_PREFIX = "triton_python_backend_shm_region_"
STUB_NAME = "triton_python_backend_stub"
WATCH_INTERVAL_S = 0.2  # the stub's own check (kill(SERVER_PID, 0)) runs every 0.3 s


@dataclass(frozen=True)
class StubArgs:
    """A stub's identity, from its argv (see the module's doc)."""

    model: str  # the model's folder name: MODEL_PY is <repository>/<model>/<version>/model.py
    region: str  # its shared-memory file's name in /dev/shm
    server_pid: int
    instance: str  # Triton's instance name, e.g. search_steps_0_1

    @classmethod
    def parse(cls, argv: list[str]) -> StubArgs | None:
        """None where `argv` is not a stub's (another program, or a zombie's empty one)."""
        if len(argv) < 9 or Path(argv[0]).name != STUB_NAME \
                or not argv[2].startswith(REGION_PREFIX) or not argv[5].isdigit():
            return None
        return cls(Path(argv[1]).parent.parent.name, argv[2], int(argv[5]), argv[8])

    @property
    def region_path(self) -> Path:
        return region_path(self.region)


def region_path(name: str) -> Path:
    """/dev/shm/NAME, for a stub region's name only: a cleanup never touches another file."""
    if not name.startswith(REGION_PREFIX) or "/" in name or name in (".", ".."):
        raise ValueError(f"{name!r} is not a python-backend shared-memory region's name")
    return SHM_FOLDER / name


def remove_region(name: str) -> bool:
    """Unlink /dev/shm/NAME (processes that map it keep their mapping); True if it was there."""
    try:
        region_path(name).unlink()
        return True
    except FileNotFoundError:
        return False


def own_args() -> StubArgs | None:
    """This process's stub identity; None outside a stub (the in-process runner, tests)."""
    try:
        argv = Path("/proc/self/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return None
    return StubArgs.parse(argv)


def watch_server(interval_s: float = WATCH_INTERVAL_S) -> threading.Thread | None:
    """In a stub: a daemon thread that, once the stub's tritonserver is gone (the stub was
    re-parented: os.getppid() is no longer SERVER_PID), removes the stub's shared-memory file
    and exits the process at once. Without it, a stub busy when its server was killed -9 lives
    on under PID 1 (holding its model's memory) and leaves its /dev/shm file behind.

    A parent-death signal (PR_SET_PDEATHSIG) would not do: Linux sends it when the THREAD that
    forked the stub ends, and Triton forks stubs from its model-loading threads, which end after
    each load. None where this process is not a stub."""
    args = own_args()
    if args is None or os.getppid() != args.server_pid:
        return None

    def watch() -> None:
        while os.getppid() == args.server_pid:
            time.sleep(interval_s)
        remove_region(args.region)
        os._exit(1)  # no finalizers: the server they would talk to is gone

    thread = threading.Thread(target=watch, name="server-watch", daemon=True)
    thread.start()
    return thread
