"""A `fusionrank` command run as the shopper's terminal would: a subprocess whose output is read
as it comes, waited on until it prints a line saying it is ready (bounded), killed if a test
leaves it running."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

FUSIONRANK = [sys.executable, "-m", "fusionrank.app.cli"]
READY_TIMEOUT_S = 120.0


@dataclass
class RunningCommand:
    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "".join(self.lines)

    def read(self) -> None:
        assert self.process.stdout is not None
        self.lines.extend(self.process.stdout)

    def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            assert self.process.poll() is None, f"exited before printing {text!r}:\n" \
                                                f"{self.output()}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout_s:.0f} s:\n" \
                                                f"{self.output()}"
            time.sleep(0.1)


@contextmanager
def fusionrank_process(*args: str, ready: str,
                       timeout_s: float = READY_TIMEOUT_S) -> Iterator[RunningCommand]:
    """`fusionrank ARGS...` started, and running once it printed `ready`."""
    process = subprocess.Popen([*FUSIONRANK, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    command = RunningCommand(process)
    reader = threading.Thread(target=command.read, daemon=True)
    reader.start()
    try:
        command.wait_for(ready, timeout_s)
        yield command
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=10)
