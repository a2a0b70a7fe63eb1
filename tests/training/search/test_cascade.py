"""`fusionrank tune-cascade` and `fusionrank build --cascade-depth` (issue 25): the depths are
fitted on dev and one is chosen by the rule, the build serves the depth asked for (or refuses
it, naming the range), and the served cascade ranks as the offline runtime does."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fusionrank.app.build import BuildError, build_search_repository, served_ranking
from fusionrank.app.cli import main
from fusionrank.core import artefacts
from fusionrank.core.encoding import MAX_QUERY_TOKENS, OnnxEncoder, TextEncoder, TextTokenizer
from fusionrank.core.fusion import Cascade, FusionWeights
from fusionrank.core.search.contract import search_request
from fusionrank.core.search.runtime import SearchRuntime
from fusionrank.model_repository.config import served_version
from fusionrank.model_repository.runner import InProcessEnsemble
from fusionrank.model_repository.search.ensemble import SEARCH_STEPS, ServingOptions
from fusionrank.training.search.cascade import CASCADE_FILE, CascadeConfig, tune_cascade
from tests.support.catalogue import ANCHORS

TODAY = FusionWeights({"similarity": 0.4, "feedback": 0.25, "lexical": 0.35}, "the run's fit")
FIRST = {"similarity": 0.55, "lexical": 0.45}


@pytest.fixture
def run_files(tmp_path):
    """A run folder's ranking files: its one-stage weights, and a tuning of depths 8 and 32."""
    TODAY.save(tmp_path / artefacts.FUSION_WEIGHTS)
    fitted = {depth: FusionWeights({"similarity": 0.2, "feedback": 0.35, "lexical": 0.45},
                                   f"depth {depth}", Cascade(depth, FIRST)) for depth in (8, 32)}
    (tmp_path / CASCADE_FILE).write_text(json.dumps({
        "pool": 200, "chosen": 32,
        "depths": [{"depth": d, "weights": {"weights": w.weights, "provenance": w.provenance,
                                            "cascade": {"depth": d, "first_stage": FIRST}}}
                   for d, w in fitted.items()]}))
    return tmp_path, fitted


def test_the_build_serves_the_depth_asked_for(run_files):
    run, fitted = run_files
    assert served_ranking(run, 8, 200) == fitted[8]
    assert served_ranking(run, "auto", 200) == fitted[32]  # the tuning's choice
    assert served_ranking(run, "off", 200) == TODAY
    assert served_ranking(run, 200, 200) == TODAY  # a depth that covers the pool: one stage
    (run / CASCADE_FILE).unlink()
    assert served_ranking(run, "auto", 200) == TODAY  # never tuned: one stage, as before


@pytest.mark.parametrize("depth", [0, -1, 201, 5000])
def test_a_depth_outside_the_pool_is_refused_with_the_range(run_files, depth):
    with pytest.raises(BuildError, match=r"--cascade-depth must be between 1 and 200 .* not "
                                         rf"{depth}$"):
        served_ranking(run_files[0], depth, 200)


def test_a_depth_the_run_was_not_tuned_for_is_refused_with_the_command_that_tunes_it(run_files):
    run, _ = run_files
    with pytest.raises(BuildError, match=r"no cascade fitted for depth 16 \(fitted: \[8, 32\]\)"
                                         r": run `fusionrank tune-cascade --run .* --depths 16`"):
        served_ranking(run, 16, 200)
    (run / CASCADE_FILE).unlink()
    with pytest.raises(BuildError, match="holds no cascade fits"):
        served_ranking(run, 16, 200)


@pytest.mark.parametrize("value", ["deep", "1.5", ""])
def test_the_cli_refuses_a_depth_that_is_not_a_number(value, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["build", "--cascade-depth", value])
    assert stopped.value.code == 2
    assert "a depth (an integer), off or auto" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "message"), [("8,x", "integers separated by commas"),
                                                  ("0,8", "depths must be positive")])
def test_tuning_refuses_depths_that_are_not_positive_integers(value, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["tune-cascade", "--depths", value])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_tuning_refuses_a_depth_beyond_the_pool_before_fitting_anything(tuned, search_run):
    run, _ = tuned
    before = (run / CASCADE_FILE).read_text()
    with pytest.raises(ValueError, match=r"cascade depths \[201\] outside 1..200"):
        tune_cascade(CascadeConfig(run, depths=(8, 201), cache=search_run.cache, threads=1))
    assert (run / CASCADE_FILE).read_text() == before


@pytest.fixture(scope="module")
def tuned(search_run, tmp_path_factory):
    """A copy of the tiny trained run without the tuning `train` did (the session's run keeps
    it), tuned for three depths."""
    if search_run is None:
        pytest.skip("shared datasets not found")
    run = tmp_path_factory.mktemp("tuned") / "run"
    shutil.copytree(search_run.run, run, ignore=shutil.ignore_patterns("encoder", CASCADE_FILE))
    (run / "encoder").symlink_to(search_run.run / "encoder")
    report = tune_cascade(CascadeConfig(run, depths=(3, 8, 200), cache=search_run.cache,
                                        threads=1, timing_queries=8))
    return run, report


def test_tuning_fits_each_depth_and_chooses_the_smallest_within_the_tolerance(tuned):
    run, report = tuned
    assert json.loads((run / CASCADE_FILE).read_text()) == report
    assert [row["depth"] for row in report["depths"]] == [3, 8, 200]
    first = report["first_stage"]["weights"]
    assert set(first) == {"similarity", "lexical"}
    today = FusionWeights.load(run / artefacts.FUSION_WEIGHTS)
    for row in report["depths"]:
        weights = FusionWeights(**row["weights"])
        if row["depth"] >= report["pool"]:
            assert weights == today and row["ndcg@10"] == report["one_stage"]["ndcg@10"]
        else:
            assert weights.cascade == Cascade(row["depth"], {s: w for s, w in first.items()
                                                             if w > 0})
        assert 0 <= row["ndcg@10"] <= 1 and row["core_ms_per_query"] > 0
    within = [row["depth"] for row in report["depths"]
              if row["ndcg@10"] >= report["one_stage"]["ndcg@10"] - report["tolerance"]]
    assert report["chosen"] == min(within)


def test_tuning_another_depth_adds_it_to_the_sweep(tuned, search_run):
    run, first = tuned
    added = tune_cascade(CascadeConfig(run, depths=(5, 8), cache=search_run.cache, threads=1,
                                       timing_queries=8))
    assert [row["depth"] for row in added["depths"]] == [3, 5, 8, 200]
    kept = {row["depth"]: row for row in first["depths"]}
    assert {row["depth"]: row for row in added["depths"]}[3] == kept[3]  # not refitted
    within = [row["depth"] for row in added["depths"]
              if row["ndcg@10"] >= added["one_stage"]["ndcg@10"] - added["tolerance"]]
    assert added["chosen"] == min(within)
    (run / CASCADE_FILE).write_text(json.dumps(first, indent=2) + "\n")  # as the others found it


def test_a_cascade_build_serves_what_the_offline_runtime_ranks(tuned, tiny_catalogue, model_dir,
                                                               tmp_path_factory, search_run):
    run, _ = tuned
    repository = build_search_repository(
        tiny_catalogue, model_dir, tmp_path_factory.mktemp("cascade_build"),
        ServingOptions(onnx_threads=1, max_queue_delay_us=100, precision="fp32"), run_dir=run,
        cascade_depth=3)
    manifest = json.loads((repository / artefacts.REPOSITORY_MANIFEST).read_text())
    assert manifest["ranking"]["cascade"]["depth"] == 3
    folder = served_version(repository, SEARCH_STEPS)
    encoder = TextEncoder(TextTokenizer(folder / artefacts.TOKENIZER, MAX_QUERY_TOKENS),
                          OnnxEncoder(folder / artefacts.ENCODER, threads=1))
    runtime = SearchRuntime.load(folder, threads=1)
    assert runtime.weights.cascade.depth == 3
    queries = [*ANCHORS, *search_run.queries[:10]]
    rows, scores = runtime.search(queries, encoder.encode(queries), k=10)
    served = InProcessEnsemble(repository, "search")(search_request(queries, 10))
    for i in range(len(queries)):
        assert [p.decode() for p in served["PRODUCT_IDS"][i]] == [
            tiny_catalogue.ids[r] for r in rows[i]]
        np.testing.assert_allclose(served["SCORES"][i], scores[i], atol=1e-4)
