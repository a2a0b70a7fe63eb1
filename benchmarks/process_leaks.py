"""What crashes leave behind under `fusionrank serve`: 5 model processes (Python-backend stubs)
killed one after the other (serve's watch reloads the model and retires the replaced copy),
then 3 kills of tritonserver (serve restarts it and stops what the dead one left), under light
load. After each, the model processes against the copies the configs ask for, zombies,
orphans (model processes of a dead server), stale /dev/shm files and model processes' RSS.

    .venv/bin/python -m benchmarks.process_leaks [REPOSITORY]

REPOSITORY defaults to build/model_repository once its fusionrank.json exists (waits up to
--wait-s for it), else a tiny one-model repository built under /tmp. Writes
benchmarks/reports/process_leaks.md and .json.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

from benchmarks.harness import ClosedLoop, FreshQueries, heading, save_report, stamp, table
from benchmarks.serve_recovery import Serving, searcher, serving
from fusionrank.app.processes import Census, census, configured_copies
from fusionrank.app.serve import child_process
from fusionrank.app.stub_watch import live_stubs
from fusionrank.client import FusionRankError
from tests.support.processes import twin_load, write_twin_repository

ROOT = Path(__file__).resolve().parent.parent
MODEL_KILLS, SERVER_KILLS = 5, 3
DEMO = ROOT / "build" / "model_repository"
CALLERS = 4


def repository_to_use(given: Path | None, wait_s: float) -> Path:
    if given is not None:
        return given
    deadline = time.monotonic() + wait_s
    while not (DEMO / "fusionrank.json").is_file() and time.monotonic() < deadline:
        time.sleep(10)
    if (DEMO / "fusionrank.json").is_file():
        return DEMO
    return write_twin_repository(Path("/tmp/process-leaks") / "repository", work_s=0.05)


def row(event: str, counts: Census, copies: dict[str, int]) -> dict:
    return {"after": event, "model_processes": sum(counts.live.values()),
            "configured_copies": sum(copies.values()),
            "extra_copies": {m: n - copies.get(m, 0) for m, n in counts.live.items()
                             if n != copies.get(m, 0)},
            "zombies": counts.zombies, "orphans": counts.orphans,
            "stale_shm_files": counts.stale_regions, "model_processes_rss_mib": counts.rss_mib}


def kills(served: Serving, copies: dict[str, int], victim_model: str) -> list[dict]:
    """The model-process kills, then the tritonserver kills; a census after each."""
    seen: set[str] = set()
    dead: list[int] = []
    server = child_process(served.process.pid, "tritonserver")
    rows = [row("start", census(server, dead, seen), copies)]
    for kill in range(MODEL_KILLS):
        seen_lines = len(served.lines)
        os.kill(max(live_stubs(server, victim_model)), signal.SIGKILL)
        served.wait_for(f"reloaded {victim_model}", 180, since=seen_lines)
        time.sleep(2)
        rows.append(row(f"model-process kill {kill + 1} ({victim_model})",
                        census(server, dead, seen), copies))
    for kill in range(SERVER_KILLS):
        seen_lines = len(served.lines)
        os.kill(server, signal.SIGKILL)
        dead.append(server)
        served.wait_for("serving again", 300, since=seen_lines)
        server = child_process(served.process.pid, "tritonserver")
        time.sleep(3)
        rows.append(row(f"tritonserver kill {kill + 1}", census(server, dead, seen), copies))
    return rows


def run(repository: Path) -> dict:
    copies = configured_copies(repository)
    victim_model = max(copies, key=lambda m: (m == "search_steps", copies[m]))
    answers: list = []  # the tiny repository's callers count their own answers and errors
    errors: list[str] = []
    with serving(repository) as served:
        if set(copies) == {"twin"}:
            def caller(loop: ClosedLoop) -> None:
                twin_load(served.url, loop.stopped, answers, errors)
        else:
            caller = searcher(served.url, FreshQueries("heart lantern"), timeout_s=10, k=5)
        with ClosedLoop(CALLERS, caller, failures=FusionRankError) as loop:
            rows = kills(served, copies, victim_model)
        said = [line.strip() for line in served.lines if "fusionrank serve:" in line]
    answers += [c for c in loop.calls if c.error is None]
    errors += [c.error_type for c in loop.calls if c.error is not None]
    return {"repository": str(repository), "configured_copies": copies,
            "killed_model": victim_model, "rows": rows, "calls_answered": len(answers),
            "calls_failed": len(errors), "errors": sorted(set(errors)), "serve_said": said}


def markdown(report: dict) -> str:
    result = report["result"]
    lines = table(["after", "model processes / configured", "extra", "zombies", "orphans",
                   "stale /dev/shm", "RSS MiB"],
                  [[r["after"], f"{r['model_processes']} / {r['configured_copies']}",
                    r["extra_copies"] or "-", r["zombies"], r["orphans"], r["stale_shm_files"],
                    f"{r['model_processes_rss_mib']:.0f}"] for r in result["rows"]])
    said = "\n".join(f"    {line}" for line in result["serve_said"])
    return heading("Leaks after crashes under `fusionrank serve`", report, f"""\
Repository: `{result['repository']}`, configured copies {result['configured_copies']}""", f"""\
{MODEL_KILLS} kills (SIGKILL) of a live model process of `{result['killed_model']}`, each
  once serve's watch has reloaded the model, then {SERVER_KILLS} kills of tritonserver, each
  once serve has restarted it; {CALLERS} callers without pause throughout. Counts 2-3 s after
  each: model processes of the serving tritonserver against the copies the configs ask for;
  zombies among its children; orphans: live model processes of the killed servers; stale
  shared-memory files: /dev/shm files of model processes seen during the run that no live one
  uses (files of other servers on the machine are not counted); RSS of the live ones.""", f"""\
Calls answered {result['calls_answered']}, failed {result['calls_failed']}
  (the tiny repository's callers do not retry, and pause 50 ms after a failure; retries
  are another item: this run counts leaks). Errors: {result['errors'] or '-'}""") + f"""
{lines}

What serve said:

{said}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repository", type=Path, nargs="?")
    parser.add_argument("--wait-s", type=float, default=0.0,
                        help="how long to wait for build/model_repository/fusionrank.json")
    args = parser.parse_args()
    repository = repository_to_use(args.repository, args.wait_s)
    report = {**stamp(), "result": run(repository)}
    save_report("process_leaks", report, markdown(report))
    final = report["result"]["rows"][-1]
    ok = final["model_processes"] == final["configured_copies"] and not (
        final["zombies"] or final["orphans"] or final["stale_shm_files"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
