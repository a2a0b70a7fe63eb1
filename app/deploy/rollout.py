"""One rollout from start to finish: the server proven to serve the repository, one rollout at a
time, plan, apply (app/deploy/apply.py), the manifest updated, and its record
appended to the rollout log, `rollouts.jsonl` beside the models."""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fusionrank.app.control import ControlError, control_headers, key_for
from fusionrank.app.deploy.apply import Deployment
from fusionrank.app.deploy.errors import RolloutRefused, first_line
from fusionrank.app.deploy.plan import FIRST_BUILT, model_configs, plan_rollout, read_manifest
from fusionrank.core import artefacts as names

ROLLOUT_LOG = "rollouts.jsonl"
LOCK = ".rollout.lock"
DRAIN_S = 2.0


@dataclass
class Rollout:
    """One line of the rollout log."""

    started_at: str
    source: str
    outcome: str = "refused"  # switched, refused or unchanged
    version: int = 0  # the version the changed models were rolled out under
    models: dict[str, list[int]] = field(default_factory=dict)  # model → [from, to]; from 0: new
    reason: str = ""
    switched_at: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # per phase, and total

    def summary(self) -> str:
        moves = ", ".join(f"{m} {a or 'new'} → {b}" for m, (a, b) in sorted(self.models.items()))
        phases = ", ".join(f"{k} {v:.2f} s" for k, v in self.seconds.items())
        why = f": {self.reason}" if self.reason else ""
        return f"rollout {self.outcome}{why}\n  {moves or 'no model changed'}\n  {phases}"


class PhaseClock:
    """The seconds each phase of a rollout took, written into its record as it goes."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds = seconds
        self.started = self.last = time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = round(now - self.last, 3)
        self.last = now

    def stop(self) -> None:
        self.seconds["total"] = round(time.monotonic() - self.started, 3)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def read_log(repository: Path) -> list[dict]:
    path = repository / ROLLOUT_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_log(repository: Path, record: Rollout) -> None:
    with (repository / ROLLOUT_LOG).open("a") as log:
        log.write(json.dumps(asdict(record)) + "\n")


@contextlib.contextmanager
def exclusive(repository: Path) -> Iterator[None]:
    """One rollout at a time per repository."""
    with (repository / LOCK).open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RolloutRefused(f"another rollout is under way on {repository}") from None
        yield


def check_serves(client: grpcclient.InferenceServerClient, url: str, repository: Path,
                 headers: dict[str, str]) -> None:
    """A ControlError unless the server at `url` knows every model of `repository` (a server
    elsewhere, whose key came from --control-key-file, has no local record to prove it)."""
    try:
        known = {m.name for m in client.get_model_repository_index(headers=headers).models}
    except InferenceServerException as error:
        raise ControlError(f"the server at {url} refused model control: {first_line(error)}"
                           ) from None
    unknown = sorted(set(model_configs(repository)) - known)
    if unknown:
        raise ControlError(f"the server at {url} does not serve {repository}: it has no model "
                           f"{', '.join(unknown)}. Name the repository it serves")


def deploy(url: str, repository: str | Path, source: str | Path, drain_s: float = DRAIN_S,
           control_key: str | None = None) -> Rollout:
    """Roll the source repository's changed models out to the server at `url` serving
    `repository`; the outcome is logged in `repository/rollouts.jsonl` and returned.

    `control_key`: the server's model-control key; None reads it from the record `serve` keeps
    beside `repository` (key_for). A server at `url` that does not serve `repository` raises a
    ControlError before anything is written there."""
    repository, source = Path(repository).resolve(), Path(source).resolve()
    headers = control_headers(control_key or key_for(url, repository))
    record = Rollout(now(), str(source))
    clock = PhaseClock(record.seconds)
    client = grpcclient.InferenceServerClient(url)
    try:
        check_serves(client, url, repository, headers)
        with exclusive(repository):
            plan = plan_rollout(repository, source)
            record.version, record.models = plan.version, plan.moves(repository)
            clock.lap("plan")
            if not plan.changed and not plan.ensembles:
                record.outcome = "unchanged"
            else:
                run_rollout(Deployment(client, url, repository, source, plan, headers), record,
                            clock, drain_s)
    except RolloutRefused as error:
        record.outcome, record.reason = "refused", str(error)
    finally:
        client.close()
    clock.stop()
    append_log(repository, record)
    return record


def run_rollout(deployment: Deployment, record: Rollout, clock: PhaseClock,
                drain_s: float) -> None:
    """The phases in order; a failure before the switch is complete undoes them all."""
    try:
        deployment.stage_and_load()
        clock.lap("load")
        deployment.probe()
        clock.lap("probe")
        deployment.switch()
        clock.lap("switch")
    except BaseException:
        deployment.undo()
        raise
    record.outcome, record.switched_at = "switched", now()
    update_manifest(deployment.repository, deployment.source, deployment.plan.version,
                    record.switched_at)
    if any(deployment.plan.changed.values()):
        time.sleep(drain_s)  # a request that reached an old ensemble version starts its steps
    clock.lap("drain")
    try:
        deployment.drop_old()
    except RolloutRefused as error:  # switched: the old versions stay loaded, idle
        record.reason = f"switched, but dropping the old versions failed: {error}"
    clock.lap("drop_old")


def update_manifest(repository: Path, source: Path, version: int, switched_at: str) -> None:
    """fusionrank.json describes the source build now, under the rolled-out version; ensembles
    the source did not carry keep their entries."""
    previous, served = read_manifest(repository), read_manifest(source)
    served["ensembles"] = {**previous.get("ensembles", {}), **served.get("ensembles", {})}
    # The build the repository was first served from: the models no rollout touched still
    # serve since then (status), whatever build the later rollouts came from.
    first = previous.get(FIRST_BUILT, previous.get("built_at", ""))
    served |= {"version": version, "rolled_out_at": switched_at, FIRST_BUILT: first}
    (repository / names.REPOSITORY_MANIFEST).write_text(json.dumps(served, indent=2) + "\n")
