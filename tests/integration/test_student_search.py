"""A repository built with a student query encoder (`fusionrank build --student`): the student
encodes the queries, the index keeps the teacher's embeddings, and a real Triton answers as
the offline path `fusionrank evaluate --student` computes (the student exported from its own
folder, then the search runtime over the served files)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fusionrank.client import FusionRankClient
from fusionrank.core import artefacts
from fusionrank.core.fusion import FusionWeights
from fusionrank.core.search.contract import search_request
from fusionrank.core.search.runtime import SearchRuntime
from fusionrank.model_repository.config import served_version
from fusionrank.model_repository.runner import InProcessEnsemble
from fusionrank.model_repository.search.ensemble import SEARCH_STEPS
from fusionrank.training.embeddings import Embedder, exported_encoder, weights_digest
from tests.support.catalogue import ANCHORS, running_server

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def student_repository(tiny_catalogue, model_dir, search_run, search_student,
                       tmp_path_factory) -> Path:
    from fusionrank.app.build import build_search_repository
    from fusionrank.model_repository.search.ensemble import ServingOptions

    if search_student is None:
        pytest.skip("shared datasets not found")
    # FP32, so the served student is the very graph the offline path runs.
    return build_search_repository(
        tiny_catalogue, model_dir, tmp_path_factory.mktemp("student_build"),
        ServingOptions(onnx_threads=1, max_queue_delay_us=100, precision="fp32"),
        run_dir=search_run.run, student_dir=search_student)


@pytest.fixture(scope="module")
def student_server(student_repository, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("triton_student") / "tritonserver.log"
    with running_server(student_repository, log_path) as server:
        yield server


def offline_embedder(model: Path, folder: Path, titles: list[str]) -> Embedder:
    return Embedder(exported_encoder(model, folder, titles), threads=1)


def test_the_student_encodes_queries_and_the_teacher_the_catalogue(
        student_repository, trained_run, trained_student, tiny_catalogue, tmp_path):
    manifest = json.loads((student_repository / artefacts.REPOSITORY_MANIFEST).read_text())
    teacher_dir = trained_run.run / "encoder" / "best"
    assert manifest["query_encoder"]["distillation"]["teacher_weights"] \
        == weights_digest(teacher_dir)
    assert manifest["query_encoder"]["source"] == str(trained_student)
    assert manifest["encoder"]["source"] == str(teacher_dir)
    served = served_version(student_repository, SEARCH_STEPS)
    titles = tiny_catalogue.titles[:32]
    student = offline_embedder(trained_student, tmp_path / "student", titles)
    teacher = offline_embedder(teacher_dir, tmp_path / "teacher", titles)
    assert (served / artefacts.ENCODER).read_bytes() != (teacher.onnx_dir / artefacts.ENCODER
                                                         ).read_bytes()
    index = np.load(student_repository.parent / "artefacts" / "index" / artefacts.EMBEDDINGS)
    np.testing.assert_allclose(index[:32], teacher.encode_titles(titles, progress=False),
                               atol=1e-5)
    assert not np.allclose(index[:32], student.encode_titles(titles, progress=False), atol=1e-3)


def test_served_student_ranking_equals_the_offline_one(student_server, student_repository,
                                                       trained_run, trained_student,
                                                       tiny_catalogue, tmp_path):
    queries = [*ANCHORS, *trained_run.queries[:14]]
    # The offline path as `fusionrank evaluate --student` runs it: the student exported from its
    # own folder encodes the queries; the search runtime over the served ranker's files.
    student = offline_embedder(trained_student, tmp_path / "student", tiny_catalogue.titles[:32])
    teacher = offline_embedder(trained_run.run / "encoder" / "best", tmp_path / "teacher",
                               tiny_catalogue.titles[:32])
    ranker = served_version(student_repository, SEARCH_STEPS)
    runtime = SearchRuntime.load(ranker, threads=1)
    runtime.weights = FusionWeights.load(ranker / artefacts.FUSION_WEIGHTS)
    rows, scores = runtime.search(queries, student.encode_queries(queries), k=10)
    offline = [[tiny_catalogue.ids[r] for r in query_rows] for query_rows in rows]
    _, teacher_scores = runtime.search(queries, teacher.encode_queries(queries), k=10)

    in_process = InProcessEnsemble(student_repository, "search")(search_request(queries, 10))
    with FusionRankClient(student_server.grpc_url, timeout_s=30) as client:
        served = client.search_batch(queries, k=10)
    for i, hits in enumerate(served):
        assert [h.product_id for h in hits] == offline[i]
        assert [p.decode() for p in in_process["PRODUCT_IDS"][i]] == offline[i]
        np.testing.assert_allclose([h.score for h in hits], scores[i], atol=1e-4)
    # The scores are the student's: the teacher's queries would score otherwise.
    assert not np.allclose(scores, teacher_scores, atol=1e-3)


def test_a_student_of_other_weights_is_refused(tiny_catalogue, model_dir, trained_run,
                                               trained_student, tmp_path):
    from fusionrank.app.build import BuildError, build_search_repository

    stranger = tmp_path / "stranger"
    shutil.copytree(trained_student, stranger)
    manifest = json.loads((stranger / "checkpoint.json").read_text())
    (stranger / "checkpoint.json").write_text(json.dumps({**manifest,
                                                          "teacher_weights": "0" * 16}))
    with pytest.raises(BuildError, match="distilled from other weights"):
        build_search_repository(tiny_catalogue, model_dir, tmp_path / "build", run_dir=
                                trained_run.run, student_dir=stranger)
