"""Keep every model of the served repository loaded, and say so when one was not.

Triton's `/v2/health/ready` (strict readiness) looks only at the models it has loaded: a model
unloaded through model control simply stops counting, and the server still says ready while
every call to it fails with NOT_FOUND. Model control is closed to callers without the key
(control.py), so only an operator can unload a model now; `ModelWatch` makes that visible and
undoes it: once a second it compares the repository's models with the server's index and
reloads each one that is not READY, LOADING or UNLOADING, saying so on stderr. A rollout
(`fusionrank deploy`) loads and unloads versions on purpose: the watch looks only while no
rollout holds the repository's lock, and holds that lock while it reloads.

    with ModelWatch(server):   # a started TritonServer; `fusionrank serve` runs one
        ...
"""

from __future__ import annotations

import contextlib
import fcntl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from fusionrank.app.deploy import LOCK, model_configs
from fusionrank.app.looks import Looks
from fusionrank.app.serve import TritonServer

INTERVAL_S = 1.0
RETRY_AFTER_S = 30.0  # a model whose reload failed is tried again after this long, not each look
BUSY = {"READY", "LOADING", "UNLOADING"}


@contextlib.contextmanager
def no_rollout(server: TritonServer) -> Iterator[bool]:
    """True (holding the rollout lock) when no rollout is under way on the server's
    repository; False when one is."""
    with (server.repository / LOCK).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


@dataclass
class ModelWatch:
    server: TritonServer
    interval_s: float = INTERVAL_S
    say: Callable[[str], None] = field(
        default=lambda line: print(f"fusionrank serve: {line}", file=sys.stderr, flush=True))
    reloaded: list[str] = field(default_factory=list)  # each model reloaded, in order

    def __post_init__(self) -> None:
        self._failed_at: dict[str, float] = {}
        self._looks = Looks("model-watch", self.interval_s, self.check, lambda error: self.say(
            f"the model watch failed a look: {error}"))

    def __enter__(self) -> ModelWatch:
        self._looks.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._looks.stop()

    def missing(self, client) -> list[str]:
        """The models of the repository the server does not serve now."""
        index = client.get_model_repository_index(headers=self.server.control_headers()).models
        ready = {m.name for m in index if m.state in BUSY}  # any version of it
        return sorted(set(model_configs(self.server.repository)) - ready)

    @staticmethod
    def live(client) -> bool:
        from tritonclient.utils import InferenceServerException

        try:
            return client.is_server_live()
        except InferenceServerException:
            return False

    def check(self) -> list[str]:
        """One look; reloads each missing model (not one that failed within RETRY_AFTER_S)."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        process = self.server.process
        if process is None or process.poll() is not None:
            return []  # no server, or `fusionrank serve` is restarting it
        done = []
        client = grpcclient.InferenceServerClient(self.server.grpc_url)
        try:
            if not self.live(client):
                return []  # starting or stopping: nothing to compare yet
            with no_rollout(self.server) as free:
                if not free:
                    return []
                for model in self.missing(client):
                    if time.monotonic() - self._failed_at.get(model, -RETRY_AFTER_S) \
                            < RETRY_AFTER_S:
                        continue
                    self.say(f"{model} is in the repository but not served (unloaded through "
                             "model control?); loading it again")
                    try:
                        client.load_model(model, headers=self.server.control_headers())
                    except InferenceServerException as error:
                        self._failed_at[model] = time.monotonic()
                        self.say(f"could not load {model} again: {error.message()}; "
                                 f"calls to it fail until it loads (next try in "
                                 f"{RETRY_AFTER_S:.0f} s)")
                        continue
                    self._failed_at.pop(model, None)
                    self.reloaded.append(model)
                    done.append(model)
                    self.say(f"{model} is served again")
        finally:
            client.close()
        return done
