"""The `fusionrank` command line: serve lifecycle, search output and clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import tritonclient.grpc as grpcclient

from fusionrank.app.control import control_headers, key_for
from fusionrank.app.serve import Ports, child_process
from fusionrank.client import FusionRankClient

FUSIONRANK = [sys.executable, "-m", "fusionrank.app.cli"]


def fusionrank(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*FUSIONRANK, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.server
def test_search_prints_ranked_products(triton_server):
    done = fusionrank("search", "cordless drill", "wool scarf", "-k", "3",
                      "--url", triton_server.grpc_url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "1." in lines[lines.index("cordless drill") + 1]
    assert "A-DRILL" in lines[lines.index("cordless drill") + 1]
    assert "A-SCARF" in lines[lines.index("wool scarf") + 1]
    as_json = fusionrank("search", "teapot", "--json", "-k", "2", "--url", triton_server.grpc_url)
    record = json.loads(as_json.stdout)
    assert record["results"][0]["product_id"] == "A-TEAPOT"
    assert record["results"][0]["product"]["price"] == 12.0


@pytest.mark.server
def test_search_errors_are_one_clear_line(triton_server):
    done = fusionrank("search", "drill", "-k", "0", "--url", triton_server.grpc_url)
    assert done.returncode == 2
    assert done.stderr.strip() == ("fusionrank search: K = 0 is out of range: "
                                   "it must be between 1 and 100")
    nowhere = fusionrank("search", "drill", "--url", "127.0.0.1:1", "--timeout", "3")
    assert nowhere.returncode == 2
    assert "cannot reach a Triton server at 127.0.0.1:1" in nowhere.stderr


def test_build_reports_a_bad_catalogue(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,title\np1,Drill\np1,Again\n")
    done = fusionrank("build", "--catalogue", str(bad), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert f"{bad}:3: field 'product_id': duplicate id" in done.stderr


@pytest.mark.server
def test_serve_starts_answers_and_stops_on_sigterm(search_repository):
    ports = Ports.free()
    server = subprocess.Popen(
        [*FUSIONRANK, "serve", "--repository", str(search_repository),
         "--grpc-port", str(ports.grpc), "--http-port", str(ports.http),
         "--metrics-port", str(ports.metrics), "--no-web"],  # test_web.py runs the page
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(server.stdout), daemon=True)
    reader.start()
    try:
        ready_line = f"gRPC 127.0.0.1:{ports.grpc}"
        deadline = time.monotonic() + 120
        while not any(ready_line in line for line in lines) and time.monotonic() < deadline:
            assert server.poll() is None, "".join(lines)
            time.sleep(0.2)
        assert any(ready_line in line for line in lines), "no ready line within 120 s"
        with FusionRankClient(f"127.0.0.1:{ports.grpc}") as client:
            assert client.search("kitchen sink", k=1)[0].product_id == "A-SINK"
        # A model unloaded (by the key holder: serve's key file) is loaded again, and said so.
        url = f"127.0.0.1:{ports.grpc}"
        triton = grpcclient.InferenceServerClient(url)
        try:
            triton.unload_model("search", headers=control_headers(key_for(url,
                                                                          search_repository)))
        finally:
            triton.close()
        wait_for_line(lines, "search is served again", 60)
        assert any("search is in the repository but not served" in line for line in lines)
        with FusionRankClient(url) as client:
            assert client.search("kitchen sink", k=1)[0].product_id == "A-SINK"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
    reader.join(timeout=10)
    assert any("successfully unloaded" in line for line in lines)  # Triton's own shutdown


def test_build_options_parse_without_clashing_with_the_command(tmp_path):
    from fusionrank.app.cli import parser, run_build

    args = parser().parse_args(["build", "--run", str(tmp_path), "--pretrained"])
    assert args.run is run_build and args.run_dir == tmp_path


@pytest.mark.server
def test_search_in_process_prints_what_the_server_answers(triton_server, served_repository):
    through = {}
    for where in (["--url", triton_server.grpc_url], ["--repository", str(served_repository)]):
        done = fusionrank("search", "cordless drill", "teapot", "--json", "-k", "5", *where)
        assert done.returncode == 0, done.stderr
        through[where[0]] = [json.loads(line) for line in done.stdout.splitlines()]
    assert through["--repository"] == through["--url"]
    assert through["--url"][0]["results"][0]["product_id"] == "A-DRILL"


@pytest.mark.server
def test_search_explain_shows_the_correction_and_each_score_s_parts(triton_server,
                                                                   served_repository):
    done = fusionrank("search", "gardn hose", "--explain", "-k", "2",
                      "--url", triton_server.grpc_url)
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()]
    query = lines.index("gardn hose")
    assert lines[query + 1] == "(showing results for: garden hose)"
    assert "A-HOSE" in lines[query + 2]
    parts = lines[query + 3]
    assert parts.startswith("= ") and "× similarity" in parts and "× lexical" in parts
    through = {}
    for where in (["--url", triton_server.grpc_url], ["--repository", str(served_repository)]):
        done = fusionrank("search", "gardn hose", "--explain", "--json", "-k", "3", *where)
        assert done.returncode == 0, done.stderr
        through[where[0]] = json.loads(done.stdout)
    assert through["--repository"] == through["--url"]
    answer = through["--url"]
    assert answer["corrected"] == "garden hose"
    assert [p["signal"] for p in answer["results"][0]["parts"]] == [
        "similarity", "feedback", "lexical"]


def wait_for_line(lines: list[str], text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(text in line for line in lines):
        assert time.monotonic() < deadline, f"no line with {text!r}:\n{''.join(lines)[-3000:]}"
        time.sleep(0.2)


def test_serve_restarts_a_crashed_server_then_gives_up(search_repository):
    ports = Ports.free()
    serve = subprocess.Popen(
        [*FUSIONRANK, "serve", "--repository", str(search_repository),
         "--grpc-port", str(ports.grpc), "--http-port", str(ports.http),
         "--metrics-port", str(ports.metrics), "--no-web", "--max-restarts", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(serve.stdout), daemon=True)
    reader.start()
    try:
        wait_for_line(lines, f"gRPC 127.0.0.1:{ports.grpc}", 120)
        os.kill(child_process(serve.pid, "tritonserver"), signal.SIGKILL)  # a crash
        wait_for_line(lines, "restarting (1 of 1)", 30)
        wait_for_line(lines, "serving again", 120)
        with FusionRankClient(f"127.0.0.1:{ports.grpc}", timeout_s=30) as client:
            assert client.search("kitchen sink", k=1)[0].product_id == "A-SINK"
        os.kill(child_process(serve.pid, "tritonserver"), signal.SIGKILL)  # again: none left
        assert serve.wait(timeout=60) == 1
        wait_for_line(lines, "giving up", 10)
    finally:
        if serve.poll() is None:
            serve.kill()
    reader.join(timeout=10)
