"""The generated model repository: typed configs, ensemble wiring, thin model files, and the
in-process runner that executes an ensemble as its config wires it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from fusionrank.core.contract import RequestError, TensorSpec
from fusionrank.core.fusion import FusionWeights, rank
from fusionrank.core.search.contract import SEARCH_INPUTS, SEARCH_OUTPUTS, search_request
from fusionrank.model_repository.config import PythonModel, served_version
from fusionrank.model_repository.ensemble import Inputs
from fusionrank.model_repository.runner import InProcessEnsemble, load_step
from fusionrank.model_repository.search.ensemble import (
    SearchArtefacts,
    ServingOptions,
    search_ensemble,
)
from fusionrank.model_repository.search.steps import Rank, Tokenize


def read_config(repository, name) -> mc.ModelConfig:
    return text_format.Parse((repository / name / "config.pbtxt").read_text(), mc.ModelConfig())


def test_repository_holds_the_search_pipeline(search_repository):
    search = read_config(search_repository, "search")
    assert search.platform == "ensemble"
    assert [s.model_name for s in search.ensemble_scheduling.step] == [
        "tokenizer", "query_encoder", "retrieval", "ranker"]
    assert [i.name for i in search.input] == [t.name for t in SEARCH_INPUTS]
    assert [o.name for o in search.output] == [t.name for t in SEARCH_OUTPUTS]
    for name in ("tokenizer", "query_encoder", "retrieval", "ranker"):
        config = read_config(search_repository, name)
        assert config.backend == "python" and config.HasField("dynamic_batching")
        model_py = (served_version(search_repository, name) / "model.py").read_text()
        step = config.parameters["step"].string_value
        module, _, cls = step.partition(":")
        assert module == "fusionrank.model_repository.search.steps"
        assert f"from {module} import {cls}" in model_py
        assert f"TritonPythonModel = triton_model({cls})" in model_py
        assert type(load_step(search_repository, name)).__name__ == cls
    manifest = json.loads((search_repository / "fusionrank.json").read_text())
    assert manifest["encoder"]["parity_min_cosine"] >= 0.9999
    assert manifest["index"]["products"] > 300


def test_instance_counts_and_threads_are_configurable(tmp_path):
    FusionWeights().save(tmp_path / "ranking.json")
    ensemble = search_ensemble(SearchArtefacts(tmp_path, tmp_path),
                               ServingOptions(encoder_instances=3, onnx_threads=1))
    encoder = next(s for s in ensemble.pipeline.steps if s.name == "query_encoder")
    config = encoder.config()
    assert config.instance_group[0].count == 3
    assert config.parameters["threads"].string_value == "1"


def test_ensemble_wiring_errors_are_caught_before_the_server():
    orphan = PythonModel("needs_x", Rank, (TensorSpec("X", "FP32", (-1,)),),
                         (TensorSpec("Y", "FP32", (-1,)),))
    with pytest.raises(ValueError, match=r"step needs_x needs \['X'\]"):
        (Inputs(*SEARCH_INPUTS) >> orphan).ensemble("broken", ()).config()
    echo = PythonModel("echo", Rank, (SEARCH_INPUTS[1],), (TensorSpec("Y", "FP32", (-1,)),))
    with pytest.raises(ValueError, match=r"no step produces the outputs \['Z'\]"):
        (Inputs(*SEARCH_INPUTS) >> echo).ensemble("broken", (TensorSpec("Z", "FP32", (1,)),)
                                                  ).config()


def test_tokenizer_step_rejects_each_bad_row_and_serves_the_rest(search_repository):
    step = Tokenize(served_version(search_repository, "tokenizer"), {})
    good = {"QUERY": np.array([[b"drill"]], dtype=object)}
    bad = {"QUERY": np.array([[b"drill"], [b"\xc3"]], dtype=object)}
    results = step([good, bad])
    assert set(results[0]) == {"INPUT_IDS", "ATTENTION_MASK"}
    assert isinstance(results[1], RequestError) and "QUERY[1] is not valid UTF-8" in str(results[1])


def test_ranking_breaks_ties_by_catalogue_order_and_fuses_signals():
    candidates = np.array([[7, 3, 5, 1]])
    similarity = np.array([[0.5, 0.5, 0.9, 0.5 + 1e-9]])
    order, scores = rank(candidates, [(1.0, similarity)], k=3)
    assert order.tolist() == [[5, 1, 3]]
    feedback = np.array([[1.0, 0.0, 0.0, 0.0]])
    order, scores = rank(candidates, [(1.0, similarity), (0.5, feedback)], k=2)
    assert order.tolist() == [[7, 5]] and scores[0, 0] == pytest.approx(1.0)


def test_fusion_weights_round_trip_and_reject_unknown_signals(tmp_path):
    weights = FusionWeights({"similarity": 0.7, "feedback": 0.3}, provenance="fitted on dev")
    weights.save(tmp_path / "w.json")
    assert FusionWeights.load(tmp_path / "w.json") == weights
    with pytest.raises(ValueError, match="unknown ranking signal"):
        FusionWeights({"popularity": 1.0})


def test_ranker_orders_candidates_and_attaches_their_metadata(search_repository):
    ranker = Rank(served_version(search_repository, "ranker"), {})
    (result,) = ranker([{"CANDIDATES": np.array([[0, 1]]), "SIMILARITY": np.array([[0.2, 0.9]]),
                         "K": np.array([[5]], dtype=np.int32)}])
    assert result["PRODUCT_IDS"].shape == (1, 2)  # k = 5, but only two candidates
    best = json.loads(result["PRODUCTS"][0, 0])
    assert best["product_id"] == result["PRODUCT_IDS"][0, 0].decode()
    assert result["SCORES"][0].tolist() == pytest.approx([0.9, 0.2])


def test_in_process_runner_chains_the_configured_steps_and_raises_request_errors(
        search_repository):
    search = InProcessEnsemble(search_repository, "search")
    assert [type(step).__name__ for step, _, _ in search.steps] == [
        "Tokenize", "EncodeQueries", "Retrieve", "Rank"]
    answer = search(search_request(["ceiling fan", "teapot"], 2))
    assert set(answer) == {t.name for t in SEARCH_OUTPUTS}
    assert answer["PRODUCT_IDS"][:, 0].tolist() == [b"A-FAN", b"A-TEAPOT"]
    with pytest.raises(RequestError, match="K = 0"):
        search(search_request(["ceiling fan"], 0))
    with pytest.raises(ValueError, match="not an ensemble"):
        InProcessEnsemble(search_repository, "ranker")
    with pytest.raises(FileNotFoundError, match=r"config\.pbtxt not found"):
        InProcessEnsemble(search_repository, "recommend")


@pytest.mark.slow
def test_each_build_serves_a_new_version(tiny_catalogue, model_dir, tmp_path):
    from fusionrank.app.build import build_search_repository

    versions = []
    for _ in range(2):
        repository = build_search_repository(tiny_catalogue, model_dir, tmp_path,
                                             ServingOptions(onnx_threads=1))
        versions.append(json.loads((repository / "fusionrank.json").read_text())["version"])
        assert [p.name for p in (repository / "search").iterdir() if p.is_dir()] == [
            str(versions[-1])]
    assert versions[1] > versions[0]  # even within one second
    assert read_config(repository, "search").response_cache.enable
