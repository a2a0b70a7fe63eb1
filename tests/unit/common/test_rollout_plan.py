"""What `fusionrank deploy` rolls out, decided from the two repositories alone (no server): only
models whose files changed get a new version, and only ensembles that use one are re-pinned."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from fusionrank.app.deploy import RolloutRefused, plan_rollout


def model(repository: Path, name: str, version: int, payload: str, threads: str = "1") -> None:
    config = mc.ModelConfig(name=name, backend="python",
                            parameters={"threads": mc.ModelParameter(string_value=threads)})
    (repository / name / str(version)).mkdir(parents=True)
    (repository / name / "config.pbtxt").write_text(text_format.MessageToString(config))
    (repository / name / str(version) / "data.bin").write_text(payload)


def ensemble(repository: Path, name: str, version: int, steps: dict[str, int]) -> None:
    config = mc.ModelConfig(name=name, platform="ensemble", ensemble_scheduling=mc.ModelEnsembling(
        step=[mc.ModelEnsembling.Step(model_name=m, model_version=v) for m, v in steps.items()]))
    (repository / name / str(version)).mkdir(parents=True)
    (repository / name / "config.pbtxt").write_text(text_format.MessageToString(config))


def build(root: Path, version: int, encoder: str, ranker: str, history: str,
          threads: str = "1") -> Path:
    """A repository like fusionrank build's: search (encoder, ranker) and recommend (history)."""
    model(root, "encoder", version, encoder, threads)
    model(root, "ranker", version, ranker)
    model(root, "history", version, history)
    ensemble(root, "search", version, {"encoder": version, "ranker": version})
    ensemble(root, "recommend", version, {"history": version})
    return root


def test_only_changed_models_get_a_new_version_and_only_their_ensembles_are_repinned(tmp_path):
    serving = build(tmp_path / "serving", 100, "enc", "catalogue-1", "recs")
    source = build(tmp_path / "source", 90, "enc", "catalogue-2", "recs")
    plan = plan_rollout(serving, source)
    assert plan.version == 101  # above the serving one, though the source's number is lower
    assert plan.changed == {"ranker": 100}
    assert set(plan.ensembles) == {"search"}
    search = plan.ensembles["search"].ensemble_scheduling.step
    steps = {s.model_name: s.model_version for s in search}
    assert steps == {"encoder": 100, "ranker": 101}


def test_nothing_changed_plans_nothing(tmp_path):
    serving = build(tmp_path / "serving", 100, "enc", "cat", "recs")
    plan = plan_rollout(serving, build(tmp_path / "source", 200, "enc", "cat", "recs"))
    assert plan.changed == {} and plan.ensembles == {}


def test_a_changed_serving_option_is_refused_naming_the_model(tmp_path):
    serving = build(tmp_path / "serving", 100, "enc", "cat", "recs")
    source = build(tmp_path / "source", 200, "enc-2", "cat", "recs", threads="4")
    with pytest.raises(RolloutRefused, match=r"^encoder's config differs from the serving one"):
        plan_rollout(serving, source)


def test_an_interrupted_rollout_is_refused_until_one_version_is_left(tmp_path):
    serving = build(tmp_path / "serving", 100, "enc", "cat", "recs")
    (serving / "ranker" / "101").mkdir()
    with pytest.raises(RolloutRefused, match=r"ranker holds the versions \[100, 101\]"):
        plan_rollout(serving, build(tmp_path / "source", 200, "enc", "cat-2", "recs"))
