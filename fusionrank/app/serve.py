"""Run NVIDIA Triton Inference Server (the binary in the nvidia-pytriton wheel) on a model
repository: chosen or free ports, readiness wait, log forwarding, clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


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
    for source in [*(home / "backends" / "python").iterdir(), stub]:
        link = python / source.name
        if source.is_file() and not (link.is_symlink() and link.resolve() == source.resolve()):
            link.unlink(missing_ok=True)
            link.symlink_to(source)
    return cache


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


def stop_with_parent() -> None:
    """In the child before exec: SIGTERM it when its parent dies, so a killed test run or
    CLI never leaves a server (and its ports and model processes) behind. Linux ties this to
    the starting thread: start servers from a thread that outlives them."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class TritonServer:
    """`with TritonServer(repo) as server:` starts tritonserver and waits until it is ready."""

    def __init__(self, repository: str | Path, ports: Ports | None = None,
                 host: str = "127.0.0.1", log: IO | None = None, verbose: bool = False,
                 cache_mib: int = 0):
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
        self.process: subprocess.Popen | None = None
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
        self.process = subprocess.Popen(
            self.command(), env=server_environment(), stdout=self.log,
            stderr=subprocess.STDOUT if self.log else None, start_new_session=True,
            preexec_fn=stop_with_parent)
        self.wait_ready(timeout_s)
        return self

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
                    if client.is_server_ready():
                        return
                except InferenceServerException:
                    pass
                time.sleep(0.25)
        finally:
            client.close()
        self.stop()
        raise TimeoutError(f"tritonserver was not ready within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # Triton unloads its models and exits
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> TritonServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def children(parent: int) -> Iterator[tuple[int, str, str]]:
    """(pid, name, state) of each child process of `parent` (Linux /proc): names are cut to
    15 characters; state "Z" is a zombie (exited, not yet waited for by its parent)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        command, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
        state, ppid = rest.split()[:2]
        if int(ppid) == parent:
            yield int(entry.name), command, state


def child_process(parent: int, name: str) -> int:
    """The pid of `parent`'s child process called `name` (Linux /proc), e.g. the tritonserver
    a `fusionrank serve` runs; LookupError where there is none."""
    for pid, command, _ in children(parent):
        if command == name:
            return pid
    raise LookupError(f"process {parent} has no child called {name}")
