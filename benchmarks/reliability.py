"""The reliability figures in one report, each with the command that measured it: issue 11's
(rollouts, faults, overload, bad input, a soak) and issue 21's operator safety
(benchmarks/reliability_operator.py: a section per defect, its probe, figure and tests).

    .venv/bin/python -m benchmarks.reliability

Reads the reports of the benchmarks that measure each part (run them first; each says its own
command and date): soak.json (the soak, with a catalogue rollout under load in the middle),
stub_recovery.json (a killed model process), serve_recovery.json (a killed tritonserver),
search_overload.json (bounded queues at 64 callers and above capacity), and runs the fuzz suite
(tests/integration/test_fuzz.py, a real server) itself to count its cases. Writes
benchmarks/reports/reliability.md and .json (`--out`: another folder).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from benchmarks import reliability_operator
from benchmarks.harness import REPORTS, heading, save_report, stamp, table

FUZZ_TESTS = "tests/integration/test_fuzz.py"
RECOVERY_TARGET_S = 10.0
MEMORY_GROWTH_TARGET = 5.0  # per cent, after warm-up


def source(name: str) -> dict:
    path = REPORTS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `python -m benchmarks.{name}` first")
    return json.loads(path.read_text())


def fuzz() -> dict:
    """The fuzz suite's outcome, counted from pytest's JUnit XML."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "fuzz.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   FUZZ_TESTS, f"--junitxml={xml}"]
        subprocess.run(command, check=False, capture_output=True)
        suite = ElementTree.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    return {"command": f"python -m pytest -q {FUZZ_TESTS}", **counts,
            "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]}


def collect(run_fuzz: bool) -> dict:
    soak, stub, server, overload = (source(n) for n in ("soak", "stub_recovery",
                                                          "serve_recovery", "search_overload"))
    rollout = soak["rollout"]
    with_retries = [r for r in stub["results"] if r["retries"]]
    return {
        **stamp(),
        "rollout": {"command": soak["command"], "date": soak["date"],
                    "outcome": rollout["outcome"], "models": rollout["models"],
                    "seconds": rollout.get("seconds"),
                    "calls_during": soak["calls_during_rollout"],
                    "failed_during": soak["failures_during_rollout"],
                    "concurrency": soak["concurrency"]},
        "model_process_killed": {"command": stub["command"], "date": stub["date"],
                                 "retry_policy": stub["retry_policy"],
                                 "results": [{k: r[k] for k in (
                                     "repository", "model", "retries", "failed_calls",
                                     "calls_after_kill", "model_reloaded_after_s",
                                     "seconds_until_normal")} for r in stub["results"]],
                                 "slowest_recovery_s": max(r["seconds_until_normal"]
                                                           for r in with_retries),
                                 "failed_with_retries": sum(r["failed_calls"]
                                                            for r in with_retries)},
        "server_killed": {"command": server["command"], "date": server["date"],
                          "results": server["results"]},
        "overload": {"command": overload["command"], "date": overload["date"],
                     "closed_loops": overload["policies"], "streams": overload.get("streams"),
                     "bounded": overload["bounded"]},
        "manifest_check": stub.get("manifest_check"),
        "soak": {"command": soak["command"], "date": soak["date"], "seconds": soak["seconds"],
                 "calls": soak["calls"], "calls_per_s": soak["calls_per_s"],
                 "failures": soak["failures"],
                 "memory_growth_percent": soak["memory_growth_after_warmup_percent"],
                 "per_minute": soak["per_minute"]},
        "fuzz": fuzz() if run_fuzz else None,
        "operator_safety": reliability_operator.collect({name: source(name) for name in (
            "operator_safety", "rebuild_safety", "process_leaks", "serve_recovery", "web",
            "search_answer_cost")}),
    }


def targets(r: dict) -> list[tuple[str, str, bool]]:
    stub, soak = r["model_process_killed"], r["soak"]
    growth = soak["memory_growth_percent"]["with_models_rss_mib"]
    rows = [
        ("zero failed requests during a rollout under load at concurrency "
         f"{r['rollout']['concurrency']}",
         f"{r['rollout']['failed_during']} of {r['rollout']['calls_during']}",
         r["rollout"]["failed_during"] == 0 and r["rollout"]["outcome"] == "switched"),
        (f"recovery from a killed model process within {RECOVERY_TARGET_S:g} s, retries hiding it",
         f"slowest {stub['slowest_recovery_s']} s, {stub['failed_with_retries']} failed calls",
         stub["slowest_recovery_s"] <= RECOVERY_TARGET_S and stub["failed_with_retries"] == 0),
        ("soak: zero failures", f"{soak['failures']} in {soak['seconds']:g} s",
         soak["failures"] == 0),
        (f"soak: memory growth under {MEMORY_GROWTH_TARGET:g} % after warm-up",
         f"{growth} % (tritonserver and its model processes)", growth < MEMORY_GROWTH_TARGET),
    ]
    if r["fuzz"]:
        rows.append(("every fuzz case answered, the server still serving",
                     f"{r['fuzz']['passed']} of {r['fuzz']['tests']} passed",
                     r["fuzz"]["passed"] == r["fuzz"]["tests"]))
    return rows


def markdown(r: dict) -> str:
    stub, overload, soak = r["model_process_killed"], r["overload"], r["soak"]
    target_rows = table(["target", "measured", "met"],
                        [[t, m, "yes" if ok else "**no**"] for t, m, ok in targets(r)])
    stub_rows = table(["repository", "model killed", "SDK retries", "failed calls",
                       "calls after kill", "reloaded after s", "normal after s"],
                      [[x["repository"], x["model"], "on" if x["retries"] else "off",
                        x["failed_calls"], x["calls_after_kill"], x["model_reloaded_after_s"],
                        x["seconds_until_normal"]] for x in stub["results"]])
    server_rows = table(["repository", "seconds without search", "failed calls"],
                        [[x["repository"], x["seconds_without_search"], x["failed_calls"]]
                         for x in r["server_killed"]["results"]])
    loop_rows = table(["policy", "callers", "served q/s", "served p99 ms", "refused"],
                      [[p, x["concurrency"], x["served_qps"], x["served_p99_ms"],
                        f"{x['refused_share']:.1%}"]
                       for p, xs in overload["closed_loops"].items() for x in xs])
    stream_rows = table(["policy", "offered q/s", "served q/s", "served p99 ms", "refused",
                         "timed out"],
                        [[p, x["rate"], x["served_qps"], x["served_p99_ms"],
                          f"{x['refused_share']:.1%}", f"{x['timed_out_share']:.1%}"]
                         for p, x in (overload["streams"] or {}).items()])
    minute_rows = table(["minute", "search calls", "search p50 ms", "search p99 ms",
                         "recommend p99 ms", "sentiment p99 ms"],
                        [[m["minute"], m["search"]["calls"], m["search"]["p50_ms"],
                          m["search"]["p99_ms"], m["recommend"]["p99_ms"],
                          m["sentiment"]["p99_ms"]] for m in soak["per_minute"]])
    manifest = "; ".join(f"{x['model']} ({Path(x['repository']).parts[-2]}) {x['megabytes']} MB "
                         f"in {x['ms']} ms" for x in r["manifest_check"] or [])
    fuzz = r["fuzz"]
    fuzz_text = (f"`{fuzz['command']}`: {fuzz['passed']} passed, {fuzz['failures']} failed, "
                 f"{fuzz['errors']} errors, {fuzz['skipped']} skipped of {fuzz['tests']}"
                 if fuzz else "not run (`--no-fuzz`)")
    rollout = r["rollout"]
    return heading("Reliability: rollouts, faults, overload, bad input, a soak", r) + f"""
The command collects the reports below; each part's own command is given.

{target_rows}

## Rollout under load

`{rollout['command']}` ({rollout['date']}): a catalogue rollout (`fusionrank deploy`, products
re-priced) in the middle of the soak at concurrency {rollout['concurrency']}: {rollout['outcome']},
{rollout['failed_during']} failed of {rollout['calls_during']} calls while it ran; phases (s):
{json.dumps(rollout['seconds'])}. That no answer mixes versions is tested
(tests/integration/test_rollout.py); docs/operations.md says how it is guaranteed.

## A killed model process (Python-backend stub)

`{stub['command']}` ({stub['date']}); SDK retry policy {json.dumps(stub['retry_policy'])}.
`fusionrank serve` reloads the model whose stub died (Triton 2.51 does not restart it).

{stub_rows}

## A killed tritonserver (`fusionrank serve` restarts it)

`{r['server_killed']['command']}` ({r['server_killed']['date']})

{server_rows}

## Overload

`{overload['command']}` ({overload['date']}); bounded: {json.dumps(overload['bounded'])}.
Closed loops of callers:

{loop_rows}

An open stream of requests above capacity (a queue with no bound grows while it lasts):

{stream_rows}

## Bad input

{fuzz_text}.

## Artefact digests checked at load

{manifest or "not measured"}.

## Soak

`{soak['command']}` ({soak['date']}): {soak['seconds']:g} s, {sum(soak['calls'].values())} calls
({soak['calls_per_s']}/s; {json.dumps(soak['calls'])}), {soak['failures']} failed; memory growth
after warm-up (%): {json.dumps(soak['memory_growth_percent'])}.

{minute_rows}

""" + reliability_operator.markdown(r["operator_safety"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-fuzz", action="store_true", help="do not run the fuzz suite")
    parser.add_argument("--out", type=Path, default=REPORTS,
                        help="the folder to write reliability.md and .json to")
    args = parser.parse_args()
    report = collect(run_fuzz=not args.no_fuzz)
    report["targets"] = [{"target": t, "measured": m, "met": ok} for t, m, ok in targets(report)]
    save_report("reliability", report, markdown(report), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
