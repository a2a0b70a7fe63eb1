"""The generated model repository: typed configs, ensemble wiring, thin model files, and the
in-process runner that executes an ensemble as its config wires it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from fusionrank.core.contract import RequestError, TensorSpec
from fusionrank.core.fusion import Cascade, FusionWeights, rank
from fusionrank.core.search.contract import (
    EXPLAIN_OUTPUTS,
    SEARCH_INPUTS,
    SEARCH_OUTPUTS,
    Detail,
    search_request,
)
from fusionrank.model_repository.config import (
    PythonModel,
    merged,
    model_of_step,
    served_version,
    write_config,
)
from fusionrank.model_repository.ensemble import Inputs
from fusionrank.model_repository.runner import InProcessEnsemble, load_step, step_parameters
from fusionrank.model_repository.search.ensemble import (
    SEARCH_STEPS,
    SearchArtefacts,
    ServingOptions,
    search_ensemble,
)
from fusionrank.model_repository.search.steps import Rank, Tokenize
from fusionrank.model_repository.step import StepContract, load_step_class


def read_config(repository, name) -> mc.ModelConfig:
    return text_format.Parse((repository / name / "config.pbtxt").read_text(), mc.ModelConfig())


def test_repository_holds_the_search_pipeline(search_repository):
    search = read_config(search_repository, "search")
    assert search.platform == "ensemble"
    assert [s.model_name for s in search.ensemble_scheduling.step] == [SEARCH_STEPS]
    assert [i.name for i in search.input] == [t.name for t in SEARCH_INPUTS]
    assert [o.name for o in search.output] == [t.name for t in (*SEARCH_OUTPUTS,
                                                                 *EXPLAIN_OUTPUTS)]
    chains = {SEARCH_STEPS: ["Tokenize", "EncodeQueries", "Retrieve", "Rank"]}
    for name, chain in chains.items():
        config = read_config(search_repository, name)
        assert config.backend == "python" and config.HasField("dynamic_batching")
        model_py = (served_version(search_repository, name) / "model.py").read_text()
        assert config.parameters["step"].string_value == "fusionrank.model_repository.step:Chain"
        assert "TritonPythonModel = triton_model(Chain)" in model_py
        links = json.loads(config.parameters["chain"].string_value)
        assert [link["step"] for link in links] == [
            f"fusionrank.model_repository.search.steps:{step}" for step in chain]
        assert [type(step).__name__ for step, _ in load_step(search_repository, name).steps
                ] == chain
    # The pretrained ranker has no speller: its optional CORRECTION input is left unmapped.
    ranker_step = search.ensemble_scheduling.step[0]
    assert "CORRECTION" not in ranker_step.input_map
    assert set(ranker_step.input_map) == {"QUERY", "K", "DETAIL"}
    manifest = json.loads((search_repository / "fusionrank.json").read_text())
    assert manifest["encoder"]["parity_min_cosine"] >= 0.9999
    assert manifest["index"]["products"] > 300


def test_layouts_group_the_steps_into_five_two_or_one_models(tmp_path):
    FusionWeights().save(tmp_path / "ranking.json")
    files = SearchArtefacts(tmp_path, tmp_path, run=tmp_path)
    ensemble = search_ensemble(files, ServingOptions(layout="steps"))
    steps = ensemble.config().ensemble_scheduling.step
    assert [s.model_name for s in steps] == [
        "tokenizer", "query_encoder", "retrieval", "scoring", "ranker"]
    assert dict(steps[2].output_map) == {"CANDIDATES": "DENSE_CANDIDATES",
                                         "SIMILARITY": "DENSE_SIMILARITY"}
    assert steps[4].input_map["CORRECTION"] == "CORRECTION"
    merged_steps = search_ensemble(files, ServingOptions(layout="two")
                                   ).config().ensemble_scheduling.step
    assert [s.model_name for s in merged_steps] == ["query_encoder", "ranker"]
    assert set(merged_steps[1].input_map) == {"EMBEDDING", "K", "QUERY", "DETAIL"}
    one = search_ensemble(files, ServingOptions(ranker_instances=3))  # layout one: the default
    (step,) = one.config().ensemble_scheduling.step
    assert step.model_name == SEARCH_STEPS and set(step.input_map) == {"QUERY", "K",
                                                                         "DETAIL"}
    model = next(m for m in one.pipeline.steps if m.name == SEARCH_STEPS).config()
    assert [link["step"].rpartition(":")[2] for link in json.loads(
        model.parameters["chain"].string_value)] == [
        "Tokenize", "EncodeQueries", "Retrieve", "ScoreCandidates", "Rank"]
    assert model.instance_group[0].count == 3
    with pytest.raises(ValueError, match="layout must be one of one, two, steps"):
        ServingOptions(layout="three")


def test_instance_counts_and_threads_are_configurable(tmp_path):
    FusionWeights().save(tmp_path / "ranking.json")
    ensemble = search_ensemble(SearchArtefacts(tmp_path, tmp_path),
                               ServingOptions(layout="two", encoder_instances=3,
                                              onnx_threads=1))
    encoder = next(s for s in ensemble.pipeline.steps if s.name == "query_encoder")
    config = encoder.config()
    assert config.instance_group[0].count == 3
    assert config.parameters["threads"].string_value == "1"
    # One ranker copy with two threads beside two encoder copies of one thread each.
    ensemble = search_ensemble(SearchArtefacts(tmp_path, tmp_path, run=tmp_path),
                               ServingOptions(layout="two", encoder_instances=2,
                                              ranker_instances=1, ranker_threads=2))
    configs = {s.name: s.config() for s in ensemble.pipeline.steps}
    assert configs["query_encoder"].parameters["threads"].string_value == "1"
    assert configs["ranker"].parameters["threads"].string_value == "2"
    assert configs["ranker"].instance_group[0].count == 1
    with pytest.raises(ValueError, match="ranker_threads needs layout two or steps"):
        ServingOptions(ranker_threads=2)


def test_ensemble_wiring_errors_are_caught_before_the_server():
    orphan = PythonModel("needs_x", Rank, StepContract((TensorSpec("X", "FP32", (-1,)),),
                                                       (TensorSpec("Y", "FP32", (-1,)),)))
    with pytest.raises(ValueError, match=r"step needs_x needs \['X'\]"):
        (Inputs(*SEARCH_INPUTS) >> orphan).ensemble("broken", ()).config()
    echo = PythonModel("echo", Rank, StepContract((SEARCH_INPUTS[1],),
                                                  (TensorSpec("Y", "FP32", (-1,)),)))
    with pytest.raises(ValueError, match=r"no step produces the outputs \['Z'\]"):
        (Inputs(*SEARCH_INPUTS) >> echo).ensemble("broken", (TensorSpec("Z", "FP32", (1,)),)
                                                  ).config()


def test_tokenizer_step_rejects_each_bad_row_and_serves_the_rest(search_repository):
    step = Tokenize(served_version(search_repository, SEARCH_STEPS), {})
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
    ranker = Rank(served_version(search_repository, SEARCH_STEPS), {})
    (result,) = ranker([{"CANDIDATES": np.array([[0, 1]]), "SIMILARITY": np.array([[0.2, 0.9]]),
                         "K": np.array([[5]], dtype=np.int32)}])
    assert result["PRODUCT_IDS"].shape == (1, 2)  # k = 5, but only two candidates
    best = json.loads(result["PRODUCTS"][0, 0])
    assert best["product_id"] == result["PRODUCT_IDS"][0, 0].decode()
    assert result["SCORES"][0].tolist() == pytest.approx([0.9, 0.2])


def test_in_process_runner_chains_the_configured_steps_and_raises_request_errors(
        search_repository):
    search = InProcessEnsemble(search_repository, "search")
    assert [type(step).__name__ for step, _, _ in search.steps] == ["Chain"]
    answer = search(search_request(["ceiling fan", "teapot"], 2))
    assert set(answer) == {t.name for t in (*SEARCH_OUTPUTS, *EXPLAIN_OUTPUTS)}
    assert answer["PRODUCT_IDS"][:, 0].tolist() == [b"A-FAN", b"A-TEAPOT"]
    with pytest.raises(RequestError, match="K = 0"):
        search(search_request(["ceiling fan"], 0))
    with pytest.raises(ValueError, match="not an ensemble"):
        InProcessEnsemble(search_repository, SEARCH_STEPS)
    with pytest.raises(FileNotFoundError, match=r"config\.pbtxt not found"):
        InProcessEnsemble(search_repository, "recommend")


@pytest.mark.slow
def test_each_build_serves_a_new_version(tiny_catalogue, model_dir, tmp_path):
    pytest.importorskip("torch")  # a build exports the encoder (the export layer)
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


X, Y, Z = (TensorSpec(name, "FP32", (-1,)) for name in "XYZ")
OUT = TensorSpec("OUT", "FP32", (-1,))


class AddStep:
    """X → OUT = X + `by`; rejects a request holding a negative X."""

    CONTRACT = StepContract(inputs=(X,), outputs=(OUT,))

    def __init__(self, folder, parameters):
        self.by = float(parameters["by"])

    def __call__(self, requests):
        return [RequestError("X is negative") if (r["X"] < 0).any() else {"OUT": r["X"] + self.by}
                for r in requests]


class DoubleStep:
    """Y → Z = 2·Y."""

    CONTRACT = StepContract(inputs=(Y,), outputs=(Z,))

    def __init__(self, folder, parameters):
        pass

    def __call__(self, requests):
        return [{"Z": 2 * r["Y"]} for r in requests]


def test_merged_models_run_their_steps_in_one_chain_and_fail_requests_alone(tmp_path):
    add = PythonModel("add", AddStep, parameters={"by": "1"}, tensor_names={"OUT": "Y"})
    double = PythonModel("double", DoubleStep)
    model = merged("add_double", add, double, instances=2)
    config = model.config()
    assert [i.name for i in config.input] == ["X"] and [o.name for o in config.output] == ["Z"]
    assert config.instance_group[0].count == 2
    (Inputs(X) >> model).ensemble("e", (Z,)).config()  # wires as one step
    chain = load_step_class(config.parameters["step"].string_value)(
        tmp_path, step_parameters(config))
    answers = chain([{"X": np.array([[1.0]])}, {"X": np.array([[-1.0]])},
                     {"X": np.array([[2.0]])}])
    assert answers[0]["Z"].tolist() == [[4.0]] and answers[2]["Z"].tolist() == [[6.0]]
    assert set(answers[0]) == {"Z"}  # only the declared outputs leave the model
    assert isinstance(answers[1], RequestError) and "negative" in str(answers[1])
    (alone,) = chain([{"X": np.array([[-3.0]])}])  # the later steps never see an empty call
    assert isinstance(alone, RequestError)
    clash = PythonModel("add2", AddStep, StepContract((Y,), (Z,)), parameters={"by": "2"})
    with pytest.raises(ValueError, match=r"add2 sets the parameter\(s\) \['by'\] differently"):
        merged("bad", add, clash)


def test_a_model_declares_the_tensors_its_step_declares():
    config = PythonModel("add", AddStep, parameters={"by": "1"}).config()
    assert [i.name for i in config.input] == ["X"] and [o.name for o in config.output] == ["OUT"]

    class Undeclared:
        pass

    with pytest.raises(TypeError, match=r"the step .*Undeclared declares no CONTRACT"):
        PythonModel("undeclared", Undeclared)
    with pytest.raises(ValueError, match=r"the input\(s\) \['X'\] are declared twice"):
        StepContract((X, X), (OUT,))


def test_the_ranker_reads_the_signals_its_weights_fuse_in_their_order():
    contract = Rank.fusing(FusionWeights({"lexical": 0.3, "similarity": 0.7}))
    assert [spec.name for spec in contract.inputs] == [
        "CANDIDATES", "LEXICAL", "SIMILARITY", "K", "CORRECTION", "DETAIL"]
    assert [spec.name for spec in contract.inputs if spec.optional] == ["CORRECTION", "DETAIL"]
    assert contract.outputs == Rank.CONTRACT.outputs
    # What a search answer always carries; the rest follows the request's DETAIL.
    assert [spec.name for spec in contract.outputs if not spec.optional] == [
        spec.name for spec in Detail.IDS.outputs]


def test_ranker_explains_each_score_by_its_weighted_signals(tmp_path, search_repository):
    folder = tmp_path / "ranker"
    folder.mkdir()
    products = served_version(search_repository, SEARCH_STEPS) / "products.jsonl"
    (folder / products.name).write_bytes(products.read_bytes())
    catalogue_ids = [json.loads(line)["product_id"] for line in products.read_text().splitlines()]
    FusionWeights({"similarity": 0.7, "feedback": 0.25, "lexical": 0.05}).save(
        folder / "ranking.json")
    rng = np.random.default_rng(0)
    request = {"CANDIDATES": np.array([[4, 9, 2, 7, 1]]), "K": np.array([[3]], dtype=np.int32),
               "SIMILARITY": rng.random((1, 5), dtype=np.float32),
               "FEEDBACK": 1 + 2 * rng.random((1, 5), dtype=np.float32),
               "LEXICAL": rng.random((1, 5), dtype=np.float32),
               "CORRECTION": np.array([[b"garden hose"]], dtype=object)}
    (result,) = Rank(folder, {})([request])
    assert result["SIGNAL_NAMES"][0].tolist() == [b"similarity", b"feedback", b"lexical"]
    assert result["SIGNAL_WEIGHTS"][0].tolist() == [[0.7, 0.25, 0.05]] * 3
    assert result["CORRECTED"].tolist() == [[b"garden hose"]]
    candidates = request["CANDIDATES"][0].tolist()
    for place, product_id in enumerate(result["PRODUCT_IDS"][0]):
        position = candidates.index(catalogue_ids.index(product_id.decode()))
        values = result["SIGNALS"][0, place]
        assert values.tolist() == [request[n][0, position] for n in ("SIMILARITY", "FEEDBACK",
                                                                     "LEXICAL")]
        total = sum(w * float(v) for w, v in zip([0.7, 0.25, 0.05], values, strict=True))
        assert np.float32(total) == result["SCORES"][0, place]


def test_a_cascade_explains_the_head_by_s_and_the_rest_by_the_first_stage(tmp_path,
                                                                          search_repository):
    folder = tmp_path / "ranker"
    folder.mkdir()
    products = served_version(search_repository, SEARCH_STEPS) / "products.jsonl"
    (folder / products.name).write_bytes(products.read_bytes())
    catalogue_ids = [json.loads(line)["product_id"] for line in products.read_text().splitlines()]
    FusionWeights({"similarity": 0.5, "feedback": 0.3, "lexical": 0.2},
                  cascade=Cascade(2, {"similarity": 0.6, "lexical": 0.4})).save(
        folder / "ranking.json")
    # First stage: 0.6·s + 0.4·lexical = 0.9, 0.7, 0.5, 0.3 → head 4, 9; feedback below it
    # was never computed (NaN, as ScoreCandidates leaves it).
    request = {"CANDIDATES": np.array([[4, 9, 2, 7]]), "K": np.array([[4]], dtype=np.int32),
               "SIMILARITY": np.array([[0.9, 0.7, 0.5, 0.3]], np.float32),
               "LEXICAL": np.array([[0.9, 0.7, 0.5, 0.3]], np.float32),
               "FEEDBACK": np.array([[1.0, 3.0, np.nan, np.nan]], np.float32)}
    (result,) = Rank(folder, {})([request])
    assert [catalogue_ids.index(p.decode()) for p in result["PRODUCT_IDS"][0]] == [9, 4, 2, 7]
    assert result["SIGNAL_WEIGHTS"][0].tolist() == [[0.5, 0.3, 0.2], [0.5, 0.3, 0.2],
                                                    [0.6, 0.0, 0.4], [0.6, 0.0, 0.4]]
    np.testing.assert_allclose(result["SIGNALS"][0], [[0.7, 3.0, 0.7], [0.9, 1.0, 0.9],
                                                      [0.5, 0.0, 0.5], [0.3, 0.0, 0.3]],
                               atol=1e-7)
    for place in range(4):  # each score is its own weights times its own values
        total = sum(float(w) * float(v) for w, v in zip(result["SIGNAL_WEIGHTS"][0, place],
                                                        result["SIGNALS"][0, place], strict=True))
        assert np.float32(total) == result["SCORES"][0, place]


def test_the_model_of_a_step_is_found_whatever_the_layout(tmp_path):
    FusionWeights().save(tmp_path / "ranking.json")
    files = SearchArtefacts(tmp_path, tmp_path, run=tmp_path)
    expected = {"one": {"Tokenize": SEARCH_STEPS, "ScoreCandidates": SEARCH_STEPS},
                "two": {"Tokenize": "query_encoder", "ScoreCandidates": "ranker"},
                "steps": {"Tokenize": "tokenizer", "ScoreCandidates": "scoring"}}
    for layout, models in expected.items():
        repository = tmp_path / layout
        ensemble = search_ensemble(files, ServingOptions(layout=layout))
        for config in (ensemble.config(), *(m.config() for m in ensemble.pipeline.steps)):
            write_config(config, repository, 1)  # the configs alone: no artefacts needed
        for step, model in models.items():
            assert model_of_step(repository, "search", step) == model
    with pytest.raises(ValueError, match=r"no model of the search ensemble .* runs Translate"):
        model_of_step(tmp_path / "one", "search", "Translate")
