"""Run NVIDIA Triton Inference Server (the binary in the nvidia-pytriton wheel) on a model
repository: chosen or free ports (refused up front when taken), model control closed to callers
without the server's key (app/control.py), readiness proven against our own process,
log forwarding, clean shutdown."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

from fusionrank.app.control import (
    ControlRecord,
    check_ports_free,
    control_headers,
    holds_port,
    new_key,
    remove_record,
    restriction_options,
    write_record,
)

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
# What Triton prints at every start on a machine without a GPU: its CUDA and NVML probes
# failing, at error level for two of them. Harmless there (ENVIRONMENT.md), and left out of the
# forwarded log only where no NVIDIA device exists, so that on a GPU host they still show.
NO_GPU_LINES = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML",
                "DCGM unable to start", "Unable to allocate pinned system memory",
                "failed to allocate pinned system memory",
                # each ensemble's load asks for a CUDA stream (error level; it then runs on CPU)
                "CUDA driver version is insufficient for CUDA runtime version")
NO_GPU_NOTE = ("fusionrank: no GPU on this machine: Triton's CUDA/NVML start-up probe "
               "messages are left out of this log\n")


@dataclass(frozen=True)
class Ports:
    grpc: int
    http: int
    metrics: int

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> Ports:
        return cls(*(free_port(host) for _ in range(3)))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def triton_home() -> Path:
    try:
        import pytriton
    except ImportError as error:
        raise FileNotFoundError("nvidia-pytriton is not installed: run scripts/setup.sh") from error
    home = Path(pytriton.__file__).parent / "tritonserver"
    if not (home / "bin" / "tritonserver").is_file():
        raise FileNotFoundError(f"no tritonserver binary under {home}")
    return home


def backend_directory(cache: Path) -> Path:
    """A backends folder whose python backend has the stub for this Python version; the wheel
    keeps the stubs apart, and Triton looks for the stub beside libtriton_python.so."""
    home = triton_home()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise FileNotFoundError(f"the Triton wheel has no Python-backend stub for Python {version}")
    python = cache / "python"
    python.mkdir(parents=True, exist_ok=True)
    for source in (home / "backends" / "python").iterdir():
        link = python / source.name
        if source.is_file() and not (link.is_symlink() and link.resolve() == source.resolve()):
            link.unlink(missing_ok=True)
            link.symlink_to(source)
    # The stub is copied, not linked: with SIGCHLD ignored (prepare_server_process) the python
    # backend's probe `system(stub)` reads no exit status and chmods the stub it runs to 0100,
    # which must land on our copy, never on the installed wheel's file. The copy finds the
    # wheel's libraries through LD_LIBRARY_PATH (server_environment), not its RPATH.
    copy = python / stub.name
    if copy.is_symlink() or not copy.is_file() or copy.stat().st_size != stub.stat().st_size:
        copy.unlink(missing_ok=True)
        shutil.copyfile(stub, copy)
        copy.chmod(0o700)
    return cache


def wheel_libraries() -> Path:
    """The folder of the shared libraries the nvidia-pytriton wheel bundles (the stub's
    libcudart), which the stub's RPATH finds only from the wheel's own folder."""
    return triton_home().parents[1] / "nvidia_pytriton.libs"


# Triton's platform names for models that name no backend.
PLATFORM_BACKENDS = {"tensorrt_plan": "tensorrt", "onnxruntime_onnx": "onnxruntime",
                     "pytorch_libtorch": "pytorch", "tensorflow_savedmodel": "tensorflow"}


def missing_backends(repository: Path, backends: Path) -> dict[str, str]:
    """{model: backend} for each model of `repository` whose backend `backends` lacks (a
    `fusionrank build --device gpu` repository needs onnxruntime and tensorrt, which NVIDIA's
    Triton container has and the nvidia-pytriton wheel does not)."""
    from fusionrank.model_repository.config import read_config

    missing = {}
    for path in sorted(repository.glob("*/config.pbtxt")):
        config = read_config(repository, path.parent.name)
        backend = config.backend or PLATFORM_BACKENDS.get(config.platform)
        if backend and not (backends / backend).is_dir():
            missing[path.parent.name] = backend
    return missing


def own_libpython_dir() -> Path | None:
    """The folder of this interpreter's shared libpython (pyenv's lib/), or None when the
    interpreter is built without one (then the stub needs the system's libpython3.11)."""
    folder, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    shared = sysconfig.get_config_var("Py_ENABLE_SHARED") and folder and soname
    return Path(folder) if shared and (Path(folder) / soname).is_file() else None


def server_environment() -> dict[str, str]:
    """Environment for the model processes: they run on this interpreter and its packages.

    The stub embeds Python in isolated mode (it ignores PYTHONPATH and PYTHONHOME) and takes
    its prefix from the `python3` it finds in PATH, so it gets this interpreter's libpython and
    bin/ first: it then reads the venv's pyvenv.cfg and imports the venv's numpy<2, and needs no
    system libpython3.11 (Debian 13 has none).
    """
    env = dict(os.environ)
    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    env["PYTHONPATH"] = prepend(env.get("PYTHONPATH"), *paths)
    env["LD_LIBRARY_PATH"] = prepend(env.get("LD_LIBRARY_PATH"), str(wheel_libraries()))
    libdir = own_libpython_dir()
    # A numpy 2 (as in pyenv's own site-packages) garbles BYTES: the stub's pybind11 misreads it.
    if libdir is not None:  # else the stub links the system's libpython3.11 and its prefix
        env["LD_LIBRARY_PATH"] = prepend(env.get("LD_LIBRARY_PATH"), str(libdir))
        env["PATH"] = prepend(env.get("PATH", os.defpath), str(Path(sys.executable).parent))
    return env


def prepend(value: str | None, *entries: str) -> str:
    """A search path with `entries` first, each path once."""
    rest = filter(None, (value or "").split(os.pathsep))
    return os.pathsep.join(dict.fromkeys([*entries, *rest]))


def has_gpu() -> bool:
    """Whether an NVIDIA device node is present (the driver creates /dev/nvidiactl)."""
    return Path("/dev/nvidiactl").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def forward_log(source: IO[bytes], log: IO | None, drop_gpu_noise: bool) -> None:
    """Copy tritonserver's output line by line to `log` (a text or binary file; None: this
    process's stderr), leaving out the known no-GPU probe lines when `drop_gpu_noise`."""
    out = log if log is not None else sys.stderr
    text = hasattr(out, "encoding")
    noted = False
    for raw in iter(source.readline, b""):
        line = raw.decode("utf-8", "replace")
        if drop_gpu_noise and any(noise in line for noise in NO_GPU_LINES):
            if noted:
                continue
            noted, line = True, NO_GPU_NOTE
        try:
            out.write(line if text else line.encode())
            out.flush()
        except (OSError, ValueError):  # the log was closed under us: keep draining the pipe
            pass
    source.close()


def stop_with_parent() -> None:
    """In the child before exec: SIGTERM it when its parent dies, so a killed test run or
    CLI never leaves a server (and its ports and model processes) behind. Linux ties this to
    the starting thread: start servers from a thread that outlives them."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def prepare_server_process() -> None:
    """In the child before exec: stopped with its parent, and SIGCHLD ignored (the exec keeps
    that), so the kernel reaps each model process the moment it exits. Triton 2.51 waits for
    a stub only when it finalizes the stub's instance, which never happens to an instance whose
    stub died under load (stub_watch.py): each dead or retired stub would stay a zombie. Side
    effect: the python backend's probe `system(stub)` reads no exit status and chmods the stub
    to 0100 (its owner, and root, still run it)."""
    stop_with_parent()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)


class TritonServer:
    """`with TritonServer(repo) as server:` starts tritonserver and waits until it is ready."""

    def __init__(self, repository: str | Path, ports: Ports | None = None,
                 host: str = "127.0.0.1", log: IO | int | None = None, verbose: bool = False,
                 cache_mib: int = 0, control_key: str | None = None):
        self.repository = Path(repository).resolve()
        if not any(self.repository.glob("*/config.pbtxt")):
            raise FileNotFoundError(
                f"{self.repository} is not a model repository: run `fusionrank build` first")
        self.host = host
        self.ports = ports or Ports.free(host)
        self.log = log
        self.verbose = verbose
        if cache_mib < 0:
            raise ValueError(f"the response cache size must be 0 (off) or more MiB, "
                             f"not {cache_mib}")
        self.cache_mib = cache_mib  # Triton's local response cache; 0: none
        # Model control (load, unload, the repository index) answers only callers sending
        # this key: `deploy`, `status` and the watches read it from the record `start` writes.
        self.control_key = control_key or new_key()
        self.record: ControlRecord | None = None
        self.process: subprocess.Popen | None = None
        self._forwarder: threading.Thread | None = None
        missing = missing_backends(self.repository, triton_home() / "backends")
        if missing:
            needed = ", ".join(f"{model} ({backend})" for model, backend in missing.items())
            raise FileNotFoundError(
                f"{self.repository} needs Triton backends this tritonserver does not have: "
                f"{needed}. A `fusionrank build --device gpu` repository runs in NVIDIA's "
                "Triton container (docker/compose.yaml); build without --device gpu to serve "
                "here")

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    def control_headers(self, protocol: str = "grpc") -> dict[str, str]:
        """The header opening model control on this server, for tritonclient's `headers=`
        (load_model, unload_model, get_model_repository_index)."""
        return control_headers(self.control_key, protocol)

    def check_ports(self) -> None:
        """A PortInUse naming each port another process already listens on."""
        check_ports_free(self.host, {"gRPC": self.ports.grpc, "HTTP": self.ports.http,
                                     "metrics": self.ports.metrics})

    def command(self) -> list[str]:
        cache = self.repository.parent / ".triton_backends"
        return [
            str(triton_home() / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_directory(cache)}",
            f"--grpc-address={self.host}", f"--grpc-port={self.ports.grpc}",
            f"--http-address={self.host}", f"--http-port={self.ports.http}",
            f"--metrics-address={self.host}", f"--metrics-port={self.ports.metrics}",
            "--allow-metrics=true", "--exit-on-error=true", "--strict-readiness=true",
            # Every model at start, then loads and unloads on request only: how `fusionrank
            # deploy` adds a new version beside the serving one and switches to it.
            "--model-control-mode=explicit", "--load-model=*",
            *restriction_options(self.control_key),
            f"--log-verbose={1 if self.verbose else 0}",
            *self.cache_options(),
        ]

    def cache_options(self) -> list[str]:
        """The local response cache (the library ships in the Triton wheel), in memory: it starts
        empty with every server. Models opt in with `response_cache { enable: true }`."""
        if not self.cache_mib:
            return []
        return [f"--cache-directory={triton_home() / 'caches'}",
                f"--cache-config=local,size={self.cache_mib << 20}"]

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> TritonServer:
        self.check_ports()  # before anything loads: a taken port is an error, said at once
        forwarded = not isinstance(self.log, int)  # subprocess.DEVNULL: nothing to forward
        self.process = subprocess.Popen(
            self.command(), env=server_environment(),
            stdout=subprocess.PIPE if forwarded else self.log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=prepare_server_process)
        if forwarded:
            self._forwarder = threading.Thread(
                target=forward_log, args=(self.process.stdout, self.log, not has_gpu()),
                name="tritonserver-log", daemon=True)
            self._forwarder.start()
        self.wait_ready(timeout_s)
        self.record = ControlRecord(self.control_key, str(self.repository), self.host,
                                    self.ports.grpc, self.ports.http, self.ports.metrics,
                                    self.process.pid, os.getpid())
        write_record(self.record)
        return self

    def owns_ports(self) -> bool:
        """Whether our tritonserver itself listens on each of its ports: a readiness answer on
        a port some other server holds proves nothing about ours."""
        return all(holds_port(self.process.pid, port)
                   for port in (self.ports.grpc, self.ports.http, self.ports.metrics))

    def wait_ready(self, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(self.grpc_url)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"tritonserver exited with code {self.process.returncode} "
                                       "before it was ready; its log says why")
                try:
                    if client.is_server_ready() and self.owns_ports():
                        return
                except InferenceServerException:
                    pass
                time.sleep(0.25)
        finally:
            client.close()
        self.stop()
        raise TimeoutError(f"tritonserver was not ready within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.record is not None:
            remove_record(self.record)
            self.record = None
        if self.process is None or self.process.poll() is not None:
            self._join_forwarder()
            return
        self.process.send_signal(signal.SIGTERM)  # Triton unloads its models and exits
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._join_forwarder()

    def _join_forwarder(self) -> None:
        """Until the last lines of the log are written (the pipe closes with the server)."""
        if self._forwarder is not None:
            self._forwarder.join(timeout=5)
            self._forwarder = None

    def __enter__(self) -> TritonServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def children(parent: int) -> Iterator[tuple[int, str, str]]:
    """(pid, name, status) of each child process of `parent`, as psutil reads them: the name in
    full (a zombie's is cut to 15 characters, as Linux keeps it: its command line is gone), the
    status a psutil.STATUS_* (STATUS_ZOMBIE: exited, not yet waited for by its parent)."""
    try:
        found = psutil.Process(parent).children()
    except psutil.NoSuchProcess:
        return
    for child in found:
        try:
            with child.oneshot():
                name, status = child.name(), child.status()
        except psutil.NoSuchProcess:  # gone meanwhile
            continue
        yield child.pid, name, status


def child_process(parent: int, name: str) -> int:
    """The pid of `parent`'s child process called `name`, e.g. the tritonserver
    a `fusionrank serve` runs; LookupError where there is none."""
    for pid, command, _ in children(parent):
        if command == name:
            return pid
    raise LookupError(f"process {parent} has no child called {name}")
