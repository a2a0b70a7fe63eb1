"""benchmarks/harness.py against known answers: the percentiles, the Markdown, the report files,
the query sets, the closed loops of callers and the memory of a process tree."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from benchmarks.harness import (
    ROOT,
    ClosedLoop,
    FreshQueries,
    PeakMemoryShares,
    closed_loops_async,
    heading,
    latency_percentiles,
    machine,
    portable,
    process_rss_mib,
    resident_by_file,
    save_report,
    table,
    zipf_replay,
)


def test_percentiles_interpolate_between_the_closest_ranks():
    # Five samples: rank r sits at (r - 1) / 4; the 95th percentile is 4 + 0.8 × (5 - 4).
    assert latency_percentiles([5.0, 1.0, 4.0, 2.0, 3.0]) == {
        "p50_ms": 3.0, "p95_ms": 4.8, "p99_ms": 4.96}
    assert latency_percentiles([10.0, 20.0], (50, 99.9), digits=1) == {
        "p50_ms": 15.0, "p99.9_ms": 20.0}
    assert latency_percentiles([1.23456], (50,), digits=3) == {"p50_ms": 1.235}


def test_percentiles_of_nothing_are_empty():
    assert latency_percentiles([]) == {}


def test_table_writes_header_rule_and_rows():
    assert table(["name", "q/s"], [["distinct c=1", 12.5], ["zipf", None]]) == (
        "| name | q/s |\n"
        "| --- | --- |\n"
        "| distinct c=1 | 12.5 |\n"
        "| zipf | None |")
    assert table(["only"], []) == "| only |\n| --- |"


def test_heading_lists_command_machine_date_then_more():
    report = {"command": "python -m benchmarks.soak", "machine": "CPU, 2 vCPU", "date": "today"}
    assert heading("Soak", report, "Source: a build\n  on two lines") == (
        "# Soak\n\n"
        "- Command: `python -m benchmarks.soak`\n"
        "- Machine: CPU, 2 vCPU\n"
        "- Date: today\n"
        "- Source: a build\n  on two lines\n")


def test_save_report_writes_json_and_markdown(tmp_path, capsys):
    save_report("trial", {"qps": 1.5, "rows": [1, 2]}, "# Trial\n", tmp_path / "reports")
    assert json.loads((tmp_path / "reports" / "trial.json").read_text()) == {
        "qps": 1.5, "rows": [1, 2]}
    assert (tmp_path / "reports" / "trial.md").read_text() == "# Trial\n"
    assert "# Trial" in capsys.readouterr().out


def test_saved_reports_name_paths_relative_to_the_repository(tmp_path):
    temporary = tempfile.gettempdir()
    report = {"repository": f"{ROOT}/build/model_repository", "source": f"{temporary}/x/y"}
    save_report("paths", report, f"served `{ROOT}/build/model_repository`\n", tmp_path)
    assert json.loads((tmp_path / "paths.json").read_text()) == {
        "repository": "build/model_repository", "source": "$TMPDIR/x/y"}
    assert (tmp_path / "paths.md").read_text() == "served `build/model_repository`\n"


def test_a_path_is_made_portable_only_where_it_starts():
    """A folder that holds "/tmp/" inside its path (/elsewhere/tmp/x) is not the temporary
    folder; one beside the repository is named from it."""
    temporary = tempfile.gettempdir()
    text = (f"--build /elsewhere{temporary}/live {temporary}/a \"{temporary}/b\" --out={ROOT}/c "
            f"/elsewhere{ROOT}/d {ROOT.parent}/tmp/e")
    assert portable(text) == (f"--build /elsewhere{temporary}/live $TMPDIR/a \"$TMPDIR/b\" "
                              f"--out=c /elsewhere{ROOT}/d ../tmp/e")


def test_machine_names_the_cpu_count_and_its_vector_instructions():
    assert f", {os.cpu_count()} vCPU, " in machine()
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else []
    if "avx512_vnni" in flags:
        assert "(AVX-512 VNNI)" in machine()
    elif "avx2" in flags and "avx512f" not in flags:
        assert "(AVX2)" in machine()


def test_zipf_replay_repeats_the_head():
    queries = [f"q{i}" for i in range(100)]
    replay = zipf_replay(queries, 5000, exponent=1.1)
    assert len(replay) == 5000 and set(replay) <= set(queries)
    # P(rank 1) / P(rank 10) = 10^1.1 ≈ 12.6: the head comes far more often than the tail.
    assert replay.count("q0") > 5 * replay.count("q9")
    assert replay == zipf_replay(queries, 5000, exponent=1.1)  # the same seed, the same draw


def test_fresh_queries_never_repeat_across_threads():
    queries = FreshQueries("drill", "fan")
    drawn: list[str] = []

    def draw() -> None:
        drawn.extend(queries.next() for _ in range(500))

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(drawn) == len(set(drawn)) == 2000
    assert sorted(drawn)[:2] == ["drill 0", "drill 10"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_closed_loop_records_every_call_and_its_failure():
    def caller(loop: ClosedLoop) -> None:
        n = 0
        while loop.running:
            n += 1
            with loop.call("even" if n % 2 == 0 else "odd"):
                if n == 10:  # not a failure the loop expects: it ends this caller unrecorded
                    raise RuntimeError("a bug in the caller, not a failed call")
                if n % 2:
                    raise ConnectionError("refused")

    with ClosedLoop(3, caller, failures=ConnectionError) as loop:
        for thread in loop.threads:
            thread.join(10)  # each caller ends at its tenth call
    assert len(loop.calls) == 27
    failed = [c for c in loop.calls if c.error]
    assert len(failed) == 15 and {c.kind for c in failed} == {"odd"}
    assert {c.error for c in failed} == {"ConnectionError: refused"}
    assert {c.error_type for c in failed} == {"ConnectionError"}
    assert all(c.end >= c.start and c.seconds >= 0 for c in loop.calls)


def test_closed_loop_stops_its_callers_at_the_end():
    def caller(loop: ClosedLoop) -> None:
        while loop.running:
            with loop.call():
                pass

    with ClosedLoop(2, caller) as loop:
        while len(loop.calls) < 100:
            pass
    assert not any(thread.is_alive() for thread in loop.threads)
    assert not any(c.error for c in loop.calls)


def test_async_closed_loops_go_through_the_queries_in_turn():
    sent: list[tuple[str, bool]] = []

    async def send(query: str, measured: bool) -> None:
        sent.append((query, measured))
        await asyncio.sleep(0.005)

    queries = ["a", "b", "c"]
    elapsed = asyncio.run(closed_loops_async(send, queries, concurrency=2, seconds=0.1,
                                             warm_up_s=0.05))
    assert elapsed >= 0.1
    assert [q for q, _ in sent] == [queries[i % 3] for i in range(len(sent))]
    measured = [m for _, m in sent]
    assert not measured[0] and measured[-1]
    assert measured == sorted(measured)  # the warm-up's calls all come first


@pytest.mark.timeout(60)
def test_process_memory_counts_the_children():
    # A child holding 100 MiB it has written (so resident), waiting on its stdin.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; x = bytearray(b'x' * (100 << 20)); print('ready', "
         "flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        own, tree = process_rss_mib(os.getpid())
        assert tree - own >= 100
        child_own, child_tree = process_rss_mib(child.pid)
        assert 100 <= child_own == child_tree < 200
    finally:
        child.communicate("")


GROW_ON_STDIN = """
import sys
sys.stdin.readline()
x = bytearray(b'x' * (100 << 20))
print("grown", flush=True)
sys.stdin.read()
"""


def test_peak_memory_shares_samples_pss_only_as_often_as_asked():
    # A child that grows by 100 MiB once told to: RSS, sampled every 20 ms, sees it; PSS,
    # every minute, was sampled once, before (a PSS sample walks every page table: its rate
    # is what a benchmark's searches pay for it).
    child = subprocess.Popen([sys.executable, "-c", GROW_ON_STDIN], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        memory = PeakMemoryShares(child.pid, every_s=0.02, pss_every_s=60)
        memory.start()
        threading.Event().wait(0.2)
        child.stdin.write("grow\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "grown"
        threading.Event().wait(0.2)
        memory.stop()
        assert memory.peak["rss"] >= 100 > memory.peak["pss"] > 0, memory.peak
    finally:
        child.communicate("")


MAP_AND_READ = """
import mmap, sys
with open(sys.argv[1], "rb") as handle:
    data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
total = sum(data[i] for i in range(0, len(data), 4096))  # every page read, so resident
print("ready", flush=True)
sys.stdin.read()
"""


def test_resident_by_file_names_what_each_process_maps(tmp_path):
    # Two processes each read every page of one 24 MiB file: it is resident in both (RSS)
    # and split between them (PSS).
    artefact = tmp_path / "catalogue.bin"
    artefact.write_bytes(os.urandom(24 << 20))
    readers = [subprocess.Popen([sys.executable, "-c", MAP_AND_READ, str(artefact)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        assert [r.stdout.readline().strip() for r in readers] == ["ready", "ready"]
        seen = {p["pid"]: p["mib"] for p in resident_by_file(os.getpid())}
        for reader in readers:
            mapped = seen[reader.pid]["catalogue.bin"]
            assert mapped["rss"] == 24 and 11 <= mapped["pss"] <= 13, mapped
            assert all(mib["rss"] >= 10 for mib in seen[reader.pid].values())  # the floor
        assert "catalogue.bin" not in seen[os.getpid()]
    finally:
        for reader in readers:
            reader.communicate("")
