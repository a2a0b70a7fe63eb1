"""Shared fixtures: a small catalogue, its model repository, and a real Triton server on free
loopback ports (started once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusionrank.catalogue import Catalogue
from tests.fixtures import ANCHORS, filler_products, running_server

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

@pytest.fixture(scope="session")
def tiny_catalogue() -> Catalogue:
    return Catalogue([*ANCHORS.values(), *filler_products()], source="tests/tiny")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    from fusionrank.export.onnx_encoder import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def search_repository(tiny_catalogue, model_dir, tmp_path_factory) -> Path:
    from fusionrank.model_repository.build import ServingOptions, build_search_repository

    out = tmp_path_factory.mktemp("build")
    return build_search_repository(tiny_catalogue, model_dir, out,
                                   ServingOptions(onnx_threads=1, max_queue_delay_us=100))


@pytest.fixture(scope="session")
def triton_server(search_repository, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    with running_server(search_repository, log_path) as server:
        yield server


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS
