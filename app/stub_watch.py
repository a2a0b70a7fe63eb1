"""Bring back a model whose process died, retire the copy it replaced, and clean up after a
server that died.

Triton's Python backend runs each model instance in a process of its own, the stub
(`triton_python_backend_stub`, a child of tritonserver). When a stub dies (killed, out of
memory, a crash in native code), Triton 2.51 neither starts it again nor marks the model
unready: each request the dead instance takes waits 1 s and fails with INTERNAL "Stub process
'ranker_0_1' is not healthy.", for as long as the server runs.

Worse, that model version can then never be unloaded: the python backend creates a response
factory (which holds the model) for each request it hands a stub and frees it only when the stub
answers, so every request the dead instance took leaks one. Reloading or unloading the model
leaves the old version UNLOADING forever: its healthy instances' stubs stay alive (a whole
copy of the model's memory, never used again), the dead stub's shared-memory file stays, and
Triton never waits for the dead stub (its instance is never finalized), so it stays a zombie
unless the server reaps children itself (`serve.reap_children`: SIGCHLD ignored).

`StubWatch` looks at the server's stubs twice a second and remembers each one's model and
shared-memory file (from its command line). A stub that disappeared (or is a zombie) while its
shared-memory file is still there died: Triton removes the file when it unloads an instance
normally. The watch then reloads that model through Triton's model control (the server runs
in explicit mode): new instances load beside the broken ones, which keep taking (and failing)
requests until the new ones are ready. Triton skips the load of a model that has not changed,
so the reload passes the model's own config with one parameter changed (RELOAD_PARAMETER).
Once the new copy serves, the watch retires the old one: it lets requests already in the old
copy finish (RETIRE_AFTER_S), kills its stubs (SIGKILL: Triton no longer sends them any) and
removes the old copy's shared-memory files. The SDK retries the requests that failed meanwhile
(ModelProcessError), so callers within their deadline do not see it.

When the server itself dies, `fusionrank serve` restarts it (supervision.py `keep_serving`), which
first stops the model processes it left (`processes.clean_after_server`); the watch removes
the shared-memory files of that server it had seen.

    with StubWatch(server):   # a started TritonServer; `fusionrank serve` runs one
        ...
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psutil

from fusionrank.app.looks import Looks
from fusionrank.app.processes import kill_and_wait, running, stub_args, stubs
from fusionrank.app.serve import TritonServer, children
from fusionrank.model_repository.stub_process import (
    STUB_NAME,
    StubArgs,
    region_path,
    remove_region,
)

STUB = STUB_NAME  # a live stub's process name, in full as psutil reads it
RELOAD_PARAMETER = "reloaded_at"  # set in the config of a model reloaded after its stub died
INTERVAL_S = 0.5
UNLOADED_WITHIN_S = 0.3  # a stub ended by an unload has its file removed by Triton within this
RETIRE_AFTER_S = 1.0  # requests already in the replaced copy finish within this


def stub_model(pid: int) -> str | None:
    """The model a live stub runs (its command line names the model's `model.py`). None for a
    zombie (its command line is gone) or a process already gone."""
    args = stub_args(pid)
    return args.model if args else None


def live_stubs(server: int, model: str) -> list[int]:
    """The live stub processes of `model` under the tritonserver of pid `server`."""
    return [stub.pid for stub in stubs(server)
            if stub.args.model == model and stub.ppid == server and not stub.zombie]


def is_zombie(parent: int, pid: int) -> bool:
    return any(child == pid and state == psutil.STATUS_ZOMBIE
               for child, _, state in children(parent))


@dataclass
class Reload:
    model: str
    dead_pids: list[int]
    seconds: float
    error: str | None = None
    retired_pids: list[int] = field(default_factory=list)  # the replaced copy's live stubs
    removed_regions: list[str] = field(default_factory=list)


@dataclass
class StubWatch:
    """Reloads the model of any stub of `server` that died and retires the replaced copy; drops
    the shared-memory files of a server that died (see the module's doc)."""

    server: TritonServer
    interval_s: float = INTERVAL_S
    say: Callable[[str], None] = field(
        default=lambda line: print(f"fusionrank serve: {line}", file=sys.stderr, flush=True))
    reloads: list[Reload] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server_pid: int | None = None
        self._stubs: dict[int, StubArgs] = {}  # live stub pid → what it runs, as seen alive
        self._dead: dict[int, StubArgs] = {}  # died, their copy not yet retired
        self._looks = Looks("stub-watch", self.interval_s, self.check, lambda error: self.say(
            f"the model-process watch failed a look: {error!r}"))

    def start(self) -> StubWatch:
        self.check()  # learn every stub of the started server at once
        self._looks.start()
        return self

    def stop(self) -> None:
        self._looks.stop()

    def __enter__(self) -> StubWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def check(self) -> list[Reload]:
        """One look at the server's stubs; reloads the models of the dead ones."""
        process = self.server.process
        if self._server_pid is not None and (process is None or process.pid != self._server_pid
                                             or process.poll() is not None):
            self._server_gone()
        if process is None or process.poll() is not None:
            return []  # no server, or one `fusionrank serve` is restarting
        self._server_pid = process.pid
        dead: dict[str, list[int]] = {}
        for pid, args in self._dead_stubs(process.pid).items():
            dead.setdefault(args.model, []).append(pid)
        done = []
        for model, pids in dead.items():
            self.say(f"the model process(es) {pids} of {model} died; reloading {model}")
            done.append(self.reload(model, pids))
        return done

    def _dead_stubs(self, server_pid: int) -> dict[int, StubArgs]:
        """Learn the server's new stubs; those that died since the last look."""
        self._learn(server_pid)
        gone = [pid for pid in self._stubs if not running(pid)]
        if gone:
            time.sleep(UNLOADED_WITHIN_S)
        dead = {}
        for pid in gone:
            args = self._stubs.pop(pid)
            if region_path(args.region).exists():  # an unload would have removed it
                dead[pid] = self._dead[pid] = args
        return dead

    def _learn(self, server_pid: int) -> None:
        for stub in stubs(server_pid):
            if stub.ppid == server_pid and not stub.zombie:
                self._stubs.setdefault(stub.pid, stub.args)

    def _server_gone(self) -> None:
        """The watched server died: remove the shared-memory files of its stubs (those still
        running are stopped by `keep_serving`, or end themselves)."""
        known = [args.region for args in [*self._stubs.values(), *self._dead.values()]]
        removed = [name for name in known if remove_region(name)]
        if removed:
            self.say(f"removed {len(removed)} shared-memory file(s) of the tritonserver "
                     f"{self._server_pid} that died")
        self._stubs.clear()
        self._dead.clear()
        self._server_pid = None

    def reload(self, model: str, dead_pids: list[int]) -> Reload:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        started = time.monotonic()
        # Every stub the model has now belongs to the copy this reload replaces.
        replaced = {pid: args for pid, args in self._stubs.items() if args.model == model}
        for pid in replaced:  # the next of them to die needs no reload of its own
            del self._stubs[pid]
        client = grpcclient.InferenceServerClient(self.server.grpc_url)
        try:
            config = client.get_model_config(model, as_json=True)["config"]
            config.setdefault("parameters", {})[RELOAD_PARAMETER] = {
                "string_value": datetime.now(UTC).isoformat(timespec="milliseconds")}
            client.load_model(model, config=json.dumps(config),
                              headers=self.server.control_headers())
            error = None
        except InferenceServerException as failure:
            error = failure.message() or str(failure)
        finally:
            client.close()
        reload = Reload(model, dead_pids, round(time.monotonic() - started, 2), error)
        if error is None:
            if self._server_pid is not None:  # the new copy's, before one of them dies
                self._learn(self._server_pid)
            self._retire(reload, replaced)
        self.reloads.append(reload)
        self.say(f"reloaded {model} in {reload.seconds:.1f} s" + (
            f"; retired the replaced copy's {len(reload.retired_pids)} process(es)"
            if reload.retired_pids else "") if error is None else
                 f"could not reload {model} ({error}): its dead instance(s) fail every request "
                 "they take until the server restarts")
        return reload

    def _retire(self, reload: Reload, replaced: dict[int, StubArgs]) -> None:
        """Stop the replaced copy: Triton 2.51 never unloads it (see the module's doc)."""
        time.sleep(RETIRE_AFTER_S)
        alive = [pid for pid in replaced if running(pid)]
        kill_and_wait(alive)
        regions = [args.region for args in replaced.values()]
        regions += [self._dead.pop(pid).region for pid in reload.dead_pids
                    if pid in self._dead]
        reload.retired_pids = alive
        reload.removed_regions = [name for name in regions if remove_region(name)]
