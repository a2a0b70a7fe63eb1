"""TITLE_FEATURES (fusionrank.core.search.title_features): the title structures saved at build
and loaded by the ranker give the very features computed from the titles, and a file of another
catalogue is refused."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrank.core import artefacts
from fusionrank.core.search.features import FeatureSources
from fusionrank.core.search.judgements import JudgementMemory, ProductPriors
from fusionrank.core.search.lexical import LexicalIndex, normalised, top_k
from fusionrank.core.search.runtime import SearchRuntime
from fusionrank.core.search.title_features import (
    load_title_features,
    save_title_features,
)
from fusionrank.core.search.title_terms import TitleTerms

DIM = 16
# Beside the tiny catalogue: titles with a head phrase cut inside a word, stopwords only,
# no terms at all, sizes and plurals (each a case the title structures treat apart).
ODD_TITLES = ["Makita Cordless Drill Kit with 2 Batteries", "DeWalt drill(driver) 20V, bare",
              "the of and", "", "1/2 in. x 10 ft. Copper Pipes", "Garden hoses - 50 ft (2-Pack)"]
QUERIES = ["cordless drill", "cordlss driil kit", "garden hose 50 ft", "1/2in copper pipe",
           "teapot", "zzzz unknown words"]


@pytest.fixture(scope="module")
def catalogue(tiny_catalogue) -> tuple[list[str], np.ndarray]:
    titles = [*tiny_catalogue.titles, *ODD_TITLES]
    embeddings = np.random.default_rng(0).normal(size=(len(titles), DIM)).astype(np.float32)
    return titles, embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def judged(catalogue) -> tuple[ProductPriors, JudgementMemory]:
    titles, embeddings = catalogue
    rng = np.random.default_rng(1)
    priors = ProductPriors.fit(len(titles), rng.integers(0, len(titles), size=300),
                               rng.uniform(1, 3, size=300))
    queries = rng.normal(size=(12, DIM)).astype(np.float32)
    memory = JudgementMemory.fit([f"query {i}" for i in range(12)],
                                 queries / np.linalg.norm(queries, axis=1, keepdims=True),
                                 [rng.integers(0, len(titles), size=6) for _ in range(12)],
                                 [rng.uniform(1, 3, size=6) for _ in range(12)], embeddings)
    return priors, memory


def test_saved_title_features_give_bit_identical_features(catalogue, judged, tmp_path,
                                                          monkeypatch):
    titles, embeddings = catalogue
    path = tmp_path / artefacts.TITLE_FEATURES
    save_title_features(path, titles, embeddings)
    fresh = FeatureSources.build(titles, embeddings, *judged)
    with monkeypatch.context() as patch:  # loaded, never computed
        patch.setattr(TitleTerms, "__init__", lambda *_: pytest.fail("TitleTerms computed"))
        loaded = FeatureSources.build(titles, embeddings, *judged, saved=path)

    lexical = LexicalIndex.build(titles)
    terms = [lexical.query_terms(q) for q in QUERIES]
    scores = [lexical.scores(t) for t in terms]
    rows = [np.concatenate([top_k(s, 20)[0], np.arange(i, len(titles), 7)])
            for i, s in enumerate(scores)]  # the best BM25 products and a spread of others
    vectors = np.random.default_rng(2).normal(size=(len(QUERIES), DIM)).astype(np.float32)
    lexical_signal = [normalised(s)[r] for s, r in zip(scores, rows, strict=True)]
    inputs = [sources.head_inputs(QUERIES, terms, vectors, rows, lexical_signal)
              for sources in (fresh, loaded)]
    assert inputs[0].features.shape == (sum(len(r) for r in rows), 35)
    assert np.count_nonzero(inputs[0].features[:, 2]) > 0  # some titles share query terms
    for name in ("query", "owner", "product", "features"):
        assert np.array_equal(getattr(inputs[0], name), getattr(inputs[1], name)), name

    assert loaded.titles.surface == fresh.titles.surface
    assert loaded.titles.terms == fresh.titles.terms and loaded.titles.heads == fresh.titles.heads
    assert loaded.titles.heads[len(titles) - 5] == ["dewalt", "drill"]  # cut at "("
    runtimes = [SearchRuntime(lexical, sources, head=None) for sources in (fresh, loaded)]
    corrected = [[r.corrected_text(q) for q in QUERIES] for r in runtimes]
    assert corrected[0] == corrected[1] and "cordless drill kit" in corrected[0]


def test_without_the_file_the_structures_are_computed(catalogue, judged, tmp_path):
    titles, embeddings = catalogue
    sources = FeatureSources.build(titles, embeddings, *judged,
                                   saved=tmp_path / artefacts.TITLE_FEATURES)  # absent
    assert sources.titles.products == len(titles)
    assert "drill" in sources.titles.terms[0] | sources.titles.terms[len(titles) - 6]


@pytest.mark.parametrize(("change", "message"), [
    (lambda t, e: ([*t[:3], t[3] + " blue", *t[4:]], e), r"\(titles_sha256 differ; it describes"),
    (lambda t, e: (t, e[::-1].copy()), r"\(embeddings_sha256 differ;"),
    (lambda t, e: (t[:-1], e[:-1]), r"\(products, titles_sha256, embeddings_sha256 differ; it "
                                    r"describes {n} products, the catalogue has {fewer}"),
], ids=["a-title-changed", "other-embeddings", "a-product-fewer"])
def test_a_file_of_another_catalogue_is_refused_naming_it(catalogue, tmp_path, change, message):
    titles, embeddings = catalogue
    path = tmp_path / artefacts.TITLE_FEATURES
    save_title_features(path, titles, embeddings)
    load_title_features(path, titles, embeddings)  # its own catalogue loads
    expected = (r"title_features.npz was computed from another catalogue than the one beside "
                r"it " + message.format(n=len(titles), fewer=len(titles) - 1))
    with pytest.raises(artefacts.ArtefactError, match=expected):
        load_title_features(path, *change(titles, embeddings))


def test_a_damaged_or_foreign_file_is_refused_naming_it(catalogue, tmp_path):
    titles, embeddings = catalogue
    path = tmp_path / artefacts.TITLE_FEATURES
    save_title_features(path, titles, embeddings)
    with np.load(path) as saved:
        arrays = {key: saved[key] for key in saved.files}
    for name, value, message in [
            ("titles.char_counts", None, r"title_features.npz lacks the array\(s\) "
                                         r"titles.char_counts"),
            ("format", np.array(1), r"title_features.npz was written by another version of "
                                    r"the feature code \(format 1, this one reads 2\)")]:
        with path.open("wb") as handle:
            np.savez(handle, **{k: v for k, v in arrays.items() if k != name},
                     **({} if value is None else {name: value}))
        with pytest.raises(artefacts.ArtefactError, match=message):
            load_title_features(path, titles, embeddings)
