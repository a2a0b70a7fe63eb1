"""Issue 21's part of the reliability report (operator safety): one section per defect found,
each with the probe that found it, the figure measured now (from the benchmark that measures
it) and the tests that keep it. `benchmarks/reliability.py` adds it to reliability.md/.json.

The reports it reads (run them first; each records its own command, machine and date):
operator_safety (model control, port clash), rebuild_safety (a rebuild over a deployed
folder, the build's output), process_leaks (kills of model processes and of tritonserver),
serve_recovery (callers across a tritonserver kill), web (bounded bodies) and
search_answer_cost (the light SDK answer).
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.harness import table

PORT_CLASH_TARGET_S = 2.0
BODY_ANSWER_TARGET_MS = 100.0
SEARCH_P99_RATIO_TARGET = 2.0


@dataclass(frozen=True)
class Item:
    """One defect of the issue: how it was found, what is measured now, what keeps it."""

    title: str
    probe: str
    figure: str
    tests: tuple[str, ...]


def model_control(safety: dict) -> tuple[Item, list[tuple[str, str, bool]]]:
    unload, upload = safety["outsider_unload"], safety["outsider_upload"]
    refused = [unload["http_refused"] and unload["grpc_refused"],
               upload["refused"] and upload["marker_absent"]]
    figure = (f"an outsider's unload: HTTP {unload['http_status']}, gRPC "
              f"{'refused' if unload['grpc_refused'] else 'ACCEPTED'}, search still ready: "
              f"{unload['search_ready_after']}; an outsider's upload of model code: HTTP "
              f"{upload['http_status']}, its code ran: {not upload['marker_absent']} (with the key "
              f"the same request answers {upload['with_key_http_status']}, so the key is what "
              f"refuses it)")
    item = Item("Model control closed by default",
                "`curl -X POST HOST:HTTP/v2/repository/models/search/unload` answered 200; a load "
                "carrying `file:1/model.py` ran the uploaded Python as uid 0",
                figure, ("tests/integration/test_operator_safety.py",
                         "tests/unit/common/test_control.py",
                         "tests/integration/test_rollout.py (deploy and status with the key)"))
    target = ("outsider unload and upload refused", f"{sum(refused)} of 2", all(refused))
    return item, [target]


def port_clash(safety: dict) -> tuple[Item, list[tuple[str, str, bool]]]:
    rows = safety["second_serve"]
    worst = max(row["seconds"] for row in rows)
    held = all(row["rc"] == 2 and not row["model_loaded"] for row in rows)
    figure = "; ".join(f"{row['port']} port: rc {row['rc']} after {row['seconds']} s, a model "
                       f"loaded: {row['model_loaded']}" for row in rows)
    item = Item("Port ownership checked before start",
                "a second `serve` on ports in use printed `serving …`, was answered by the first "
                "server's readiness, then restarted three times before giving up (rc 1, 29 s)",
                f"{figure}. Message: \"{rows[0]['message']}\"",
                ("tests/integration/test_operator_safety.py::"
                 "test_a_second_serve_on_a_port_in_use_is_refused_before_anything_loads",
                 "tests/unit/common/test_control.py"))
    target = (f"port clash refused in ≤ {PORT_CLASH_TARGET_S:g} s with rc 2 and nothing loaded",
              f"worst {worst} s over the gRPC, HTTP and metrics ports",
              held and worst <= PORT_CLASH_TARGET_S)
    return item, [target]


def rebuild(result: dict) -> tuple[Item, list[tuple[str, str, bool]]]:
    changed, total = result["serving_files_changed"], result["serving_files"]
    item = Item("Builds never write into a deployed repository",
                "`fusionrank build --out DIR` on a DIR that had been deployed rewrote six files "
                "of the serving version in place (hard links): none matched sha256.json any more",
                f"{changed} of {total} files of the serving repository changed by the rebuild "
                f"(it shared {result['shared_files_with_rebuilt_folder']} files with DIR); "
                f"sha256.json failures: {len(result['manifests_failed'])}; answers unchanged: "
                f"{result['answers_unchanged']}",
                ("tests/integration/test_rebuild_deployed.py",
                 "tests/unit/common/test_staging.py"))
    target = ("rebuild over a deployed output: the serving version unchanged, byte for byte",
              f"{changed} of {total} files changed",
              changed == 0 and not result["manifests_failed"])
    return item, [target]


def leaks(result: dict) -> tuple[Item, list[tuple[str, str, bool]]]:
    last = result["rows"][-1]
    kills = [row["after"] for row in result["rows"][1:]]
    model_kills = sum("model-process kill" in k for k in kills)
    server_kills = sum("tritonserver kill" in k for k in kills)
    clean = all(row["model_processes"] == row["configured_copies"] and not row["zombies"]
                and not row["orphans"] and not row["stale_shm_files"] for row in result["rows"])
    figure = (f"after {model_kills} model-process kills and {server_kills} server kills: "
              f"{last['model_processes']} model processes for {last['configured_copies']} "
              f"configured copies, {last['zombies']} zombies, {last['orphans']} orphans, "
              f"{last['stale_shm_files']} stale /dev/shm files (every row in between alike: "
              f"{clean}; repository {result['repository']})")
    item = Item("No leaked processes or shared memory",
                "each kill -9 of a model process left the replaced healthy copy (~250 MB) and a "
                "zombie; a kill -9 of tritonserver left busy model processes under PID 1 and "
                "their /dev/shm regions",
                figure, ("tests/integration/test_model_processes.py",))
    target = ("after 5 model-process and 3 server kills: copies as configured, 0 zombies, "
              "0 orphans, 0 stale /dev/shm files",
              f"{model_kills} + {server_kills} kills: {'all clean' if clean else 'LEAKS'}",
              clean and model_kills >= 5 and server_kills >= 3)
    return item, [target]


def retries(recovery: dict) -> tuple[Item, list[tuple[str, str, bool]]]:
    rows = {row["retry_policy"]: row for row in recovery["results"]}
    default = rows["default"]
    others = "; ".join(f"{name}: {row['failed_calls']} failed of {row['calls_after_the_kill']}"
                       for name, row in rows.items() if name != "default")
    item = Item("Retries that use the deadline",
                "after a kill -9 of tritonserver, 75–79 calls with a 10 s deadline failed with "
                "ServerUnavailableError: the default policy gave up after ~0.35 s of back-off",
                f"default SDK settings at concurrency {recovery['concurrency']}: "
                f"{default['failed_calls']} failed of {default['calls_after_the_kill']} calls "
                f"after the kill, search back after {default['seconds_without_search']} s, the "
                f"slowest call {default['slowest_call_s']} s (deadline "
                f"{recovery['call_timeout_s']:g} s); {others}",
                ("tests/unit/common/test_retry_policy.py", "tests/integration/test_retries.py"))
    target = ("0 failed calls across a tritonserver kill at concurrency 8, default SDK settings",
              f"{default['failed_calls']} of {default['calls_after_the_kill']}",
              default["failed_calls"] == 0)
    return item, [target]


def web_bodies(web: dict) -> tuple[Item, list[tuple[str, str, bool]]]:
    bodies = web["big_bodies"]
    worst = bodies["answer_ms"]["max"]
    all_413 = bodies["bodies_answered_413"] == bodies["bodies_posted"]
    item = Item("Bounded web requests",
                "a 100 MB `/api/recommend` body was parsed for 9.7 s, grew `serve` from 444 MB "
                "to 2.7 GB and held a concurrent `/api/search` for 9.2 s; `/api/health` named "
                "the gRPC address",
                f"{bodies['bodies_answered_413']} of {bodies['bodies_posted']} bodies of "
                f"{bodies['body_bytes'] / 1e6:g} MB answered 413 (median "
                f"{bodies['answer_ms']['p50']} ms, slowest {worst} ms) at "
                f"{bodies['bodies_per_s']} a second; `/api/search` p99 during the stream "
                f"{bodies['search_during']['p99_ms']} ms against {bodies['search_idle']['p99_ms']} "
                f"ms idle ({bodies['search_p99_ratio']}×)",
                ("tests/integration/test_web.py (413 with and without Content-Length, health "
                 "without an address)", "tests/unit/common/test_web_limits.py"))
    targets = [("a 100 MB body answered 413 in ≤ 100 ms", f"slowest {worst} ms",
                all_413 and worst <= BODY_ANSWER_TARGET_MS),
               ("a concurrent search unaffected: p99 within 2× of idle",
                f"{bodies['search_p99_ratio']}×",
                bodies["search_p99_ratio"] <= SEARCH_P99_RATIO_TARGET)]
    return item, targets


def messages(result: dict) -> Item:
    lines = result["build_output_lines"]
    return Item(
        "Messages that say what is wrong, and a quiet build",
        "deploy to a folder the server does not serve failed with \"failed to poll from model "
        "repository\"; a refused rollout named a temporary path; `status` showed the new build's "
        "time for untouched models; error-level CUDA/NVML lines at every CPU start; `sentiment` "
        "without a model answered NOT_FOUND; a build printed 747 quantizer INFO lines",
        f"each message now names the cause and what to do (tests below); the builds of "
        f"rebuild_safety printed {lines} lines each (a progress bar counts as one)",
        ("tests/integration/test_rollout.py (wrong repository, wrong key, the damaged source "
         "file named, since kept per model)",
         "tests/integration/test_operator_safety.py::test_the_server_log_leaves_out_no_gpu_probe"
         "_errors", "tests/integration/test_sentiment_cli.py::test_sentiment_from_a_server_"
         "without_the_model_says_how_to_get_one"))


def light_answer(cost: dict) -> Item:
    rows = []
    for k, levels in cost["results"].items():
        before, light = levels[0], levels[1]
        rows.append(f"K={k}: {before['response_bytes_per_call']:g} → "
                    f"{light['response_bytes_per_call']:g} bytes a call, client decode "
                    f"{before['decode_us_per_call']:g} → {light['decode_us_per_call']:g} µs, the "
                    f"Rank step {before['rank_step_in_process_ms_per_call']:g} → "
                    f"{light['rank_step_in_process_ms_per_call']:g} ms")
    return Item("A lighter SDK answer",
                "the SDK's `search` asked for every output, the explanation and product "
                "metadata included, to keep the response cache (keyed on inputs alone) correct",
                "a `DETAIL` input names the answer and so enters the cache key; a plain search "
                f"carries ids and scores only ({cost['repository']}): " + "; ".join(rows),
                ("tests/integration/test_response_cache.py", "tests/unit/search/test_detail.py",
                 "tests/integration/test_search_server.py"))


def collect(reports: dict[str, dict]) -> dict:
    """{"items": [...], "targets": [...]} from the reports, keyed by report name."""
    parts = [model_control(reports["operator_safety"]),
             rebuild(reports["rebuild_safety"]["result"]),
             port_clash(reports["operator_safety"]),
             leaks(reports["process_leaks"]["result"]),
             retries(reports["serve_recovery"]),
             web_bodies(reports["web"])]
    items = [item for item, _ in parts]
    items += [messages(reports["rebuild_safety"]["result"]),
              light_answer(reports["search_answer_cost"])]
    targets = [{"target": t, "measured": m, "met": ok} for _, ts in parts for t, m, ok in ts]
    sources = {name: {"command": r["command"], "date": r["date"]} for name, r in reports.items()}
    return {"items": [item.__dict__ for item in items], "targets": targets, "sources": sources}


def markdown(part: dict) -> str:
    target_rows = table(["target", "measured", "met"],
                        [[t["target"], t["measured"], "yes" if t["met"] else "**no**"]
                         for t in part["targets"]])
    sections = []
    for number, item in enumerate(part["items"], 1):
        tests = "; ".join(f"`{test}`" for test in item["tests"])
        sections.append(f"### {number}. {item['title']}\n\n- Found by: {item['probe']}.\n"
                        f"- Now: {item['figure']}.\n- Kept by: {tests}.\n")
    sources = table(["report", "command", "date"],
                    [[f"{name}.md", f"`{s['command']}`", s["date"]]
                     for name, s in part["sources"].items()])
    return ("## Operator safety (issue 21)\n\n" + target_rows + "\n\n" + "\n".join(sections)
            + "\nMeasured by:\n\n" + sources + "\n")
