"""Shared fixtures, each built once per test session and used across modules.

    tiny_catalogue     products queries name unambiguously + a few hundred fillers
    search_repository  the pretrained encoder over tiny_catalogue: a search-only repository
    search_run         a tiny `fusionrank train` run on 60 real Home Depot queries (two
                       fine-tuning steps); None where the shared datasets are absent
    search_student     a 3-layer student of search_run's encoder (`fusionrank distil`, three
                       steps): its checkpoint folder (trained_student skips without the data)
    search_reranker    a 1-layer cross-encoder of search_run's fused top N (`fusionrank
                       train-reranker`, four steps) with weights fitted on dev for depths 3
                       and 5 (`rerank_report`): its checkpoint folder (trained_reranker skips)
    recommender        the tiny synthetic shop's analytic recommender (tests/support/shop.py)
    sentiment_export   a tiny BERT review classifier, trained for a few steps and exported
    served_repository  ONE model repository with all three ensembles: search (the tiny run,
                       fused, over tiny_catalogue), recommend and sentiment
    triton_server      a real tritonserver on free loopback ports, serving served_repository
                       with a 16 MiB response cache

`-m "not slow"` is the fast subset: it leaves out what trains a model or starts a server.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from fusionrank.core.catalogue import Catalogue, Product
from tests.support.catalogue import ANCHORS, filler_products, running_server

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


# Session fixtures that train a model, export the encoder or start a server: a test using any
# of them is slow (so is one marked `server`); the modules mark their own such fixtures.
SLOW_FIXTURES = {"search_repository", "search_run", "trained_run", "sentiment_export",
                 "search_student", "trained_student", "search_reranker", "trained_reranker",
                 "tiny_model_dir", "served_repository", "triton_server", "next_build",
                 "exported"}  # (test_export.py's encoder export)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("server") or SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


def needs_pytorch() -> None:
    """A fixture that trains or exports a model needs PyTorch (the training and export layers):
    where it is absent, as on a serving-only install, the tests using that fixture skip and the
    rest of tests/unit still runs."""
    pytest.importorskip("torch")


@pytest.fixture(scope="session")
def tiny_catalogue() -> Catalogue:
    return Catalogue([*ANCHORS.values(), *filler_products()], source="tests/tiny")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    from fusionrank.core.model_folders import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def search_repository(tiny_catalogue, model_dir, tmp_path_factory) -> Path:
    needs_pytorch()
    from fusionrank.app.build import build_search_repository
    from fusionrank.model_repository.search.ensemble import ServingOptions

    out = tmp_path_factory.mktemp("pretrained_build")
    return build_search_repository(tiny_catalogue, model_dir, out,
                                   ServingOptions(onnx_threads=1, max_queue_delay_us=100))


@dataclass(frozen=True)
class SearchRun:
    run: Path  # the `fusionrank train` run folder
    data: Path  # its judgements file (every judgement of 60 real queries)
    cache: Path  # its embedding cache
    queries: list[str]


@pytest.fixture(scope="session")
def search_run(tmp_path_factory) -> SearchRun | None:
    needs_pytorch()
    from fusionrank.app.search import train_main
    from tests.support.relevance import HOMEDEPOT, sample_judgements

    if not HOMEDEPOT.is_file():
        return None
    import pandas as pd

    folder = tmp_path_factory.mktemp("search_run")
    data = sample_judgements(folder / "tiny.csv", queries=60)
    run, cache = folder / "run", folder / "cache"
    assert train_main(["--data", str(data), "--out", str(run), "--cache", str(cache),
                       "--max-steps", "2", "--batch-size", "8", "--dev-queries", "8",
                       "--threads", "1"]) == 0
    return SearchRun(run, data, cache, sorted({q.strip() for q in pd.read_csv(data).search_term}))


@pytest.fixture
def trained_run(search_run) -> SearchRun:
    if search_run is None:
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS}")
    return search_run


@pytest.fixture(scope="session")
def search_student(search_run, tmp_path_factory) -> Path | None:
    from fusionrank.app.search import distil_main

    if search_run is None:
        return None
    out = tmp_path_factory.mktemp("search_student")
    assert distil_main(["--run", str(search_run.run), "--out", str(out), "--cache",
                        str(search_run.cache), "--max-steps", "3", "--batch-size", "8",
                        "--threads", "1"]) == 0
    return out / "best"


@pytest.fixture
def trained_student(search_student) -> Path:
    if search_student is None:
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS}")
    return search_student


RERANKER_DEPTHS = (3, 5)  # what search_reranker's weights are fitted for


@pytest.fixture(scope="session")
def search_reranker(search_run, tmp_path_factory) -> Path | None:
    from fusionrank.app.search import train_reranker_main
    from fusionrank.training.search.rerank_evaluation import rerank_report
    from fusionrank.training.search.served_rankings import ServedRanker

    if search_run is None:
        return None
    out = tmp_path_factory.mktemp("search_reranker")
    assert train_reranker_main(["--run", str(search_run.run), "--out", str(out), "--cache",
                                str(search_run.cache), "--layers", "1", "--max-steps", "4",
                                "--eval-every", "2", "--dev-queries", "8", "--dev-depth", "5",
                                "--queries-per-step", "2", "--list-size", "4",
                                "--threads", "1"]) == 0
    rerank_report(ServedRanker.load(search_run.run, search_run.cache, threads=1), [out],
                  out / "evaluation", RERANKER_DEPTHS, threads=1)
    return out


@pytest.fixture
def trained_reranker(search_reranker) -> Path:
    if search_reranker is None:
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS}")
    return search_reranker


@pytest.fixture(scope="session")
def recommender(tmp_path_factory) -> Path:
    needs_pytorch()  # no training, but the evaluation code it borrows imports torch
    from tests.support import shop

    return shop.analytic_artefacts(tmp_path_factory.mktemp("recommender"))


@pytest.fixture(scope="session")
def reviews_file(tmp_path_factory) -> Path:
    from tests.support.reviews import write_reviews

    return write_reviews(tmp_path_factory.mktemp("reviews") / "reviews.csv")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    needs_pytorch()
    from tests.support.reviews import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def sentiment_export(reviews_file, tiny_model_dir, tmp_path_factory):
    """(training output folder, SentimentRecord): the classifier is in `<out>/onnx`."""
    from tests.support.reviews import train_and_export

    return train_and_export(reviews_file, tiny_model_dir, tmp_path_factory.mktemp("sentiment"))


@pytest.fixture(scope="session")
def served_repository(tiny_catalogue, model_dir, search_run, recommender, sentiment_export,
                      tmp_path_factory) -> Path:
    from tests.support.served import build_served_repository

    run = search_run.run if search_run is not None else None
    return build_served_repository(tiny_catalogue, model_dir, tmp_path_factory.mktemp(
        "served_build"), run, recommender, sentiment_export[0])


@pytest.fixture(scope="session")
def next_build(tiny_catalogue, model_dir, search_run, recommender, sentiment_export,
               tmp_path_factory) -> Path:
    """The build after served_repository's (a rollout's source): anchors re-priced, products
    added and removed, the query encoder in FP32 instead of INT8 (so both search models change,
    and a request that mixed them would answer unlike either build); recommend and sentiment
    as they were."""
    from tests.support.served import build_served_repository

    anchors = {p.product_id for p in ANCHORS.values()}
    kept = [replace(p, price=p.price + 1.0) if p.product_id in anchors else p
            for p in tiny_catalogue if p.product_id in anchors or int(p.product_id[1:]) % 10]
    added = [Product("N-DRILL", "Compact cordless drill driver 12V", category="tools", price=59.0),
             Product("N-VASE", "Tall blue glass flower vase", category="gift-ware", price=24.0)]
    catalogue = Catalogue(kept + added, source="tests/tiny-next")
    run = search_run.run if search_run is not None else None
    return build_served_repository(catalogue, model_dir, tmp_path_factory.mktemp("next_build"),
                                   run, recommender, sentiment_export[0], precision="fp32")


@pytest.fixture(scope="session")
def triton_server(served_repository, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    with running_server(served_repository, log_path, cache_mib=16) as server:
        yield server


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS
