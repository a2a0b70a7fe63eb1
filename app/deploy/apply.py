"""A planned rollout applied to a running server, phase by phase, and undone on failure:

stage (new version folders beside the serving ones) and load; probe (each affected ensemble
under a probe name, app/deploy/probes.py); switch (the ensembles' new versions);
drop the old versions. `undo` puts back what the phases before a failure did."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from fusionrank.app.deploy.errors import RolloutRefused, first_line
from fusionrank.app.deploy.plan import PROBE, Plan, only_version, with_versions
from fusionrank.app.deploy.probes import check_answers
from fusionrank.core import artefacts
from fusionrank.model_repository.config import compile_shim, read_config, versions, write_config

UNLOAD_TIMEOUT_S = 60.0


def link_tree(source: Path, target: Path) -> None:
    """A version folder, its files hard-linked (copied across file systems): never written
    through, since every later change replaces a file rather than writing into it."""
    shutil.copytree(source, target, copy_function=artefacts.link_or_copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    if (target / "model.py").is_file():
        compile_shim(target)


def probe_config(config: mc.ModelConfig, probe: str) -> mc.ModelConfig:
    """An ensemble's new config under the probe's name, uncached (its answers are the check)."""
    new = mc.ModelConfig()
    new.CopyFrom(config)
    new.name = probe
    new.response_cache.enable = False
    return new


class Deployment:
    """One rollout on a running server: each phase, and the undoing of what it did so far."""

    def __init__(self, client: grpcclient.InferenceServerClient, url: str, repository: Path,
                 source: Path, plan: Plan, headers: dict[str, str]):
        self.client, self.url, self.repository, self.source, self.plan = (
            client, url, repository, source, plan)
        self.headers = headers  # the model-control key
        self.switched: dict[str, str] = {}  # ensemble → its config text before the switch

    # --- talking to the server ---------------------------------------------------------------

    def load(self, name: str, what: str) -> None:
        try:
            self.client.load_model(name, headers=self.headers)
        except InferenceServerException as error:
            raise RolloutRefused(f"{what} failed to load: "
                                 f"{self.in_source_terms(first_line(error))}") from None

    def unload(self, name: str) -> None:
        with contextlib.suppress(InferenceServerException):
            self.client.unload_model(name, headers=self.headers)

    def in_source_terms(self, message: str) -> str:
        """A load error as the operator can act on it: the staged copy's path inside the serving
        repository becomes the source file it came from, and the advice names the source."""
        for name in self.plan.changed:
            staged = self.repository / name / str(self.plan.version)
            built = self.source / name / str(only_version(self.source / name))
            message = message.replace(str(staged), str(built))
        return message.replace(
            "rebuild the repository",
            f"the serving version is untouched; rebuild the source (`fusionrank build --out "
            f"{self.source.parent}`) and deploy again")

    def serve_versions(self, name: str, served: list[int]) -> None:
        """The model's config set to serve exactly `served`, and loaded (best effort: undo)."""
        write_config(with_versions(read_config(self.repository, name), served), self.repository,
                     served[0])
        with contextlib.suppress(InferenceServerException):
            self.client.load_model(name, headers=self.headers)

    def wait_unloaded(self, timeout_s: float = UNLOAD_TIMEOUT_S) -> None:
        """Until no version is still UNLOADING (Triton unloads in the background), bounded."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(
                m.state == "UNLOADING"
                for m in self.client.get_model_repository_index(headers=self.headers).models):
            time.sleep(0.1)

    # --- the phases ----------------------------------------------------------------------------

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
            write_config(probe_config(config, probe), self.repository, 1)
            try:
                self.load(probe, f"the new {name} ensemble")
                serving = (self.repository / name / "config.pbtxt").is_file()
                check_answers(self.url, name, probe, serving)
            finally:
                self.unload(probe)
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

    # --- undoing them --------------------------------------------------------------------------

    def undo(self) -> None:
        """Back to the serving versions: switched ensembles first, then the staged models."""
        self.undo_switch()
        self.undo_staging()
        self.wait_unloaded()

    def undo_switch(self) -> None:
        """Each switched ensemble's old config back (loaded again), or a new one removed."""
        for name, text in self.switched.items():
            folder = self.repository / name
            if text:
                (folder / "config.pbtxt").write_text(text)
                shutil.rmtree(folder / str(self.plan.version), ignore_errors=True)
                with contextlib.suppress(InferenceServerException):
                    self.client.load_model(name, headers=self.headers)
            else:
                self.unload(name)
                shutil.rmtree(folder, ignore_errors=True)

    def undo_staging(self) -> None:
        """Each staged version removed, its model serving only its old version again."""
        version = self.plan.version
        failed = self.failed_versions()
        for name, old in self.plan.changed.items():
            folder = self.repository / name
            shutil.rmtree(folder / str(version), ignore_errors=True)
            if not old:
                self.unload(name)
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

    def failed_versions(self) -> set[str]:
        """The models whose new version failed to load."""
        index = self.client.get_model_repository_index(headers=self.headers).models
        return {m.name for m in index if m.version == str(self.plan.version)
                and m.state == "UNAVAILABLE" and m.reason != "unloaded"}
