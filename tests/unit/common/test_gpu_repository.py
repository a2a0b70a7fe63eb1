"""`fusionrank build --device gpu`: the search ensemble's graphs as native models on the GPU
(onnxruntime with TensorRT, or a tensorrt_plan engine), checked as protobuf messages and as
Triton's text format parses them, without a GPU; and run in process on the CPU like the CPU
repository."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from fusionrank.app.serve import TritonServer, missing_backends, triton_home
from fusionrank.core import artefacts as names
from fusionrank.core.contract import RequestError, TensorSpec
from fusionrank.core.fusion import FusionWeights
from fusionrank.core.search.contract import SEARCH_INPUTS, search_request
from fusionrank.model_repository.config import (
    ONNX_RUNTIME,
    TENSORRT_PLAN,
    NativeModel,
    TensorRTAccelerator,
    served_version,
)
from fusionrank.model_repository.ensemble import Inputs
from fusionrank.model_repository.runner import InProcessEnsemble
from fusionrank.model_repository.search.ensemble import (
    SearchArtefacts,
    ServingOptions,
    search_ensemble,
)
from fusionrank.model_repository.search.steps import Tokenize

GPU = mc.ModelInstanceGroup.KIND_GPU
CPU = mc.ModelInstanceGroup.KIND_CPU
PRODUCTS, DIM = 50, 384  # fewer products than the 100 candidates: the pool shrinks to 50
TOKENS = "input_ids:{b}x32,attention_mask:{b}x32"


def retrieval_graph(embeddings: np.ndarray, path: Path, k: int | None = None) -> None:
    """The export layer's retrieval graph. That layer imports PyTorch (export/graphs.py), so
    the tests that build a graph skip without it; the configuration checks still run."""
    pytest.importorskip("torch")
    from fusionrank.export.search.retrieval import retrieval_graph as build

    build(embeddings, path, k=k)


def tiny_artefacts(folder: Path, model_dir: Path, fused: bool) -> SearchArtefacts:
    """What `fusionrank build --device gpu` leaves for the search ensemble; the encoder and
    the run's files are placeholders (configs are checked here, not run)."""
    files = SearchArtefacts(folder / "encoder", folder / "index", folder / "run" if fused else None)
    for path in (files.encoder, files.index, files.run):
        if path is not None:
            path.mkdir(parents=True)
    shutil.copyfile(model_dir / names.TOKENIZER, files.encoder / names.TOKENIZER)
    (files.encoder / names.ENCODER).write_bytes(b"placeholder")
    rows = np.random.default_rng(0).normal(size=(PRODUCTS, DIM)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    np.save(files.index / names.EMBEDDINGS, rows)
    retrieval_graph(rows, files.index / names.RETRIEVAL_FIXED_K, k=PRODUCTS)
    (files.index / names.PRODUCTS).write_text("".join(
        json.dumps({"product_id": f"p{i}", "title": f"product {i}"}) + "\n"
        for i in range(PRODUCTS)))
    FusionWeights().save(files.index / names.FUSION_WEIGHTS)
    if fused:
        for name in (names.LEXICAL, names.PRIORS, names.MEMORY, names.FEEDBACK_HEAD):
            (files.run / name).write_bytes(b"placeholder")
        FusionWeights({"similarity": 0.4, "feedback": 0.2, "lexical": 0.4}).save(
            files.run / names.FUSION_WEIGHTS)
    return files


def parameters(config: mc.ModelConfig) -> dict[str, str]:
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    return dict(accelerator.parameters)


def assert_wired(ensemble: mc.ModelConfig, models: dict[str, mc.ModelConfig]) -> None:
    """Every step reads only ensemble inputs or earlier steps' outputs, feeds every required
    input of its model, and maps only tensors its model has."""
    available = {t.name for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = models[step.model_name]
        assert set(step.input_map.values()) <= available, step.model_name
        required = {t.name for t in model.input if not t.optional}
        assert required <= set(step.input_map) <= {t.name for t in model.input}
        assert set(step.output_map) <= {t.name for t in model.output}
        available |= set(step.output_map.values())
    assert {t.name for t in ensemble.output} <= available


@pytest.mark.parametrize("fused", [False, True], ids=["pretrained", "fused"])
def test_gpu_search_configs(tmp_path, model_dir, fused):
    files = tiny_artefacts(tmp_path, model_dir, fused)
    ensemble = search_ensemble(files, ServingOptions(device="gpu", encoder_instances=2))
    config = ensemble.config()
    models = {model.name: model.config() for model in ensemble.pipeline.steps}
    assert [s.model_name for s in config.ensemble_scheduling.step] == [
        "tokenizer", "query_encoder", "retrieval", "ranker"]
    assert [t.name for t in config.input] == [t.name for t in SEARCH_INPUTS]
    assert_wired(config, models)

    tokenizer = models["tokenizer"]
    assert tokenizer.backend == "python"
    assert [(g.kind, g.count) for g in tokenizer.instance_group] == [(CPU, 2)]
    assert tokenizer.parameters["pad_to"].string_value == "32"
    assert [(o.name, list(o.dims)) for o in tokenizer.output] == [
        ("INPUT_IDS", [32]), ("ATTENTION_MASK", [32])]

    encoder = models["query_encoder"]
    assert encoder.backend == "onnxruntime" and not encoder.platform
    assert [(g.kind, g.count) for g in encoder.instance_group] == [(GPU, 2)]
    assert encoder.max_batch_size == 64 and encoder.HasField("dynamic_batching")
    assert [(i.name, i.data_type, list(i.dims), i.allow_ragged_batch) for i in encoder.input] == [
        ("input_ids", mc.TYPE_INT64, [32], False), ("attention_mask", mc.TYPE_INT64, [32], False)]
    assert [(o.name, o.data_type, list(o.dims)) for o in encoder.output] == [
        ("embedding", mc.TYPE_FP32, [DIM])]
    assert parameters(encoder) == {
        "precision_mode": "FP16", "max_workspace_size_bytes": str(1 << 30),
        "trt_engine_cache_enable": "1", "trt_engine_cache_path": "/engines/query_encoder",
        "trt_profile_min_shapes": TOKENS.format(b=1), "trt_profile_opt_shapes": TOKENS.format(b=8),
        "trt_profile_max_shapes": TOKENS.format(b=64)}

    retrieval = models["retrieval"]
    assert retrieval.backend == "onnxruntime" and retrieval.instance_group[0].kind == GPU
    assert [(i.name, list(i.dims)) for i in retrieval.input] == [("query", [DIM])]
    assert [(o.name, o.data_type, list(o.dims)) for o in retrieval.output] == [
        ("similarity", mc.TYPE_FP32, [PRODUCTS]), ("rows", mc.TYPE_INT64, [PRODUCTS])]
    assert parameters(retrieval)["trt_profile_max_shapes"] == f"query:64x{DIM}"
    assert parameters(retrieval)["trt_engine_cache_path"] == "/engines/retrieval"
    steps = {s.model_name: s for s in config.ensemble_scheduling.step}
    assert dict(steps["query_encoder"].output_map) == {"embedding": "EMBEDDING"}
    assert dict(steps["retrieval"].input_map) == {"query": "EMBEDDING"}
    dense = "DENSE_" if fused else ""
    assert dict(steps["retrieval"].output_map) == {"rows": f"{dense}CANDIDATES",
                                                   "similarity": f"{dense}SIMILARITY"}

    ranker = models["ranker"]
    assert ranker.backend == "python" and ranker.instance_group[0].kind == CPU
    chain = [link["step"].split(":")[1]
             for link in json.loads(ranker.parameters["chain"].string_value)]
    assert chain == (["ScoreCandidates", "Rank"] if fused else ["Rank"])


def test_gpu_repository_parses_with_triton_text_format(tmp_path, model_dir):
    files = tiny_artefacts(tmp_path / "artefacts", model_dir, fused=True)
    repository = tmp_path / "repository"
    search_ensemble(files, ServingOptions(device="gpu")).export(repository, 7)
    parsed = {}
    for path in sorted(repository.glob("*/config.pbtxt")):
        parsed[path.parent.name] = text_format.Parse(path.read_text(), mc.ModelConfig())
        assert parsed[path.parent.name].name == path.parent.name
    assert set(parsed) == {"search", "tokenizer", "query_encoder", "retrieval", "ranker"}
    assert_wired(parsed["search"], parsed)
    assert parameters(parsed["query_encoder"])["precision_mode"] == "FP16"
    for name in ("query_encoder", "retrieval"):
        assert (served_version(repository, name) / "model.onnx").is_file()
        assert served_version(repository, name).name == "7"
    session = ort.InferenceSession(str(served_version(repository, "retrieval") / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == [i.name for i in parsed["retrieval"].input]
    assert (served_version(repository, "tokenizer") / "model.py").is_file()


def test_serving_a_gpu_repository_here_is_refused_up_front(tmp_path, model_dir,
                                                          search_repository):
    """The wheel's tritonserver has only the python backend: `fusionrank serve` says which
    models need what, rather than a Triton log full of load failures."""
    files = tiny_artefacts(tmp_path / "artefacts", model_dir, fused=True)
    repository = tmp_path / "repository"
    search_ensemble(files, ServingOptions(device="gpu")).export(repository, 7)
    backends = triton_home() / "backends"
    assert missing_backends(repository, backends) == {"query_encoder": "onnxruntime",
                                                      "retrieval": "onnxruntime"}
    with pytest.raises(FileNotFoundError, match=r"query_encoder \(onnxruntime\), "
                                                r"retrieval \(onnxruntime\).*--device gpu"):
        TritonServer(repository)
    assert missing_backends(search_repository, backends) == {}  # the CPU repository serves


def test_tensorrt_plan_encoder(tmp_path, model_dir):
    files = tiny_artefacts(tmp_path / "artefacts", model_dir, fused=False)
    built = tmp_path / "encoder.fp16.plan"
    built.write_bytes(b"engine bytes")
    ensemble = search_ensemble(files, ServingOptions(device="gpu", tensorrt_engine=str(built)))
    encoder = next(m for m in ensemble.pipeline.steps if m.name == "query_encoder").config()
    assert encoder.platform == "tensorrt_plan" and not encoder.backend
    assert encoder.instance_group[0].kind == GPU
    assert not encoder.optimization.execution_accelerators.gpu_execution_accelerator
    ensemble.export(tmp_path / "with_engine")
    version = served_version(tmp_path / "with_engine", "query_encoder")
    assert (version / "model.plan").read_bytes() == b"engine bytes"

    # An engine not built yet: linked, to be built at the container's first start.
    later = tmp_path / "engines" / "query_encoder.plan"
    search_ensemble(files, ServingOptions(device="gpu", tensorrt_engine=str(later))).export(
        tmp_path / "to_build")
    version = served_version(tmp_path / "to_build", "query_encoder")
    assert (version / "model.plan").is_symlink() and not (version / "model.plan").exists()
    assert Path((version / "model.plan").readlink()) == later
    assert (version / "model.onnx").read_bytes() == b"placeholder"
    assert (version / "trtexec.args").read_text().split() == [
        "--fp16", f"--minShapes={TOKENS.format(b=1)}", f"--optShapes={TOKENS.format(b=8)}",
        f"--maxShapes={TOKENS.format(b=64)}"]
    with pytest.raises(ValueError, match="must be an absolute path"):
        search_ensemble(files, ServingOptions(device="gpu", tensorrt_engine="x.plan")).export(
            tmp_path / "relative")


def test_native_models_refuse_what_tensorrt_cannot_build(tmp_path):
    ragged = TensorSpec("input_ids", "INT64", (-1,))
    out = (TensorSpec("embedding", "FP32", (8,)),)
    accelerator = TensorRTAccelerator("/engines/x")
    with pytest.raises(ValueError, match="input_ids has dims \\(-1,\\): pad it to a fixed"):
        NativeModel("x", ONNX_RUNTIME, tmp_path / "x.onnx", (ragged,), out, tensorrt=accelerator)
    with pytest.raises(ValueError, match="pad it to a fixed length"):
        NativeModel("x", TENSORRT_PLAN, tmp_path / "x.plan", (ragged,), out)
    with pytest.raises(ValueError, match="runtime must be one of"):
        NativeModel("x", "tensorflow", tmp_path / "x.pb", (ragged,), out)
    with pytest.raises(ValueError, match="accelerator is for onnxruntime models"):
        NativeModel("x", TENSORRT_PLAN, tmp_path / "x.plan", (), out, tensorrt=accelerator)
    # Without TensorRT, ONNX Runtime takes any shape.
    plain = NativeModel("x", ONNX_RUNTIME, tmp_path / "x.onnx", (ragged,), out, kind="cpu")
    assert plain.config().instance_group[0].kind == CPU
    assert not plain.config().HasField("optimization")
    with pytest.raises(FileNotFoundError, match=r"x\.onnx not found"):
        plain.export(tmp_path / "repository")
    for wrong in ({"device": "tpu"}, {"tensorrt_engine": "/engines/e.plan"}):
        with pytest.raises(ValueError, match="device"):
            ServingOptions(**wrong)


def test_ensemble_checks_a_native_steps_inputs(tmp_path):
    fixed = (TensorSpec("input_ids", "INT64", (32,)), TensorSpec("attention_mask", "INT64", (32,)))
    encoder = NativeModel("query_encoder", ONNX_RUNTIME, tmp_path / "e.onnx", fixed,
                          (TensorSpec("embedding", "FP32", (8,)),),
                          tensor_names={"input_ids": "INPUT_IDS",
                                        "attention_mask": "ATTENTION_MASK"})
    with pytest.raises(ValueError, match=r"query_encoder needs \['ATTENTION_MASK', 'INPUT_IDS'\]"):
        (Inputs(SEARCH_INPUTS[0]) >> encoder).ensemble("e", (TensorSpec("embedding", "FP32",
                                                                         (8,)),)).config()


def test_tokenizer_pads_to_a_fixed_length(model_dir):
    folder = model_dir  # holds tokenizer.json
    request = search_request(["cordless drill", "a much longer query about garden hoses"], 10)
    (fixed,) = Tokenize(folder, {"pad_to": "32"})([request])
    (own,) = Tokenize(folder, {})([request])
    assert fixed["INPUT_IDS"].shape == fixed["ATTENTION_MASK"].shape == (2, 32)
    width = own["INPUT_IDS"].shape[1]
    assert width < 32
    np.testing.assert_array_equal(fixed["INPUT_IDS"][:, :width], own["INPUT_IDS"])
    np.testing.assert_array_equal(fixed["ATTENTION_MASK"].sum(axis=1),
                                  own["ATTENTION_MASK"].sum(axis=1))
    assert not fixed["INPUT_IDS"][:, width:].any()
    with pytest.raises(ValueError, match="pad_to = 16 is below max_tokens = 32"):
        Tokenize(folder, {"pad_to": "16"})


def test_retrieval_graph_with_a_constant_k(tmp_path):
    rows = np.random.default_rng(1).normal(size=(30, 8)).astype(np.float32)
    retrieval_graph(rows, tmp_path / "r.onnx", k=5)
    session = ort.InferenceSession(str(tmp_path / "r.onnx"))
    assert [i.name for i in session.get_inputs()] == ["query"]
    queries = rows[[3, 7]] + 0.01
    similarity, found = session.run(None, {"query": queries})
    expected = np.argsort(-(queries @ rows.T), axis=1)[:, :5]
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(similarity, np.take_along_axis(queries @ rows.T, expected, 1),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="k = 31 must be between 1 and the catalogue's 30"):
        retrieval_graph(rows, tmp_path / "r.onnx", k=31)


def test_gpu_repository_ranks_as_the_cpu_one_in_process(search_repository, tmp_path):
    """The GPU repository's native graphs run here with ONNX Runtime on the CPU: its wiring,
    fixed padding and constant-K retrieval answer what the CPU repository (FP32) answers."""
    built = search_repository.parent / "artefacts"
    files = SearchArtefacts(built / "encoder", built / "index")
    embeddings = np.load(files.index / names.EMBEDDINGS)
    retrieval_graph(embeddings, files.index / names.RETRIEVAL_FIXED_K,
                    k=min(ServingOptions.candidates, len(embeddings)))
    search_ensemble(files, ServingOptions(device="gpu")).export(tmp_path / "gpu")
    search_ensemble(files, ServingOptions(precision="fp32")).export(tmp_path / "cpu")
    gpu = InProcessEnsemble(tmp_path / "gpu", "search")
    cpu = InProcessEnsemble(tmp_path / "cpu", "search")
    request = search_request(["hanging heart lantern", "cordless drill battery", "rug"], 10)
    on_gpu, on_cpu = gpu(request), cpu(request)
    np.testing.assert_array_equal(on_gpu["PRODUCT_IDS"], on_cpu["PRODUCT_IDS"])
    np.testing.assert_allclose(on_gpu["SCORES"], on_cpu["SCORES"], atol=1e-5)
    assert on_gpu["PRODUCT_IDS"].shape == (3, 10)
    with pytest.raises(RequestError, match="QUERY\\[0\\] is empty"):
        gpu(search_request([" "], 10))
    with pytest.raises(RequestError, match="K = 0 is out of range"):
        gpu(search_request(["rug"], 0))
    search_ensemble(files, ServingOptions(device="gpu", tensorrt_engine="/engines/e.plan")
                    ).export(tmp_path / "plan")
    with pytest.raises(ValueError, match="tensorrt_plan backend, on a GPU"):
        InProcessEnsemble(tmp_path / "plan", "search")
