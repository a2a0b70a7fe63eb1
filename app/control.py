"""Who may load and unload models on a running server, and who owns its ports.

Triton serves model control (load, unload, the repository index: the `model-repository`
endpoints, which also accept uploaded model code) on the same HTTP and gRPC ports as search.
`fusionrank serve` closes that group to callers without a key: Triton's own
`--http-restricted-api` / `--grpc-restricted-protocol`, with a random key made per server.

The key is kept in a file only its owner can read, one per server, in a folder beside the
model repository (never inside it: Triton, loading every model at start, takes each subfolder
of the repository for a model):

    build/model_repository                  the served models
    build/model_repository.control/         mode 0700
        grpc-8001.json                      mode 0600: key, ports, pids of the server on 8001

`fusionrank deploy` and `status` find it from their `--repository` and `--url`; a remote
server's key comes from `--control-key-file PATH` or `$FUSIONRANK_CONTROL_KEY`. The key is on
tritonserver's command line, so a user of the same machine who can list its processes can
read it: the key closes model control to the network, not to the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

CONTROL_HEADER = "fusionrank-control-key"
# Triton's gRPC front end expects a restricted protocol's header under this prefix.
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
CONTROL_KEY_ENV = "FUSIONRANK_CONTROL_KEY"
RESTRICTED_GROUP = "model-repository"  # load, unload and the repository index


def new_key() -> str:
    return secrets.token_urlsafe(32)


def control_headers(key: str, protocol: str = "grpc") -> dict[str, str]:
    """The header that opens model control, for tritonclient's `headers=`."""
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol must be grpc or http, not {protocol!r}")
    return {(GRPC_HEADER_PREFIX if protocol == "grpc" else "") + CONTROL_HEADER: key}


def restriction_options(key: str) -> list[str]:
    """tritonserver options closing model control, on both protocols, to callers without
    `key` (the syntax of Triton 2.51's --help: `<apis>:<header>=<value>`)."""
    rule = f"{RESTRICTED_GROUP}:{CONTROL_HEADER}={key}"
    return [f"--http-restricted-api={rule}", f"--grpc-restricted-protocol={rule}"]


# --- the control file ------------------------------------------------------------------------

@dataclass(frozen=True)
class ControlRecord:
    """What `serve` writes for the tools that drive it: the key, and which server it opens."""

    key: str
    repository: str  # the served model repository, resolved
    host: str
    grpc: int
    http: int
    metrics: int
    server_pid: int  # tritonserver
    owner_pid: int  # the process that started it (`fusionrank serve`, a test, a benchmark)

    def serves(self, url: str) -> bool:
        """Whether this server answers at the gRPC address `url` (host:port)."""
        host, _, port = url.rpartition(":")
        return port.isdigit() and int(port) == self.grpc and same_host(host, self.host)


def same_host(a: str, b: str) -> bool:
    loopback = {"127.0.0.1", "localhost", "::1", "[::1]"}
    wildcard = {"0.0.0.0", "::", "[::]", ""}
    return a == b or (a in loopback and (b in loopback or b in wildcard)) or (
        b in loopback and a in wildcard)


def control_folder(repository: str | Path) -> Path:
    repository = Path(repository).resolve()
    return repository.parent / f"{repository.name}.control"


def write_record(record: ControlRecord) -> Path:
    """The record, readable by its owner only from its first byte: created under a fresh name
    with O_EXCL and mode 0600, then renamed over a previous server's file on the same port."""
    folder = control_folder(record.repository)
    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)  # also a folder left by an older release, or made by hand
    path = folder / f"grpc-{record.grpc}.json"
    partial = folder / f".{path.name}.{secrets.token_hex(4)}"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(asdict(record), out, indent=1)
    os.replace(partial, path)
    return path


def remove_record(record: ControlRecord) -> None:
    """This server's file, unless another server has written its own over it since."""
    path = control_folder(record.repository) / f"grpc-{record.grpc}.json"
    with contextlib.suppress(OSError, ValueError):
        if read_record(path).key == record.key:
            path.unlink()
    with contextlib.suppress(OSError):
        control_folder(record.repository).rmdir()  # only when empty


def read_record(path: Path) -> ControlRecord:
    return ControlRecord(**json.loads(path.read_text()))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_records(repository: str | Path) -> list[ControlRecord]:
    """The records of the servers now running on `repository` (stale files left out)."""
    folder = control_folder(repository)
    found = []
    for path in sorted(folder.glob("grpc-*.json")) if folder.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, TypeError):
            record = read_record(path)
            if alive(record.server_pid):
                found.append(record)
    return found


class ControlError(RuntimeError):
    """No key for the server named, or a repository that server does not serve."""


def key_for(url: str, repository: str | Path | None, key_file: str | Path | None = None) -> str:
    """The model-control key of the server at `url`: from `key_file` when given, else from the
    record `serve` wrote beside `repository` for that server, else $FUSIONRANK_CONTROL_KEY (a
    server elsewhere). A ControlError says which is missing, and refuses a local `repository`
    that a server at another address serves, before anything is changed."""
    records = live_records(repository) if repository is not None else []
    serving = [record for record in records if record.serves(url)]
    if records and not serving:
        where = ", ".join(f"{r.host}:{r.grpc}" for r in records)
        raise ControlError(f"the server at {url} does not serve {repository}: that repository "
                           f"is served at {where}. Name the repository the server at {url} "
                           "serves, or the --url of the server serving this one")
    if key_file is not None:
        text = Path(key_file).read_text().strip()
        if text.startswith("{"):  # a server file copied from the serving host
            return ControlRecord(**json.loads(text)).key
        if not text:
            raise ControlError(f"--control-key-file {key_file} is empty")
        return text
    if serving:
        return serving[0].key
    if os.environ.get(CONTROL_KEY_ENV):
        return os.environ[CONTROL_KEY_ENV]
    if repository is None:
        raise ControlError(f"model control needs the server's key: name the repository it "
                           f"serves (--repository), or give --control-key-file or "
                           f"${CONTROL_KEY_ENV}")
    raise ControlError(f"no running `fusionrank serve` serves {repository} on this machine (no "
                       f"live server file in {control_folder(repository)}): name the "
                       f"repository the server at {url} serves, or for a server elsewhere "
                       f"give its key (--control-key-file or ${CONTROL_KEY_ENV})")


# --- ports -----------------------------------------------------------------------------------

def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on `port` where a server on `host` would bind it. SO_REUSEADDR
    as servers set it: a socket lingering in TIME_WAIT does not count, a listener does."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def listeners(port: int) -> list[int | None]:
    """The pid of each socket listening on TCP `port`, any address; None for a socket whose
    process this user may not see (another user's)."""
    return [connection.pid for connection in psutil.net_connections(kind="tcp")
            if connection.status == psutil.CONN_LISTEN and connection.laddr
            and connection.laddr.port == port]


def port_owners(port: int) -> list[tuple[int, str]]:
    """(pid, name) of each process this user can see listening on `port`."""
    owners = set()
    for pid in {pid for pid in listeners(port) if pid is not None}:
        with contextlib.suppress(psutil.NoSuchProcess):  # closed meanwhile
            owners.add((pid, psutil.Process(pid).name()))
    return sorted(owners)


def port_holder(port: int) -> str:
    """Who listens on `port`, in words, for a message."""
    owners = port_owners(port)
    if not owners:
        return "a process of another user, or outside this machine's view"
    return ", ".join(f"{name} (pid {pid})" for pid, name in owners)


def holds_port(pid: int, port: int) -> bool:
    """Whether process `pid` itself listens on `port`."""
    return pid in listeners(port)


class PortInUse(RuntimeError):
    """A port the server was to listen on is taken: said before anything is started."""


PORT_OPTIONS = "--grpc-port, --http-port, --metrics-port"


def check_ports_free(host: str, ports: dict[str, int], options: str = PORT_OPTIONS) -> None:
    """A PortInUse naming each of `ports` ({what: port}) already taken, and who holds it;
    `options`: the command's options that choose others."""
    taken = [f"{what} port {port} is in use by {port_holder(port)}"
             for what, port in ports.items() if port_in_use(host, port)]
    if taken:
        raise PortInUse(f"{'; '.join(taken)}; nothing was started. Stop that server or choose "
                        f"other ports ({options})")
