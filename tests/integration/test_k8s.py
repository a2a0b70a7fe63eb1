"""The Kubernetes manifests (docker/k8s): each passes `kubernetes-validate --strict` offline, each
variant's kustomization holds every file, and the ports, probe paths and metric names they use
are what a real `fusionrank serve` exposes."""

from __future__ import annotations

import re
import signal
import urllib.request
from pathlib import Path

import pytest
import yaml

from fusionrank.app import cli
from fusionrank.app.replicas import copy_repository, free_replica_ports
from fusionrank.app.web.cli import DEFAULT_WEB_PORT
from fusionrank.client import FusionRankClient
from tests.integration.test_observability import metrics
from tests.support.processes import fusionrank_process

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="the manifest checks are an extra: pip install '.[k8s]'")

K8S = Path(__file__).resolve().parents[2] / "docker" / "k8s"
VARIANTS = ("cpu", "gpu")


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def resources(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def variant(name: str) -> list[dict]:
    """Every resource `kubectl apply -k docker/k8s/<name>` creates (its kustomization's
    resources, folders followed)."""
    def gather(folder: Path) -> list[dict]:
        found = []
        for entry in resources(folder / "kustomization.yaml")[0]["resources"]:
            target = (folder / entry).resolve()
            found += gather(target) if target.is_dir() else resources(target)
        return found
    return gather(K8S / name)


def triton_container(name: str) -> dict:
    (deployment,) = [r for r in variant(name)
                     if r["kind"] == "Deployment" and r["metadata"]["name"] == "fusionrank-triton"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_passes_strict_validation(path):
    for resource in resources(path):
        kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)


def test_strict_validation_refuses_a_misspelt_field():
    (service, _) = resources(K8S / "common" / "triton-service.yaml")
    service["spec"]["ports"][0]["targetPorts"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, kubernetes_validate.latest_version(), strict=True)


def test_each_variant_applies_every_file_and_one_triton_deployment():
    listed = set()
    for folder in ("common", *VARIANTS):
        kustomization = resources(K8S / folder / "kustomization.yaml")[0]
        listed |= {(K8S / folder / e).resolve() for e in kustomization["resources"]}
    assert {p.resolve() for p in manifest_files()} <= listed
    for name in VARIANTS:
        kinds = sorted(f"{r['kind']}/{r['metadata']['name']}" for r in variant(name))
        assert kinds.count("Deployment/fusionrank-triton") == 1, kinds
        assert {"Deployment/fusionrank-web", "HorizontalPodAutoscaler/fusionrank-triton",
                "PodDisruptionBudget/fusionrank-triton", "Service/fusionrank-triton",
                "PersistentVolumeClaim/fusionrank-models"} <= set(kinds)
    assert "nvidia.com/gpu" in triton_container("gpu")["resources"]["limits"]
    assert "nvidia.com/gpu" not in triton_container("cpu")["resources"].get("limits", {})


def test_ports_are_those_fusionrank_serve_and_web_open():
    parser = cli.parser()
    serve = parser.parse_args(["serve"])
    web = parser.parse_args(["web"])
    expected = {"http": serve.http_port, "grpc": serve.grpc_port, "metrics": serve.metrics_port}
    for name in VARIANTS:
        container = triton_container(name)
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == expected
    services = {r["metadata"]["name"]: r for r in variant("cpu") if r["kind"] == "Service"}
    for port in services["fusionrank-triton"]["spec"]["ports"]:
        assert expected[port["targetPort"]] == port["port"]
    (web_deployment,) = [r for r in variant("cpu") if r["metadata"]["name"] == "fusionrank-web"
                         and r["kind"] == "Deployment"]
    (web_container,) = web_deployment["spec"]["template"]["spec"]["containers"]
    command = web_container["command"]
    assert int(command[command.index("--port") + 1]) == web.port == DEFAULT_WEB_PORT
    assert command[command.index("--url") + 1] == f"fusionrank-triton:{serve.grpc_port}"


def probe_paths(name: str) -> set[str]:
    container = triton_container(name)
    return {container[probe]["httpGet"]["path"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe")}


def autoscaler_metrics() -> tuple[set[str], set[str]]:
    """(the metric names the autoscaler reads, the Triton metrics the adapter's rules read)."""
    (hpa,) = [r for r in variant("cpu") if r["kind"] == "HorizontalPodAutoscaler"]
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    (config_map,) = resources(K8S / "common" / "prometheus-adapter-rules.yaml")
    rules = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    served = {rule["name"]["as"] for rule in rules}
    assert wanted <= served, "the autoscaler reads a metric no adapter rule defines"
    read = set()
    for rule in rules:
        read |= set(re.findall(r"\bnv_[a-z_]+", rule["seriesQuery"] + rule["metricsQuery"]))
    return wanted, read


@pytest.mark.server
def test_probes_and_autoscaling_metrics_answer_on_fusionrank_serve(served_repository, tmp_path):
    """A real `fusionrank serve` answers the manifests' probe paths on its HTTP port and
    exposes every Triton metric the autoscaler's rules read on its metrics port."""
    assert probe_paths("cpu") == probe_paths("gpu") == {"/v2/health/ready", "/v2/health/live"}
    repository = tmp_path / "model_repository"
    copy_repository(served_repository, repository)
    ports = free_replica_ports(1)
    with fusionrank_process("serve", "--repository", str(repository), "--no-web",
                            "--grpc-port", str(ports.grpc), "--http-port", str(ports.http),
                            "--metrics-port", str(ports.metrics), ready="Ctrl-C stops") as serve:
        for path in probe_paths("cpu"):
            url = f"http://127.0.0.1:{ports.http}{path}"
            with urllib.request.urlopen(url, timeout=10) as answer:
                assert answer.status == 200, path
        with FusionRankClient(f"127.0.0.1:{ports.grpc}") as client:
            client.search("ceiling fan", k=2)
        _, read = autoscaler_metrics()
        exposed = metrics(f"http://127.0.0.1:{ports.metrics}/metrics")
        serve.process.send_signal(signal.SIGTERM)  # stopped as an operator stops it
        assert serve.process.wait(timeout=60) == 0
    assert read and read <= set(exposed), sorted(read - set(exposed))
