"""Bring back a model whose process died.

Triton's Python backend runs each model instance in a process of its own, the stub
(`triton_python_backend_stub`, a child of tritonserver). When a stub dies (killed, out of
memory, a crash in native code), Triton 2.51 neither starts it again nor marks the model
unready: each request the dead instance takes waits 1 s and fails with INTERNAL "Stub process
'ranker_0_1' is not healthy.", for as long as the server runs, and the stub stays a zombie
child of tritonserver until its instance is unloaded.

`StubWatch` looks at tritonserver's children twice a second, remembers which model each stub
runs (its command line names the model's `model.py`), and when one has died, reloads that model
through Triton's model control (the server runs in explicit mode): new instances load beside the
broken ones, which keep taking (and failing) requests until the new ones are ready, then go.
Triton skips the load of a model that has not changed, so the reload passes the model's own
config with one parameter changed (RELOAD_PARAMETER). The SDK retries the requests that failed
meanwhile (ModelProcessError), so callers within their deadline do not see it.

    with StubWatch(server):   # a started TritonServer; `fusionrank serve` runs one
        ...
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fusionrank.app.serve import TritonServer, children

STUB = "triton_python_b"  # triton_python_backend_stub, as /proc cuts names (15 characters)
RELOAD_PARAMETER = "reloaded_at"  # set in the config of a model reloaded after its stub died
INTERVAL_S = 0.5
REAPED_WITHIN_S = 0.2  # a stub that exits in an unload is waited for at once: not a death


def stub_model(pid: int) -> str | None:
    """The model a live stub runs: its second argument is `<repository>/<model>/<version>/
    model.py`. None for a zombie (its command line is gone) or a process already gone."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return Path(argv[1].decode()).parent.parent.name if len(argv) > 2 else None


def live_stubs(server: int, model: str) -> list[int]:
    """The live stub processes of `model` under the tritonserver of pid `server`."""
    return [pid for pid, name, state in children(server)
            if name == STUB and state != "Z" and stub_model(pid) == model]


def is_zombie(parent: int, pid: int) -> bool:
    return any(child == pid and state == "Z" for child, _, state in children(parent))


@dataclass
class Reload:
    model: str
    dead_pids: list[int]
    seconds: float
    error: str | None = None


@dataclass
class StubWatch:
    """Reloads the model of any stub of `server` that died (see the module's doc)."""

    server: TritonServer
    interval_s: float = INTERVAL_S
    say: Callable[[str], None] = field(
        default=lambda line: print(f"fusionrank serve: {line}", file=sys.stderr, flush=True))
    reloads: list[Reload] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._models: dict[int, str] = {}  # stub pid → its model, as seen alive
        self._handled: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stub-watch", daemon=True)

    def start(self) -> StubWatch:
        self.check()  # learn every stub of the started server at once
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> StubWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception as error:  # a look that failed must not end the watch
                self.say(f"the model-process watch failed a look: {error!r}")

    def check(self) -> list[Reload]:
        """One look at the server's stubs; reloads the models of the dead ones."""
        process = self.server.process
        if process is None or process.poll() is not None:
            return []  # no server, or one `fusionrank serve` is restarting
        dead: dict[str, list[int]] = {}
        for pid, name, state in list(children(process.pid)):
            if name != STUB or pid in self._handled:
                continue
            if state != "Z":
                if not self._models.get(pid):
                    self._models[pid] = stub_model(pid) or ""
                continue
            time.sleep(REAPED_WITHIN_S)
            if is_zombie(process.pid, pid):
                self._handled.add(pid)
                dead.setdefault(self._models.get(pid, ""), []).append(pid)
        done = []
        for model, pids in dead.items():
            if not model:
                self.say(f"model process(es) {pids} died before the watch saw which model they "
                         "ran; restart the server to bring them back")
                continue
            self.say(f"the model process(es) {pids} of {model} died; reloading {model}")
            done.append(self.reload(model, pids))
        return done

    def reload(self, model: str, dead_pids: list[int]) -> Reload:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        started = time.monotonic()
        # Every stub the model has now belongs to the copy this reload replaces: one of those
        # that dies next (two killed at once are seen a look apart) needs no reload of its own.
        self._handled.update(pid for pid, name in self._models.items() if name == model)
        client = grpcclient.InferenceServerClient(self.server.grpc_url)
        try:
            config = client.get_model_config(model, as_json=True)["config"]
            config.setdefault("parameters", {})[RELOAD_PARAMETER] = {
                "string_value": datetime.now(UTC).isoformat(timespec="milliseconds")}
            client.load_model(model, config=json.dumps(config))
            error = None
        except InferenceServerException as failure:
            error = failure.message() or str(failure)
        finally:
            client.close()
        reload = Reload(model, dead_pids, round(time.monotonic() - started, 2), error)
        self.reloads.append(reload)
        self.say(f"reloaded {model} in {reload.seconds:.1f} s" if error is None else
                 f"could not reload {model} ({error}): its dead instance(s) fail every request "
                 "they take until the server restarts")
        return reload
