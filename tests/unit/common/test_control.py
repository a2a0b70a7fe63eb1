"""Model-control keys, the server file `serve` writes, port checks and the no-GPU log filter
(app/control.py, app/serve.py): no server needed."""

from __future__ import annotations

import io
import os
import socket
import stat
import subprocess
import sys

import pytest

from fusionrank.app.control import (
    CONTROL_KEY_ENV,
    ControlError,
    ControlRecord,
    PortInUse,
    check_ports_free,
    control_folder,
    control_headers,
    holds_port,
    key_for,
    live_records,
    port_in_use,
    remove_record,
    restriction_options,
    write_record,
)
from fusionrank.app.serve import NO_GPU_NOTE, forward_log


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch):
    monkeypatch.delenv(CONTROL_KEY_ENV, raising=False)


def record(repository, grpc: int = 8001, key: str = "k1", pid: int | None = None):
    return ControlRecord(key, str(repository.resolve()), "127.0.0.1", grpc, grpc + 1, grpc + 2,
                         os.getpid() if pid is None else pid, os.getpid())


def test_restriction_closes_model_control_on_both_protocols():
    assert restriction_options("abc") == [
        "--http-restricted-api=model-repository:fusionrank-control-key=abc",
        "--grpc-restricted-protocol=model-repository:fusionrank-control-key=abc"]
    # Triton's gRPC front end reads a restricted protocol's header under its own prefix.
    assert control_headers("abc") == {"triton-grpc-protocol-fusionrank-control-key": "abc"}
    assert control_headers("abc", "http") == {"fusionrank-control-key": "abc"}
    with pytest.raises(ValueError, match="protocol must be grpc or http"):
        control_headers("abc", "https")


def test_the_server_file_is_the_owner_s_alone_and_beside_the_repository(tmp_path):
    repository = tmp_path / "model_repository"
    repository.mkdir()
    path = write_record(record(repository))
    assert path.parent == control_folder(repository) == tmp_path / "model_repository.control"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not list(repository.iterdir())  # Triton would take a subfolder for a model
    assert key_for("127.0.0.1:8001", repository) == "k1"
    assert key_for("localhost:8001", repository) == "k1"
    remove_record(record(repository))
    assert not control_folder(repository).exists()


def test_a_newer_server_s_file_is_not_removed_by_the_older_one(tmp_path):
    repository = tmp_path / "model_repository"
    repository.mkdir()
    write_record(record(repository, key="old"))
    write_record(record(repository, key="new"))  # a restart on the same port
    remove_record(record(repository, key="old"))
    assert key_for("127.0.0.1:8001", repository) == "new"


def test_key_for_refuses_a_repository_the_server_at_url_does_not_serve(tmp_path, monkeypatch):
    repository = tmp_path / "model_repository"
    repository.mkdir()
    with pytest.raises(ControlError, match="no running `fusionrank serve` serves"):
        key_for("127.0.0.1:8001", repository)
    write_record(record(repository, grpc=9001))
    with pytest.raises(ControlError, match=r"does not serve .* served at 127\.0\.0\.1:9001"):
        key_for("127.0.0.1:8001", repository)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_record(record(repository, grpc=8001, pid=dead.pid))  # a server that is gone
    assert [r.grpc for r in live_records(repository)] == [9001]
    with pytest.raises(ControlError, match="does not serve"):
        key_for("127.0.0.1:8001", repository)
    with pytest.raises(ControlError, match="--control-key-file"):
        key_for("127.0.0.1:8001", None)
    # A key given by hand does not make another server's repository this one's.
    monkeypatch.setenv(CONTROL_KEY_ENV, "by-hand")
    with pytest.raises(ControlError, match=r"served at 127\.0\.0\.1:9001"):
        key_for("127.0.0.1:8001", repository)
    assert key_for("127.0.0.1:9001", repository) == "k1"  # the server's own file first


def test_key_for_a_remote_server_from_a_file_or_the_environment(tmp_path, monkeypatch):
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert key_for("10.0.0.5:8001", None, key_file) == "from-file"
    monkeypatch.setenv(CONTROL_KEY_ENV, "from-env")
    assert key_for("10.0.0.5:8001", None) == "from-env"
    key_file.write_text("")
    with pytest.raises(ControlError, match="is empty"):
        key_for("10.0.0.5:8001", None, key_file)


def test_a_port_in_use_is_named_with_the_process_holding_it():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        assert holds_port(os.getpid(), port)
        with pytest.raises(PortInUse) as refused:
            check_ports_free("127.0.0.1", {"gRPC": port, "HTTP": 0})
        assert str(refused.value).startswith(
            f"gRPC port {port} is in use by python (pid {os.getpid()}); nothing was started")
        assert "HTTP" not in str(refused.value)
    assert not port_in_use("127.0.0.1", port)
    assert not holds_port(os.getpid(), port)


def test_no_gpu_probe_lines_are_left_out_and_real_errors_kept():
    log = (b'E1206 05:54:08.695532 9147 server.cc:241] "CudaDriverHelper has not been '
           b'initialized."\n'
           b"Error: Failed to initialize NVML\n"
           b'W1206 metrics.cc:798] "DCGM unable to start: DCGM initialization error"\n'
           b'E1206 model_lifecycle.cc:641] "failed to load \'search\'"\n')
    out = io.StringIO()
    forward_log(io.BytesIO(log), out, drop_gpu_noise=True)
    assert out.getvalue().splitlines(keepends=True) == [
        NO_GPU_NOTE, 'E1206 model_lifecycle.cc:641] "failed to load \'search\'"\n']
    kept = io.StringIO()
    forward_log(io.BytesIO(log), kept, drop_gpu_noise=False)  # a GPU host: every line
    assert kept.getvalue() == log.decode()


def test_status_finds_the_default_repository_a_local_server_serves(tmp_path, monkeypatch):
    from fusionrank.app.deploy.commands import DEFAULT_REPOSITORY, served_default

    monkeypatch.chdir(tmp_path)
    repository = tmp_path / DEFAULT_REPOSITORY
    repository.mkdir(parents=True)
    assert served_default("127.0.0.1:8001") is None  # nothing serves it yet
    write_record(record(repository, grpc=8001, pid=os.getpid()))
    assert served_default("127.0.0.1:8001") == DEFAULT_REPOSITORY
    assert served_default("localhost:8001") == DEFAULT_REPOSITORY
    assert served_default("127.0.0.1:9001") is None  # another server's address
