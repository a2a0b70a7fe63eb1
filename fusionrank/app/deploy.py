"""`fusionrank deploy` and `fusionrank status`: switch a running server to a new build's models
with no failed request and no request that mixes versions, and show what serves since when.

    fusionrank build --catalogue new_products.csv --out build-next
    fusionrank deploy --url 127.0.0.1:8001 --repository build/model_repository \\
                      --source build-next/model_repository
    fusionrank status --url 127.0.0.1:8001 --repository build/model_repository

`fusionrank serve` runs Triton with explicit model control, and each ensemble's steps are pinned
to one version of each of its models. A rollout:

1. compares each model of the source with the serving one (its version folder's files, its
   config); a model whose files are the same is left alone, and so is an ensemble none of
   whose models changed (a catalogue change leaves recommend and sentiment untouched);
2. stages each changed model as a NEW version folder beside the serving one (hard links) and
   loads it: Triton loads only that version, since nothing else in the model's folder changed;
3. loads each affected ensemble, pinned to the new versions, under a probe name and checks its
   answers to a few probe requests (well formed, as many results as the serving version gives);
4. switches: writes the ensemble's new version, pinned to the new models, and loads it. Triton
   swaps it in once it is ready; a request holds the model versions its ensemble version pins
   from its start to its end, so every answer is wholly the old build's or wholly the new one's;
5. after a drain, drops the old versions (their folders, then their load).

A failure before the switch refuses the rollout: the new versions are removed, and the old
ones never stopped serving. Each rollout is a JSON line in `rollouts.jsonl` beside the models.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from fusionrank.client import FusionRankClient, FusionRankError, RetryPolicy
from fusionrank.core import artefacts as names
from fusionrank.core.recommend.contract import RECOMMEND_MODEL
from fusionrank.core.search.contract import SEARCH_MODEL
from fusionrank.core.sentiment.contract import SENTIMENT_MODEL
from fusionrank.model_repository.config import (
    compile_shim,
    read_config,
    versions,
    write_config,
)

ROLLOUT_LOG = "rollouts.jsonl"
LOCK = ".rollout.lock"
PROBE = "{}_rollout_probe"  # the name a new ensemble version is checked under before the switch
DRAIN_S = 2.0
UNLOAD_TIMEOUT_S = 60.0
PROBE_K = 5
PROBE_QUERIES = ("gift", "red heart lantern", "cordless drill")
PROBE_REVIEWS = ("Love it, works perfectly", "Broke after one day, very disappointed")


class RolloutRefused(Exception):
    """A rollout that did not switch, for the reason given: the serving versions still serve."""


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


@dataclass
class Plan:
    version: int  # the new version number
    changed: dict[str, int]  # composing model → its serving version (0: a model new here)
    ensembles: dict[str, mc.ModelConfig]  # ensemble → its new config, pinned to the new versions


# --- reading repositories --------------------------------------------------------------------

def model_configs(repository: Path) -> dict[str, mc.ModelConfig]:
    return {p.parent.name: read_config(repository, p.parent.name)
            for p in sorted(repository.glob("*/config.pbtxt"))
            if not p.parent.name.endswith(PROBE.format(""))}


def only_version(folder: Path) -> int:
    """The one version folder of a model (two mean an interrupted rollout: said so)."""
    found = versions(folder)
    if len(found) != 1:
        raise RolloutRefused(f"{folder} holds the versions {found}, not one: an earlier rollout "
                             "was interrupted; `fusionrank status` says which one serves, "
                             "remove the other folder")
    return found[0]


def digest(folder: Path) -> str:
    """SHA-256 over a version folder's files (names and contents), bytecode left out."""
    total = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()
                       and "__pycache__" not in p.parts):
        total.update(f"{path.relative_to(folder)}\0{names.file_sha256(path)}\n".encode())
    return total.hexdigest()


def without_policy(config: mc.ModelConfig) -> mc.ModelConfig:
    bare = mc.ModelConfig()
    bare.CopyFrom(config)
    bare.ClearField("version_policy")
    return bare


def with_versions(config: mc.ModelConfig, served: list[int]) -> mc.ModelConfig:
    """The config, serving exactly the versions `served`."""
    new = without_policy(config)
    new.version_policy.specific.versions.extend(served)
    return new


def pinned(config: mc.ModelConfig, pins: dict[str, int]) -> mc.ModelConfig:
    """An ensemble's config with each step pinned to `pins[its model]`."""
    new = mc.ModelConfig()
    new.CopyFrom(config)
    for step in new.ensemble_scheduling.step:
        step.model_version = pins[step.model_name]
    return new


def read_manifest(repository: Path) -> dict:
    path = repository / names.REPOSITORY_MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def plan_rollout(repository: Path, source: Path) -> Plan:
    """Which models changed between the serving repository and the source, under which new
    version, and each affected ensemble's new config."""
    serving, incoming = model_configs(repository), model_configs(source)
    if not incoming:
        raise RolloutRefused(f"{source} is not a model repository (no */config.pbtxt)")
    current = {name: only_version(repository / name) for name in serving}
    version = max(int(read_manifest(source).get("version", 0)),
                  max(current.values(), default=0) + 1)
    changed: dict[str, int] = {}
    for name, config in incoming.items():
        if config.platform == "ensemble":
            continue
        new_folder = source / name / str(only_version(source / name))
        if name not in serving:
            changed[name] = 0
            continue
        if without_policy(config) != without_policy(serving[name]):
            raise RolloutRefused(
                f"{name}'s config differs from the serving one: a rollout replaces a model's "
                "files under the same serving options (Triton would reload the serving version "
                "too); restart `fusionrank serve` on the new build to change them")
        if digest(new_folder) != digest(repository / name / str(current[name])):
            changed[name] = current[name]
    pins = {**current, **dict.fromkeys(changed, version)}
    ensembles = {}
    for name, config in incoming.items():
        if config.platform != "ensemble":
            continue
        missing = sorted(s.model_name for s in config.ensemble_scheduling.step
                         if s.model_name not in pins)
        if missing:
            raise RolloutRefused(f"the {name} ensemble needs {missing}, which neither the source "
                                 "nor the serving repository holds")
        new = pinned(config, pins)
        if name not in serving or new != serving[name]:
            ensembles[name] = new
    return Plan(version, changed, ensembles)


# --- changing the serving repository ---------------------------------------------------------

def link_tree(source: Path, target: Path) -> None:
    """A version folder, its files hard-linked (copied across file systems): never written
    through, since every later change replaces a file rather than writing into it."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link,
                    ignore=shutil.ignore_patterns("__pycache__"))
    if (target / "model.py").is_file():
        compile_shim(target)


def first_line(error: Exception) -> str:
    text = error.message() if isinstance(error, InferenceServerException) else str(error)
    return next((line.strip() for line in str(text).splitlines() if line.strip()), repr(error))


class Deployment:
    """One rollout on a running server: each phase, and the undoing of what it did so far."""

    def __init__(self, client: grpcclient.InferenceServerClient, url: str, repository: Path,
                 source: Path, plan: Plan):
        self.client, self.url, self.repository, self.source, self.plan = (
            client, url, repository, source, plan)
        self.switched: dict[str, str] = {}  # ensemble → its config text before the switch

    def load(self, name: str, what: str) -> None:
        try:
            self.client.load_model(name)
        except InferenceServerException as error:
            raise RolloutRefused(f"{what} failed to load: {first_line(error)}") from None

    def stage_and_load(self) -> None:
        version = self.plan.version
        for name, old in self.plan.changed.items():
            link_tree(self.source / name / str(only_version(self.source / name)),
                      self.repository / name / str(version))
            write_config(with_versions(read_config(self.source, name), [*([old] if old else []),
                                                                         version]),
                         self.repository, version)
        for name in self.plan.changed:
            self.load(name, f"{name} version {version}")

    def probe(self) -> None:
        """Each affected ensemble, pinned to the new versions, loaded under a probe name and
        asked a few probe requests; then unloaded and removed."""
        for name, config in self.plan.ensembles.items():
            probe = PROBE.format(name)
            probe_config = mc.ModelConfig()
            probe_config.CopyFrom(config)
            probe_config.name = probe
            probe_config.response_cache.enable = False
            write_config(probe_config, self.repository, 1)
            try:
                self.load(probe, f"the new {name} ensemble")
                serving = (self.repository / name / "config.pbtxt").is_file()
                check_answers(self.url, name, probe, serving)
            finally:
                with contextlib.suppress(InferenceServerException):
                    self.client.unload_model(probe)
                shutil.rmtree(self.repository / probe, ignore_errors=True)

    def switch(self) -> None:
        for name, config in self.plan.ensembles.items():
            config_file = self.repository / name / "config.pbtxt"
            self.switched[name] = config_file.read_text() if config_file.is_file() else ""
            write_config(config, self.repository, self.plan.version)
            self.load(name, f"the {name} ensemble's version {self.plan.version}")

    def drop_old(self) -> None:
        """The old versions, once no request can still be on its way to them."""
        for name in self.plan.ensembles:
            for old in versions(self.repository / name):
                if old != self.plan.version:
                    shutil.rmtree(self.repository / name / str(old))
        for name, old in self.plan.changed.items():
            if old:
                shutil.rmtree(self.repository / name / str(old))
                write_config(with_versions(read_config(self.repository, name),
                                           [self.plan.version]), self.repository, self.plan.version)
                self.load(name, f"{name} without its version {old}")
        self.wait_unloaded()

    def undo(self) -> None:
        """Back to the serving versions: switched ensembles first, then the staged models."""
        version = self.plan.version
        for name, text in self.switched.items():
            folder = self.repository / name
            if text:
                (folder / "config.pbtxt").write_text(text)
                shutil.rmtree(folder / str(version), ignore_errors=True)
                with contextlib.suppress(InferenceServerException):
                    self.client.load_model(name)
            else:
                with contextlib.suppress(InferenceServerException):
                    self.client.unload_model(name)
                shutil.rmtree(folder, ignore_errors=True)
        failed = self.failed_versions()
        for name, old in self.plan.changed.items():
            folder = self.repository / name
            shutil.rmtree(folder / str(version), ignore_errors=True)
            if not old:
                with contextlib.suppress(InferenceServerException):
                    self.client.unload_model(name)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            if name in failed:
                # Triton keeps a version that failed to load as UNAVAILABLE, and while it does
                # the server is not ready (strict readiness): load the serving version's files
                # once under that number, so that it is then dropped as merely "unloaded".
                link_tree(folder / str(old), folder / str(version))
                self.serve_versions(name, [old, version])
                shutil.rmtree(folder / str(version))
            self.serve_versions(name, [old])
        self.wait_unloaded()

    def failed_versions(self) -> set[str]:
        """The models whose new version failed to load."""
        index = self.client.get_model_repository_index().models
        return {m.name for m in index if m.version == str(self.plan.version)
                and m.state == "UNAVAILABLE" and m.reason != "unloaded"}

    def wait_unloaded(self, timeout_s: float = UNLOAD_TIMEOUT_S) -> None:
        """Until no version is still UNLOADING (Triton unloads in the background), bounded."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(
                m.state == "UNLOADING" for m in self.client.get_model_repository_index().models):
            time.sleep(0.1)

    def serve_versions(self, name: str, served: list[int]) -> None:
        write_config(with_versions(read_config(self.repository, name), served), self.repository,
                     served[0])
        with contextlib.suppress(InferenceServerException):
            self.client.load_model(name)


# --- probes ----------------------------------------------------------------------------------

class ProbeClient(FusionRankClient):
    """The SDK's typed calls, sent to other models than the ones they name (the probes)."""

    def __init__(self, url: str, renamed: dict[str, str]):
        super().__init__(url, retry=RetryPolicy(attempts=1))
        self.renamed = renamed

    def _infer(self, model: str, inputs: list, outputs):
        return super()._infer(self.renamed.get(model, model), inputs, outputs)


def probe_answers(client: FusionRankClient, ensemble: str) -> list[list[float]] | None:
    """Each probe request's scores (search, recommend) or probabilities (sentiment); None for
    an ensemble with no probe (its load was the check)."""
    if ensemble == SEARCH_MODEL:
        return [[h.score for h in hits] for hits in client.search_batch(PROBE_QUERIES, PROBE_K)]
    if ensemble == RECOMMEND_MODEL:
        return [[item.score for item in client.recommend([], PROBE_K).items]]
    if ensemble == SENTIMENT_MODEL:
        return [list(r.probabilities.values()) for r in client.sentiment(PROBE_REVIEWS)]
    return None


def check_answers(url: str, ensemble: str, probe: str, serving: bool) -> None:
    """The probe ensemble's answers are well formed, and as many as the serving one gives."""
    try:
        with ProbeClient(url, {ensemble: probe}) as client:
            new = probe_answers(client, ensemble)
        if new is None:
            return
        old = None
        if serving:
            with FusionRankClient(url) as client:
                old = probe_answers(client, ensemble)
    except FusionRankError as error:
        raise RolloutRefused(f"the new {ensemble} ensemble failed a probe request: "
                             f"{first_line(error)}") from None
    for row, values in enumerate(new):
        problem = ("no result" if not values
                   else "a value that is not finite" if not all(map(math.isfinite, values))
                   else f"{len(values)} results where the serving version gives {len(old[row])}"
                   if old is not None and len(values) != len(old[row])
                   else "probabilities that do not add up to 1"
                   if ensemble == SENTIMENT_MODEL and abs(sum(values) - 1) > 1e-3
                   else "scores out of order"
                   if ensemble != SENTIMENT_MODEL and values != sorted(values, reverse=True)
                   else "")
        if problem:
            raise RolloutRefused(f"the new {ensemble} ensemble answered probe {row + 1} with "
                                 f"{problem}")


# --- the rollout -----------------------------------------------------------------------------

@contextlib.contextmanager
def exclusive(repository: Path) -> Iterator[None]:
    """One rollout at a time per repository."""
    with (repository / LOCK).open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RolloutRefused(f"another rollout is under way on {repository}") from None
        yield


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def deploy(url: str, repository: str | Path, source: str | Path,
           drain_s: float = DRAIN_S) -> Rollout:
    """Roll the source repository's changed models out to the server at `url` serving
    `repository`; the outcome is logged in `repository/rollouts.jsonl` and returned."""
    repository, source = Path(repository).resolve(), Path(source).resolve()
    record = Rollout(now(), str(source))
    started = clock = time.monotonic()

    def lap(phase: str) -> None:
        nonlocal clock
        record.seconds[phase] = round(time.monotonic() - clock, 3)
        clock = time.monotonic()

    client = grpcclient.InferenceServerClient(url)
    try:
        with exclusive(repository):
            plan = plan_rollout(repository, source)
            record.version = plan.version
            record.models = {**{name: [old, plan.version] for name, old in plan.changed.items()},
                             **{name: [max(versions(repository / name), default=0),
                                       plan.version] for name in plan.ensembles}}
            lap("plan")
            if not plan.changed and not plan.ensembles:
                record.outcome = "unchanged"
            else:
                run_rollout(Deployment(client, url, repository, source, plan), record, lap,
                            drain_s)
    except RolloutRefused as error:
        record.outcome, record.reason = "refused", str(error)
    finally:
        client.close()
    record.seconds["total"] = round(time.monotonic() - started, 3)
    with (repository / ROLLOUT_LOG).open("a") as log:
        log.write(json.dumps(asdict(record)) + "\n")
    return record


def run_rollout(deployment: Deployment, record: Rollout, lap, drain_s: float) -> None:
    try:
        deployment.stage_and_load()
        lap("load")
        deployment.probe()
        lap("probe")
        deployment.switch()
        lap("switch")
    except BaseException:
        deployment.undo()
        raise
    record.outcome, record.switched_at = "switched", now()
    update_manifest(deployment.repository, deployment.source, deployment.plan.version,
                    record.switched_at)
    if any(deployment.plan.changed.values()):
        time.sleep(drain_s)  # a request that reached an old ensemble version starts its steps
    lap("drain")
    try:
        deployment.drop_old()
    except RolloutRefused as error:  # switched: the old versions stay loaded, idle
        record.reason = f"switched, but dropping the old versions failed: {error}"
    lap("drop_old")


def update_manifest(repository: Path, source: Path, version: int, switched_at: str) -> None:
    """fusionrank.json describes the source build now, under the rolled-out version; ensembles
    the source did not carry keep their entries."""
    previous, served = read_manifest(repository), read_manifest(source)
    served["ensembles"] = {**previous.get("ensembles", {}), **served.get("ensembles", {})}
    served |= {"version": version, "rolled_out_at": switched_at}
    (repository / names.REPOSITORY_MANIFEST).write_text(json.dumps(served, indent=2) + "\n")


# --- status ----------------------------------------------------------------------------------

def read_log(repository: Path) -> list[dict]:
    path = repository / ROLLOUT_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def server_status(url: str, repository: str | Path | None = None) -> list[dict]:
    """Each model version the server knows that serves, loads or failed: its state and since
    when it serves (its rollout, else the build)."""
    client = grpcclient.InferenceServerClient(url)
    try:
        index = client.get_model_repository_index().models
    finally:
        client.close()
    since: dict[tuple[str, int], str] = {}
    built = ""
    if repository is not None:
        built = read_manifest(Path(repository)).get("built_at", "")
        for entry in read_log(Path(repository)):
            if entry["outcome"] == "switched":
                for model, (_, to) in entry["models"].items():
                    since[(model, to)] = entry["switched_at"]
    rows = []
    for model in index:
        if model.state == "UNAVAILABLE" and model.reason in ("unloaded", ""):
            continue  # a version unloaded by a rollout
        if model.name.endswith(PROBE.format("")):
            continue
        version = int(model.version) if model.version else 0
        rows.append({"model": model.name, "version": version, "state": model.state,
                     "since": since.get((model.name, version), built and f"build {built}"),
                     "reason": first_line(Exception(model.reason)) if model.reason else ""})
    return sorted(rows, key=lambda r: (r["model"], r["version"]))


def status_table(rows: list[dict], last: dict | None) -> str:
    header = ("MODEL", "VERSION", "STATE", "SINCE", "")
    cells = [header, *[(r["model"], str(r["version"]), r["state"], r["since"] or "—",
                        r["reason"]) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() + (
        f"  {row[4]}" if row[4] else "") for row in cells]
    if last:
        lines.append(f"\nlast rollout {last['started_at']}: {last['outcome']} (version "
                     f"{last['version']}){': ' + last['reason'] if last['reason'] else ''}")
    return "\n".join(lines)


# --- commands --------------------------------------------------------------------------------

def add_deploy(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "deploy", help="switch a running server to a new build's models (zero downtime; a "
                       "rollout that fails to load or to answer probes is refused)")
    parser.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC address")
    parser.add_argument("--repository", type=Path, default=Path("build/model_repository"),
                        help="the model repository the server serves (changed in place)")
    parser.add_argument("--source", type=Path, required=True,
                        help="a model repository built with `fusionrank build --out DIR` "
                             "(DIR/model_repository)")
    parser.add_argument("--drain-s", type=float, default=DRAIN_S,
                        help="seconds between the switch and dropping the old versions")
    parser.set_defaults(run=run_deploy)


def run_deploy(args: argparse.Namespace) -> int:
    for path, what in ((args.repository, "--repository"), (args.source, "--source")):
        if not (path / names.REPOSITORY_MANIFEST).is_file():
            raise FileNotFoundError(f"{what} {path} is not a model repository built by "
                                    "`fusionrank build` (no fusionrank.json)")
    record = deploy(args.url, args.repository, args.source, args.drain_s)
    print(record.summary(), file=sys.stderr)
    return 0 if record.outcome != "refused" else 1


def add_status(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("status", help="what version of each model serves, since when")
    parser.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC address")
    parser.add_argument("--repository", type=Path,
                        help="the served model repository: adds since when, from its rollouts")
    parser.add_argument("--json", action="store_true", help="one JSON document")
    parser.set_defaults(run=run_status)


def run_status(args: argparse.Namespace) -> int:
    try:
        rows = server_status(args.url, args.repository)
    except InferenceServerException as error:
        raise RuntimeError(f"no server answers at {args.url}: {first_line(error)}") from None
    log = read_log(args.repository) if args.repository else []
    last = log[-1] if log else None
    if args.json:
        print(json.dumps({"models": rows, "last_rollout": last}, indent=2))
    else:
        print(status_table(rows, last))
    return 0


COMMANDS = [add_deploy, add_status]
