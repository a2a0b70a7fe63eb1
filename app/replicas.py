"""`fusionrank serve --replicas N`: N Triton servers on this machine, as N machines would run
them behind one list of addresses. Each replica has its own ports (the first replica's plus
PORT_STEP per replica) and its own model repository, and is restarted by itself when it dies;
all start or none does, and all stop together.

    fusionrank serve --replicas 2 --no-web      # gRPC 8001 and 8011, HTTP 8000 and 8010, ...
    FusionRankClient(["127.0.0.1:8001", "127.0.0.1:8011"])    # takes turns, fails over
    fusionrank deploy --rolling --source build-next/model_repository

Replica 0 serves `--repository` itself, replica i a copy of it, `<repository>.replicas/<i>`,
made anew at each start: the version folders' files hard-linked (a rollout adds and removes
whole version folders and never writes into a file), the configs and manifests copied (a
rollout rewrites those in place). A replica's own copy is what lets `deploy --rolling` switch
the replicas one at a time, each with the in-place rollout of app/deploy, while the others go
on serving the build before. The replica set is recorded beside the repository
(`<repository>.control/replicas.json`, owner only) for `deploy --rolling` and `status`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from fusionrank.app.control import (
    PORT_OPTIONS,
    alive,
    check_ports_free,
    control_folder,
    port_in_use,
    read_record,
)
from fusionrank.app.serve import Ports, TritonServer, free_port
from fusionrank.app.supervision import keep_serving
from fusionrank.model_repository.config import compile_shim

PORT_STEP = 10  # replica i listens on the first replica's ports + i × PORT_STEP
REPLICAS_RECORD = "replicas.json"
LIVE_CATALOGUE_MODEL = "catalogue"  # a live catalogue's change log is one per repository


@dataclass(frozen=True)
class Replica:
    number: int
    repository: Path
    host: str
    ports: Ports

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def name(self) -> str:
        return f"replica {self.number}"


def replica_ports(first: Ports, count: int, step: int = PORT_STEP) -> list[Ports]:
    return [Ports(first.grpc + i * step, first.http + i * step, first.metrics + i * step)
            for i in range(count)]


def free_replica_ports(count: int, host: str = "127.0.0.1", tries: int = 50) -> Ports:
    """The first replica's ports (gRPC p, HTTP p + 1, metrics p + 2) for a run of `count`
    replicas whose ports are all free now (tests and benchmarks: loopback, bounded tries)."""
    for _ in range(tries):
        base = free_port(host)
        first = Ports(base, base + 1, base + 2)
        wanted = [port for ports in replica_ports(first, count)
                  for port in (ports.grpc, ports.http, ports.metrics)]
        if max(wanted) < 65536 and not any(port_in_use(host, port) for port in wanted):
            return first
    raise RuntimeError(f"no run of free ports for {count} replicas found in {tries} tries")


def replica_repository(repository: Path, number: int) -> Path:
    repository = Path(repository).resolve()
    if number == 0:
        return repository
    return repository.parent / f"{repository.name}.replicas" / str(number)


def plan_replicas(repository: Path, count: int, host: str, first: Ports) -> list[Replica]:
    """The replicas `serve --replicas count` runs; a ValueError for a count below 1 or a
    repository with a live catalogue (its change log and compactions belong to one server)."""
    if count < 1:
        raise ValueError(f"--replicas must be at least 1, not {count}")
    if count > 1 and (Path(repository) / LIVE_CATALOGUE_MODEL / "config.pbtxt").is_file():
        raise ValueError(f"{repository} serves a live catalogue, whose changes one server "
                         "applies: serve it without --replicas")
    return [Replica(i, replica_repository(repository, i), host, ports)
            for i, ports in enumerate(replica_ports(first, count))]


def check_replica_ports(replicas: list[Replica]) -> None:
    """A PortInUse naming each replica's taken ports, before any replica starts."""
    ports = {}
    for replica in replicas:
        ports |= {f"{replica.name}: gRPC": replica.ports.grpc,
                  f"{replica.name}: HTTP": replica.ports.http,
                  f"{replica.name}: metrics": replica.ports.metrics}
    check_ports_free(replicas[0].host, ports,
                     f"{PORT_OPTIONS}: replica i listens on each + {PORT_STEP}·i")


def copy_repository(source: Path, target: Path) -> None:
    """`target` as a replica's own copy of the model repository `source` (see the module's
    docstring); whatever was at `target` is replaced."""
    if target.exists():
        shutil.rmtree(target)

    def copy(path: str, destination: str) -> None:
        in_version_folder = Path(path).parent.name.isdigit()
        (os.link if in_version_folder else shutil.copy2)(path, destination)

    shutil.copytree(source, target, copy_function=copy,
                    ignore=shutil.ignore_patterns("__pycache__", ".rollout.lock"))
    for shim in target.glob("*/*/model.py"):
        compile_shim(shim.parent)


@dataclass(frozen=True)
class ReplicaAddress:
    url: str  # gRPC host:port
    repository: str


def write_replica_set(repository: Path, replicas: list[Replica]) -> Path:
    folder = control_folder(repository)
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / REPLICAS_RECORD
    record = {"owner_pid": os.getpid(),
              "replicas": [asdict(ReplicaAddress(r.grpc_url, str(r.repository)))
                           for r in replicas]}
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(partial, path)
    return path


def read_replica_set(repository: Path) -> list[ReplicaAddress]:
    """The replicas a running `serve --replicas` serves `repository` with; [] where none
    does (no record, or its `serve` has ended)."""
    path = control_folder(repository) / REPLICAS_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not alive(record.get("owner_pid", -1)):
        return []
    return [ReplicaAddress(**r) for r in record["replicas"]]


def server_pid(repository: Path, url: str) -> int:
    """The pid of the tritonserver that serves the replica at `url` now (from the records
    `serve` keeps: it changes when the replica is restarted)."""
    (replica,) = [r for r in read_replica_set(repository) if r.url == url]
    port = url.rpartition(":")[2]
    return read_record(control_folder(replica.repository) / f"grpc-{port}.json").server_pid


class ReplicaSet:
    """The replicas' servers: `start` starts each (or, when one fails, stops those started and
    raises), `serve` keeps each up until Ctrl-C / SIGTERM, `stop` stops all."""

    def __init__(self, replicas: list[Replica], cache_mib: int = 0, verbose: bool = False):
        self.replicas = replicas
        self.servers: list[TritonServer] = []  # those started, in replica order
        self.cache_mib, self.verbose = cache_mib, verbose
        self._stopping = threading.Event()
        self._exits: list[int] = []

    @property
    def urls(self) -> list[str]:
        return [r.grpc_url for r in self.replicas]

    def start(self) -> ReplicaSet:
        check_replica_ports(self.replicas)  # all free, or none starts
        try:
            for replica in self.replicas:
                if replica.number:
                    copy_repository(self.replicas[0].repository, replica.repository)
                server = TritonServer(replica.repository, replica.ports, host=replica.host,
                                      verbose=self.verbose, cache_mib=self.cache_mib)
                self.servers.append(server)
                server.start()
                print(f"fusionrank serve: {replica.name} serving {replica.repository} on gRPC "
                      f"{replica.grpc_url}", file=sys.stderr, flush=True)
        except BaseException:
            self.stop()
            raise
        write_replica_set(self.replicas[0].repository, self.replicas)
        return self

    def serve(self, max_restarts: int) -> int:
        """Keep every replica up (each restarted by itself, `keep_serving`) until interrupted;
        1 if a replica gave up restarting (the others are stopped with it)."""
        from fusionrank.app.model_watch import ModelWatch
        from fusionrank.app.stub_watch import StubWatch

        def supervise(replica: Replica, server: TritonServer) -> None:
            code = keep_serving(server, max_restarts, f"fusionrank serve ({replica.name})",
                                self._stopping)
            self._exits.append(code)
            if code:
                self._stopping.set()

        with contextlib.ExitStack() as watches:
            for server in self.servers:
                watches.enter_context(StubWatch(server))
                watches.enter_context(ModelWatch(server))
            threads = [threading.Thread(target=supervise, args=pair, daemon=True,
                                        name=f"supervise-{pair[0].name}")
                       for pair in zip(self.replicas, self.servers, strict=True)]
            for thread in threads:
                thread.start()
            while not self._stopping.wait(1.0):  # wakes for Ctrl-C between waits
                pass
        return 1 if any(self._exits) else 0

    def stop(self) -> None:
        self._stopping.set()
        for server in self.servers:
            server.stop()
        with contextlib.suppress(OSError):
            (control_folder(self.replicas[0].repository) / REPLICAS_RECORD).unlink()
