"""What a rollout changes, decided from the serving repository and the source alone (no
server): which models' files changed, the version they roll out under, and each affected
ensemble's new config, pinned to the new versions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from fusionrank.app.deploy.errors import RolloutRefused
from fusionrank.core import artefacts as names
from fusionrank.model_repository.config import read_config, versions

PROBE = "{}_rollout_probe"  # the name a new ensemble version is checked under before the switch
FIRST_BUILT = "first_built_at"  # fusionrank.json: the build the repository was first served from


@dataclass
class Plan:
    version: int  # the new version number
    changed: dict[str, int]  # composing model → its serving version (0: a model new here)
    ensembles: dict[str, mc.ModelConfig]  # ensemble → its new config, pinned to the new versions

    def moves(self, repository: Path) -> dict[str, list[int]]:
        """Each model the plan touches → [its serving version (0: none), the new version]."""
        return {**{name: [old, self.version] for name, old in self.changed.items()},
                **{name: [max(versions(repository / name), default=0), self.version]
                   for name in self.ensembles}}


# --- reading repositories --------------------------------------------------------------------

def is_probe(model: str) -> bool:
    return model.endswith(PROBE.format(""))


def model_configs(repository: Path) -> dict[str, mc.ModelConfig]:
    """Each model of the repository (a rollout's probe left out) → its config."""
    return {p.parent.name: read_config(repository, p.parent.name)
            for p in sorted(repository.glob("*/config.pbtxt")) if not is_probe(p.parent.name)}


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
    for name, sha256 in names.folder_sha256(folder).items():
        total.update(f"{name}\0{sha256}\n".encode())
    return total.hexdigest()


def read_manifest(repository: Path) -> dict:
    path = repository / names.REPOSITORY_MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


# --- configs ---------------------------------------------------------------------------------

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


# --- the plan --------------------------------------------------------------------------------

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
        elif files_changed(name, (config, new_folder),
                           (serving[name], repository / name / str(current[name]))):
            changed[name] = current[name]
    pins = {**current, **dict.fromkeys(changed, version)}
    return Plan(version, changed, new_ensembles(serving, incoming, pins))


def files_changed(name: str, new: tuple[mc.ModelConfig, Path],
                  old: tuple[mc.ModelConfig, Path]) -> bool:
    """Whether a model's new version folder holds other files than its serving one; refused
    where its config (other than the versions it serves) changed too."""
    if without_policy(new[0]) != without_policy(old[0]):
        raise RolloutRefused(
            f"{name}'s config differs from the serving one: a rollout replaces a model's "
            "files under the same serving options (Triton would reload the serving version "
            "too); restart `fusionrank serve` on the new build to change them")
    return digest(new[1]) != digest(old[1])


def new_ensembles(serving: dict[str, mc.ModelConfig], incoming: dict[str, mc.ModelConfig],
                  pins: dict[str, int]) -> dict[str, mc.ModelConfig]:
    """Each ensemble of the source pinned to `pins`, where that differs from the serving one."""
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
    return ensembles
