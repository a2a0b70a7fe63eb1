"""The GPU deployment without Docker or a GPU: docker/compose.yaml states what a GPU host needs,
docker/entrypoint.sh builds missing TensorRT engines once and starts tritonserver (run here
with stand-ins for trtexec and tritonserver, which only NVIDIA's container has), and
scripts/gpu_check.sh skips cleanly where there is no CUDA."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from fusionrank.core.contract import TensorSpec
from fusionrank.model_repository.config import (
    ONNX_RUNTIME,
    TENSORRT_PLAN,
    NativeModel,
    TensorRTAccelerator,
)
from fusionrank.model_repository.search.ensemble import ServingOptions

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def triton() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["triton"]


def test_compose_builds_the_ngc_image_and_reserves_a_gpu(triton):
    assert (DOCKER / triton["build"]["context"]).resolve() == ROOT
    dockerfile = (ROOT / triton["build"]["dockerfile"]).read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:" in dockerfile
    assert 'ENTRYPOINT ["/opt/fusionrank/docker/entrypoint.sh"]' in dockerfile
    assert "COPY docker/entrypoint.sh docker/entrypoint.sh" in dockerfile
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    # Published on the host's loopback only (docker/compose.yaml says how to open them).
    assert sorted(triton["ports"]) == ["127.0.0.1:8000:8000", "127.0.0.1:8001:8001",
                                       "127.0.0.1:8002:8002"]


def test_the_image_holds_every_layer_the_package_links_to():
    """fusionrank/ is a folder of links to the layers (pyproject.toml): an image that copies
    the links without a layer they point at does not import."""
    dockerfile = (DOCKER / "Dockerfile").read_text()
    layers = [p.name for p in (ROOT / "fusionrank").iterdir() if p.is_symlink()]
    assert len(layers) == 6
    for layer in layers:
        assert f"COPY {layer} {layer}" in dockerfile, layer


def test_compose_checks_readiness_and_caches_engines(triton):
    check = " ".join(triton["healthcheck"]["test"])
    # Each model's own readiness: the server-wide one ignores a model that was unloaded.
    assert "http://localhost:8000/v2/models/{c.parent.name}/ready" in check
    assert "glob('*/config.pbtxt')" in check
    mounts = dict(volume.split(":", 1) for volume in triton["volumes"])
    assert mounts["../build/model_repository"] == "/models:ro"
    environment = triton["environment"]
    assert environment["MODEL_REPOSITORY"] == "/models"
    # The engines volume is where the built repository's configs point TensorRT's cache.
    assert mounts["engines"] == environment["ENGINE_CACHE"] == ServingOptions.engine_cache
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert "engines" in compose["volumes"]


def stand_in(path: Path, script: str) -> Path:
    path.write_text("#!/usr/bin/env bash\n" + script)
    path.chmod(0o755)
    return path


def test_entrypoint_builds_missing_engines_once_then_starts_triton(tmp_path):
    repository, engines = tmp_path / "models", tmp_path / "engines"
    tokens = (TensorSpec("input_ids", "INT64", (32,)), TensorSpec("attention_mask", "INT64", (32,)))
    embedding = (TensorSpec("embedding", "FP32", (8,)),)
    onnx = tmp_path / "encoder.onnx"
    onnx.write_bytes(b"graph")
    NativeModel("query_encoder", TENSORRT_PLAN, engines / "query_encoder.plan", tokens,
                embedding, onnx_source=onnx).export(repository, 3)
    NativeModel("retrieval", ONNX_RUNTIME, onnx, tokens, embedding,
                tensorrt=TensorRTAccelerator(str(engines / "retrieval"))).export(repository, 3)
    calls = tmp_path / "trtexec.log"
    trtexec = stand_in(tmp_path / "trtexec", f"""echo "$*" >> {calls}
for a in "$@"; do case $a in --saveEngine=*) echo built > "${{a#--saveEngine=}}";; esac; done
""")
    server = stand_in(tmp_path / "tritonserver", 'echo "tritonserver $*"\n')
    environment = {**os.environ, "MODEL_REPOSITORY": str(repository),
                   "ENGINE_CACHE": str(engines), "TRTEXEC": str(trtexec),
                   "TRITONSERVER": str(server)}

    def start(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([DOCKER / "entrypoint.sh", "--exit-on-error=true"],
                              env=environment | extra, capture_output=True, text=True,
                              timeout=60)

    # No key: no model control at all on the served ports.
    closed = start(FUSIONRANK_CONTROL_KEY="")
    assert closed.returncode == 0, closed.stderr
    assert closed.stdout.strip() == (f"tritonserver --model-repository={repository} "
                                     "--model-control-mode=none --exit-on-error=true")
    (engines / "query_encoder.plan").unlink()  # so that the next start builds it again
    calls.unlink()
    key_file = tmp_path / "control.key"
    key_file.write_text("s3cret\n")
    first = start(FUSIONRANK_CONTROL_KEY="", FUSIONRANK_CONTROL_KEY_FILE=str(key_file))
    assert first.returncode == 0, first.stderr
    rule = "model-repository:fusionrank-control-key=s3cret"
    assert first.stdout.strip() == (f"tritonserver --model-repository={repository} "
                                    "--model-control-mode=explicit --load-model=* "
                                    f"--http-restricted-api={rule} "
                                    f"--grpc-restricted-protocol={rule} --exit-on-error=true")
    plan = repository / "query_encoder" / "3" / "model.plan"
    assert plan.read_text() == "built\n"  # the link now reaches a built engine
    (call,) = calls.read_text().splitlines()
    version = plan.parent
    assert call.split() == [f"--onnx={version}/model.onnx",
                            f"--saveEngine={engines}/query_encoder.plan.partial",
                            *(version / "trtexec.args").read_text().split()]
    assert "--fp16" in call and "--maxShapes=input_ids:64x32,attention_mask:64x32" in call
    assert (engines / "retrieval").is_dir()  # ONNX Runtime's TensorRT cache, made ready

    second = start()
    assert second.returncode == 0 and len(calls.read_text().splitlines()) == 1

    (engines / "query_encoder.plan").unlink()
    missing = start(TRTEXEC=str(tmp_path / "absent"), PATH="/usr/bin:/bin")
    assert missing.returncode != 0 and "tritonserver" not in missing.stdout
    assert "neither trtexec" in missing.stderr


def test_gpu_check_skips_without_cuda():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the script measures instead")
    done = subprocess.run([ROOT / "scripts" / "gpu_check.sh"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0
    assert "SKIPPED: no CUDA device" in done.stderr
