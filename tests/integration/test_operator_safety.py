"""Model control on a real Triton server is closed to callers without the server's key: an
outsider's unload is refused and search keeps answering, an outsider's upload of model code is
refused and the code never runs; a model that disappears anyway shows in `status` and is loaded
again by `serve`'s watch; a second `serve` on a port in use is refused before anything loads."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fusionrank.app.deploy import MISSING, server_status
from fusionrank.app.model_watch import ModelWatch
from fusionrank.app.serve import TritonServer
from fusionrank.client import FusionRankClient

pytestmark = pytest.mark.server

ECHO_CONFIG = """name: "echo"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""
ECHO_MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())]) for r in requests]
"""


def http(server: TritonServer, path: str, body: dict | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of an HTTP call to the server, as an outsider makes it (no key unless
    `headers` carries it)."""
    request = urllib.request.Request(
        f"http://{server.host}:{server.ports.http}{path}",
        data=None if body is None else json.dumps(body).encode(), headers=headers or {},
        method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory):
    """A server of its own on a one-model repository (starts in seconds): these tests unload
    and upload models."""
    folder = tmp_path_factory.mktemp("echo")
    repository = folder / "model_repository"
    (repository / "echo" / "1").mkdir(parents=True)
    (repository / "echo" / "config.pbtxt").write_text(ECHO_CONFIG)
    (repository / "echo" / "1" / "model.py").write_text(ECHO_MODEL)
    with (folder / "tritonserver.log").open("w") as log, \
            TritonServer(repository, log=log) as server:
        yield server


def test_an_outsider_s_unload_is_refused_and_search_keeps_answering(triton_server):
    status, body = http(triton_server, "/v2/repository/models/search/unload", {})
    assert status == 403 and "restricted" in body
    triton = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="restricted"):
            triton.unload_model("search")
        index = triton.get_model_repository_index(headers=triton_server.control_headers())
        assert {m.name: m.state for m in index.models}["search"] == "READY"
    finally:
        triton.close()
    with FusionRankClient(triton_server.grpc_url) as client:
        assert client.search("cordless drill", k=1)[0].product_id == "A-DRILL"


def upload(marker: Path) -> dict:
    """A load request carrying model code that, when run, writes `marker`."""
    code = f"open({str(marker)!r}, 'w').write('ran')\n" + ECHO_MODEL
    config = {"name": "intruder", "backend": "python", "max_batch_size": 0,
              "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [1]}],
              "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [1]}]}
    return {"parameters": {"config": json.dumps(config),
                           "file:1/model.py": base64.b64encode(code.encode()).decode()}}


def test_an_outsider_s_upload_of_model_code_is_refused_and_never_runs(echo_server, tmp_path):
    marker = tmp_path / "uploaded_code_ran"
    status, body = http(echo_server, "/v2/repository/models/intruder/load", upload(marker))
    assert status == 403 and "restricted" in body
    time.sleep(1.0)  # a load would have started the model's process by now
    assert not marker.exists()
    # The same request with the key loads the model and runs its code: the refusal above is
    # the key's doing, not a malformed upload.
    status, body = http(echo_server, "/v2/repository/models/intruder/load", upload(marker),
                        headers=echo_server.control_headers("http"))
    assert status == 200, body
    assert marker.read_text() == "ran"
    status, _ = http(echo_server, "/v2/repository/models/intruder/unload", {},
                     headers=echo_server.control_headers("http"))
    assert status == 200


def echo_state(url: str, repository: Path) -> str:
    """What `fusionrank status` says of echo version 1."""
    rows = {(r["model"], r["version"]): r["state"] for r in server_status(url, repository)}
    return rows[("echo", 1)]


def test_a_model_that_disappears_shows_as_missing_and_serve_s_watch_loads_it_again(
        echo_server):
    url, repository = echo_server.grpc_url, echo_server.repository
    status, _ = http(echo_server, "/v2/repository/models/echo/unload", {},
                     headers=echo_server.control_headers("http"))
    assert status == 200
    # The model's own readiness tells (the server-wide one comes back once the unload ends).
    assert http(echo_server, "/v2/models/echo/ready")[0] != 200
    deadline = time.monotonic() + 30
    while (state := echo_state(url, repository)) == "UNLOADING" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state == MISSING  # never a row dropped in silence
    said: list[str] = []
    watch = ModelWatch(echo_server, say=said.append)
    assert watch.check() == ["echo"]
    assert any("echo is in the repository but not served" in line for line in said)
    assert http(echo_server, "/v2/models/echo/ready")[0] == 200
    assert echo_state(url, repository) == "READY"
    assert watch.check() == []  # nothing missing: nothing done


def test_a_second_serve_on_a_port_in_use_is_refused_before_anything_loads(echo_server):
    ports = echo_server.ports
    done = subprocess.run(
        [sys.executable, "-m", "fusionrank.app.cli", "serve", "--repository",
         str(echo_server.repository), "--grpc-port", str(ports.grpc), "--http-port", "0",
         "--metrics-port", "0", "--no-web"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    pid = echo_server.process.pid
    assert done.stderr.startswith(f"fusionrank serve: gRPC port {ports.grpc} is in use by "
                                  f"tritonserver (pid {pid}); nothing was started")
    assert "loading:" not in done.stderr and "serving" not in done.stderr
    # Every port is checked, not only the one gRPC readiness goes through.
    done = subprocess.run(
        [sys.executable, "-m", "fusionrank.app.cli", "serve", "--repository",
         str(echo_server.repository), "--grpc-port", "0", "--http-port", "0",
         "--metrics-port", str(ports.metrics), "--no-web"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"metrics port {ports.metrics} is in use" in done.stderr


def test_the_server_log_leaves_out_no_gpu_probe_errors(echo_server):
    from fusionrank.app.serve import NO_GPU_NOTE, has_gpu

    if has_gpu():
        pytest.skip("a GPU host: Triton's CUDA lines are real there")
    log = (Path(echo_server.repository).parent / "tritonserver.log").read_text()
    assert "Failed to initialize NVML" not in log
    assert "CudaDriverHelper" not in log
    assert log.count(NO_GPU_NOTE.strip()) == 1
    assert "successfully loaded 'echo'" in log
