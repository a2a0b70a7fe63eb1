"""How long search is gone when tritonserver dies under `fusionrank serve`, which restarts it:
kill -9 the server, then call `search` through the SDK (its retries on) until it answers.

    .venv/bin/python benchmarks/serve_recovery.py build/homedepot_fused/model_repository \
        build/model_repository

Writes benchmarks/reports/serve_recovery.md and .json.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from search_benchmark import machine, save_report

from fusionrank.app.serve import Ports, child_process
from fusionrank.client import FusionRankClient, FusionRankError

CALL_TIMEOUT_S = 2.0
QUERY = "cordless drill"


@dataclass
class Serving:
    """A running `fusionrank serve`: its process, gRPC address and output lines so far."""

    process: subprocess.Popen
    url: str
    lines: list[str] = field(default_factory=list)

    def wait_for(self, text: str, timeout_s: float, since: int = 0) -> str:
        """The first output line (from line `since` on) containing `text`, once it comes."""
        deadline = time.monotonic() + timeout_s
        while True:
            line = next((line for line in self.lines[since:] if text in line), None)
            if line is not None:
                return line
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"no {text!r} from fusionrank serve:\n"
                                   + "".join(self.lines)[-3000:])
            time.sleep(0.2)


@contextmanager
def serving(repository: Path, *options: str) -> Iterator[Serving]:
    """`fusionrank serve` on free loopback ports (no web page), once it is ready."""
    ports = Ports.free()
    process = subprocess.Popen(
        [sys.executable, "-m", "fusionrank.app.cli", "serve", "--repository", str(repository),
         "--grpc-port", str(ports.grpc), "--http-port", str(ports.http),
         "--metrics-port", str(ports.metrics), "--no-web", *options],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    served = Serving(process, f"127.0.0.1:{ports.grpc}")
    threading.Thread(target=lambda: served.lines.extend(process.stdout), daemon=True).start()
    try:
        served.wait_for("Ctrl-C stops", 300)
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def recovery(repository: Path) -> dict:
    with serving(repository) as served, \
            FusionRankClient(served.url, timeout_s=CALL_TIMEOUT_S) as client:
        client.search(QUERY)
        killed = time.monotonic()
        os.kill(child_process(served.process.pid, "tritonserver"), signal.SIGKILL)
        failed = 0
        while time.monotonic() - killed < 300:
            try:
                client.search(QUERY)
                break
            except FusionRankError:
                failed += 1
        back = time.monotonic() - killed
    return {"repository": str(repository), "seconds_without_search": round(back, 1),
            "failed_calls": failed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repositories", type=Path, nargs="+")
    args = parser.parse_args()
    results = [recovery(repository) for repository in args.repositories]
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": "python " + " ".join(sys.argv), "machine": machine(),
              "call_timeout_s": CALL_TIMEOUT_S, "results": results}
    rows = "\n".join(f"| `{r['repository']}` | {r['seconds_without_search']} | "
                     f"{r['failed_calls']} |" for r in results)
    markdown = f"""# Search after tritonserver dies under `fusionrank serve`

- Command: `{report['command']}`
- Machine: {report['machine']}
- Date: {report['date']}
- `fusionrank serve` on free loopback ports; the tritonserver it runs is killed (SIGKILL) and
  serve restarts it (after a 1 s pause); one caller keeps calling `search` through the SDK,
  each call with a {CALL_TIMEOUT_S:.0f} s deadline and the SDK's retries (4 tries, back-off
  from 50 ms), until an answer comes.

| repository | seconds without search | calls that failed meanwhile |
| --- | --- | --- |
{rows}

The time is the restart: the server's start and every model's load (the Home Depot search
model reads its title features saved at build and builds its features graph: about 1 s a copy,
benchmarks/reports/ranker_load.md).
"""
    save_report("serve_recovery", report, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
