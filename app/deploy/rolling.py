"""`fusionrank deploy --rolling`: a new build through the replicas of `serve --replicas`, one
replica at a time, each with the in-place rollout of rollout.py (new versions loaded beside the
serving ones, probed, switched, the old ones drained and dropped), so that at any moment all
replicas but one serve with nothing changing under them, and at most one holds two builds in
memory.

A replica that is down when the rollout starts refuses it, naming the replica, unless
`skip_down`: then the replicas that answer are rolled and the down one is reported (it serves
the build before when it comes back; a second `deploy --rolling` then switches it alone, the
others being unchanged). A replica whose rollout is refused stops the rollout: the replicas
already switched are rolled back to the build before (a snapshot of replica 0's repository
taken at the start, hard links), so the set never stays split between two builds.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fusionrank.app.control import ControlError
from fusionrank.app.deploy.rollout import DRAIN_S, Rollout, deploy
from fusionrank.app.replicas import ReplicaAddress, copy_repository, read_replica_set

READY_TIMEOUT_S = 3.0


@dataclass
class RollingRollout:
    """What a rolling rollout did to each replica."""

    outcome: str = "refused"  # switched, unchanged, refused, rolled back
    reason: str = ""
    replicas: list[dict] = field(default_factory=list)  # url, outcome, seconds, rollout

    def summary(self) -> str:
        lines = [f"rolling rollout {self.outcome}" + (f": {self.reason}" if self.reason else "")]
        for replica in self.replicas:
            took = f" in {replica['seconds']:.1f} s" if replica.get("seconds") else ""
            lines.append(f"  {replica['url']}: {replica['outcome']}{took}")
        return "\n".join(lines)


def is_ready(url: str) -> bool:
    client = grpcclient.InferenceServerClient(url)
    try:
        return bool(client.is_server_ready(client_timeout=READY_TIMEOUT_S))
    except InferenceServerException:
        return False
    finally:
        client.close()


def rolling_deploy(repository: str | Path, source: str | Path, drain_s: float = DRAIN_S,
                   skip_down: bool = False) -> RollingRollout:
    """Roll `source` through the replicas serving `repository` (see the module's docstring)."""
    repository, source = Path(repository).resolve(), Path(source).resolve()
    replicas = read_replica_set(repository)
    if not replicas:
        raise ControlError(f"no `fusionrank serve --replicas` serves {repository}; "
                             "`deploy --url` switches a single server")
    result = RollingRollout()
    down = [r for r in replicas if not is_ready(r.url)]
    if down and not skip_down:
        result.reason = (f"{', '.join(r.url for r in down)} "
                         f"{'is' if len(down) == 1 else 'are'} down; nothing was changed "
                         "(--skip-down rolls the replicas that answer)")
        result.replicas = [{"url": r.url, "outcome": "down" if r in down else "untouched"}
                           for r in replicas]
        return result
    if len(down) == len(replicas):
        result.reason = "every replica is down; nothing was changed"
        return result
    with tempfile.TemporaryDirectory(prefix=".rollback-", dir=repository.parent) as scratch:
        before = Path(scratch) / "model_repository"
        copy_repository(repository, before)  # the build every replica serves now
        switched: list[ReplicaAddress] = []
        for replica in replicas:
            if replica in down:
                result.replicas.append({"url": replica.url, "outcome": "skipped: down"})
                continue
            record = deploy(replica.url, replica.repository, source, drain_s)
            result.replicas.append(entry(replica, record))
            if record.outcome == "refused":
                roll_back(switched, before, drain_s, result)
                result.outcome = "rolled back" if switched else "refused"
                result.reason = f"{replica.url} refused the rollout: {record.reason}"
                return result
            if record.outcome == "switched":
                switched.append(replica)
    result.outcome = "switched" if switched else "unchanged"
    if down:
        result.reason = (f"{', '.join(r.url for r in down)} skipped (down): it serves the "
                         "build before until `deploy --rolling` runs again")
    return result


def entry(replica: ReplicaAddress, record: Rollout) -> dict:
    return {"url": replica.url, "outcome": record.outcome,
            "seconds": record.seconds.get("total", 0.0), "rollout": record.summary()}


def roll_back(switched: list[ReplicaAddress], before: Path, drain_s: float,
              result: RollingRollout) -> None:
    """The replicas already switched, back to the build before, each with its own rollout."""
    for replica in switched:
        record = deploy(replica.url, replica.repository, before, drain_s)
        result.replicas.append({**entry(replica, record),
                                "outcome": f"rolled back: {record.outcome}"})
