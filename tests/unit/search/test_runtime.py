"""The search runtime (fusionrank.core.search.runtime) and the server's `scoring` step over it:
candidate pools, signals and feedback on a small synthetic catalogue with a real exported head."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrank.core import artefacts as names
from fusionrank.core.catalogue import Catalogue, Product, load_catalogue
from fusionrank.core.fusion import Cascade, FusionWeights
from fusionrank.core.search.features import FEATURES
from fusionrank.core.search.judgements import JudgementMemory, ProductPriors
from fusionrank.core.search.lexical import LexicalIndex, top_k
from fusionrank.core.search.runtime import CandidatePool, SearchRuntime, dense_candidates, ranked
from fusionrank.core.search.title_features import save_title_features
from fusionrank.core.search.title_terms import TitleTerms
from fusionrank.model_repository.search.steps import ScoreCandidates

DIM, DENSE, EXTRA = 16, 8, 12
WORDS = ["drill", "saw", "hammer", "cordless", "blue", "red", "steel", "pipe", "valve", "hose",
         "garden", "18v", "kit", "bit", "set"]
QUERIES = ["cordless drill", "red garden hose", "steel pipe valve"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A version folder of the `scoring` step: catalogue index and a run's search files."""
    rng = np.random.default_rng(0)
    titles = [" ".join(rng.choice(WORDS, size=4, replace=False)) + f" model {i}"
              for i in range(120)]
    folder = tmp_path_factory.mktemp("scoring")
    Catalogue([Product(str(i), t) for i, t in enumerate(titles)]).write_jsonl(
        folder / names.PRODUCTS)
    embeddings = rng.normal(size=(len(titles), DIM)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    np.save(folder / names.EMBEDDINGS, embeddings)
    LexicalIndex.build(titles).save(folder / names.LEXICAL)
    ProductPriors.fit(len(titles), rng.integers(0, 60, size=200),
                      rng.uniform(1, 3, size=200)).save(folder / names.PRIORS)
    training_queries = rng.normal(size=(10, DIM)).astype(np.float32)
    training_queries /= np.linalg.norm(training_queries, axis=1, keepdims=True)
    JudgementMemory.fit([f"query {i}" for i in range(10)], training_queries,
                        [rng.integers(0, len(titles), size=5) for _ in range(10)],
                        [rng.uniform(1, 3, size=5) for _ in range(10)], embeddings
                        ).save(folder / names.MEMORY)
    export_small_head(folder, embeddings, rng)
    FusionWeights({"similarity": 0.5, "feedback": 0.3, "lexical": 0.2}).save(
        folder / names.FUSION_WEIGHTS)
    return folder


def export_small_head(folder, embeddings: np.ndarray, rng: np.random.Generator) -> None:
    """A real feedback head (an untrained network and a few boosted trees), exported to ONNX.
    Building one takes the training and export layers, hence PyTorch: without it the tests
    that need a runtime skip, and the rest of this module still runs."""
    torch = pytest.importorskip("torch")
    from sklearn.ensemble import HistGradientBoostingRegressor

    from fusionrank.export.search.feedback_head import export_feedback_head
    from fusionrank.training.search.feedback import AveragedHeads, FeedbackModel, FeedbackNetwork

    torch.manual_seed(0)
    trees = HistGradientBoostingRegressor(max_iter=5, max_leaf_nodes=4, min_samples_leaf=2)
    trees.fit(rng.normal(size=(40, len(FEATURES))), rng.uniform(1, 3, size=40))
    head = FeedbackModel(AveragedHeads([FeedbackNetwork(DIM)]), trees, tree_share=0.4)
    check = (embeddings[:8], embeddings[8:16], rng.normal(size=(8, len(FEATURES))))
    assert export_feedback_head(head, folder / names.FEEDBACK_HEAD, check) < 1e-4


@pytest.fixture(scope="module")
def runtime(folder) -> SearchRuntime:
    return SearchRuntime.load(folder, threads=1, extra=EXTRA)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    vectors = np.random.default_rng(1).normal(size=(len(QUERIES), DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_pool_is_the_dense_candidates_then_the_best_new_bm25_products(runtime, vectors):
    embeddings = runtime.sources.embeddings
    rows, similarity = dense_candidates(embeddings, vectors, DENSE)
    pool = runtime.candidates(QUERIES, vectors, rows, similarity)
    assert pool.rows.shape == (3, DENSE + EXTRA) and pool.rows.dtype == np.int64
    for i, vector in enumerate(vectors):
        cosine = embeddings @ vector
        np.testing.assert_array_equal(pool.rows[i, :DENSE], np.argsort(-cosine)[:DENSE])
        np.testing.assert_allclose(pool.similarity[i], cosine[pool.rows[i]], atol=1e-6)
        bm25 = runtime.lexical.scores(pool.terms[i])
        added = pool.rows[i, DENSE:]
        assert not set(added) & set(pool.rows[i, :DENSE])
        assert (np.diff(bm25[added]) <= 0).all()  # best BM25 first
        outside = np.setdiff1d(np.arange(len(bm25)), pool.rows[i])
        assert bm25[outside].max() <= bm25[added].min()  # no better product left out
        np.testing.assert_allclose(pool.lexical[i], bm25[pool.rows[i]] / bm25.max(), atol=1e-6)
    assert all({"cordless", "drill"} & runtime.sources.titles.terms[r]
               for r in pool.rows[0, DENSE:DENSE + 3])


def test_a_query_is_corrected_once_and_bm25_and_features_see_the_same_terms(runtime, vectors):
    rows, similarity = dense_candidates(runtime.sources.embeddings, vectors[:1], DENSE)
    right = runtime.candidates(["cordless drill"], vectors[:1], rows, similarity)
    wrong = runtime.candidates(["cordlss driil"], vectors[:1], rows, similarity)
    assert wrong.terms == right.terms == [["cordless", "drill"]]
    np.testing.assert_array_equal(wrong.rows, right.rows)
    np.testing.assert_array_equal(wrong.lexical, right.lexical)
    features = [runtime.sources.head_inputs(p.queries, p.terms, vectors[:1], p.rows,
                                            p.lexical).features for p in (right, wrong)]
    overlap = FEATURES.index("overlap")
    np.testing.assert_array_equal(features[0][:, overlap], features[1][:, overlap])


def test_scoring_step_batches_requests_without_changing_any_signal(folder, runtime, vectors):
    rows, similarity = dense_candidates(runtime.sources.embeddings, vectors, DENSE)
    text = np.array([q.encode() for q in QUERIES], dtype=object).reshape(-1, 1)
    requests = [{"QUERY": text[part], "EMBEDDING": vectors[part], "DENSE_CANDIDATES": rows[part],
                 "DENSE_SIMILARITY": similarity[part]} for part in (slice(0, 2), slice(2, 3))]
    served = ScoreCandidates(folder, {"threads": "1", "lexical_candidates": str(EXTRA)})(requests)
    assert [r["CANDIDATES"].shape for r in served] == [(2, DENSE + EXTRA), (1, DENSE + EXTRA)]
    for i, query in enumerate(QUERIES):  # each query alone, through the runtime
        pool = runtime.candidates([query], vectors[i:i + 1], rows[i:i + 1], similarity[i:i + 1])
        feedback = runtime.feedback(pool, vectors[i:i + 1])
        request, row = (0, i) if i < 2 else (1, 0)
        got = served[request]
        np.testing.assert_array_equal(got["CANDIDATES"][row], pool.rows[0])
        np.testing.assert_allclose(got["SIMILARITY"][row], pool.similarity[0], atol=1e-6)
        np.testing.assert_allclose(got["LEXICAL"][row], pool.lexical[0], atol=1e-6)
        np.testing.assert_allclose(got["FEEDBACK"][row], feedback[0], atol=1e-5)
        assert ((got["FEEDBACK"][row] >= 1) & (got["FEEDBACK"][row] <= 3)).all()


def test_search_ranks_the_pool_by_the_fitted_weights(runtime, vectors):
    rows, scores = runtime.search(QUERIES, vectors, k=10, dense=DENSE)
    pool = runtime.candidates(QUERIES, vectors,
                              *dense_candidates(runtime.sources.embeddings, vectors, DENSE))
    feedback = runtime.feedback(pool, vectors)
    fused = 0.5 * pool.similarity + 0.3 * feedback + 0.2 * pool.lexical
    for i in range(len(QUERIES)):
        order = np.argsort(-fused[i], kind="stable")[:10]
        np.testing.assert_array_equal(rows[i], pool.rows[i][order])
        np.testing.assert_allclose(scores[i], fused[i][order], atol=1e-5)


def test_a_cascade_scores_its_head_alone_and_ranks_as_over_the_whole_pool(runtime, vectors):
    cascade = FusionWeights({"similarity": 0.5, "feedback": 0.3, "lexical": 0.2},
                            cascade=Cascade(5, {"similarity": 0.6, "lexical": 0.4}))
    pool = runtime.candidates(QUERIES, vectors,
                              *dense_candidates(runtime.sources.embeddings, vectors, DENSE))
    everyone = runtime.feedback(pool, vectors)
    head = cascade.head(pool.rows, pool.tensors())
    first = 0.6 * pool.similarity.astype(np.float64) + 0.4 * pool.lexical
    for i in range(len(QUERIES)):  # each query's 5 best first-stage scores
        assert set(head[i]) == set(np.argsort(-first[i])[:5])
    scored = runtime.feedback(pool, vectors, head)
    np.testing.assert_allclose(np.take_along_axis(scored, head, axis=1),
                               np.take_along_axis(everyone, head, axis=1), atol=1e-5)
    assert np.isnan(scored).sum(axis=1).tolist() == [DENSE + EXTRA - 5] * len(QUERIES)
    served = CandidatePool(pool.queries, pool.terms, pool.rows, pool.similarity, pool.lexical,
                           scored)
    pool.feedback = everyone
    np.testing.assert_array_equal(ranked(served, cascade, 10)[0], ranked(pool, cascade, 10)[0])


def test_the_scoring_step_of_a_cascade_computes_the_head_s_feedback_only(folder, tmp_path,
                                                                         runtime, vectors):
    for path in folder.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    FusionWeights({"similarity": 0.5, "feedback": 0.3, "lexical": 0.2},
                  cascade=Cascade(4, {"similarity": 0.6, "lexical": 0.4})).save(
        tmp_path / names.FUSION_WEIGHTS)
    rows, similarity = dense_candidates(runtime.sources.embeddings, vectors, DENSE)
    text = np.array([q.encode() for q in QUERIES], dtype=object).reshape(-1, 1)
    (answer,) = ScoreCandidates(tmp_path, {"threads": "1", "lexical_candidates": str(EXTRA)})(
        [{"QUERY": text, "EMBEDDING": vectors, "DENSE_CANDIDATES": rows,
          "DENSE_SIMILARITY": similarity}])
    pool = runtime.candidates(QUERIES, vectors, rows, similarity)
    everyone = runtime.feedback(pool, vectors)
    first = 0.6 * answer["SIMILARITY"].astype(np.float64) + 0.4 * answer["LEXICAL"]
    for i in range(len(QUERIES)):
        scored = np.flatnonzero(np.isfinite(answer["FEEDBACK"][i]))
        assert set(scored) == set(np.argsort(-first[i])[:4])
        np.testing.assert_allclose(answer["FEEDBACK"][i][scored], everyone[i][scored], atol=1e-5)


def test_disagreeing_files_are_refused(folder, tmp_path):
    for name in (*names.SEARCH_RUN_FILES, names.EMBEDDINGS, names.PRODUCTS):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    np.save(tmp_path / names.EMBEDDINGS, np.zeros((5, DIM), np.float32))
    with pytest.raises(ValueError, match=r"embeddings.npy holds an array of shape \[5, 16\]; "
                                         r"expected \[120, 'any'\]"):
        SearchRuntime.load(tmp_path)


def test_the_runtime_reads_saved_title_features_and_ranks_the_same(folder, runtime, vectors,
                                                                     tmp_path, monkeypatch):
    for name in (*names.SEARCH_RUN_FILES, names.EMBEDDINGS, names.PRODUCTS):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    titles = runtime.sources.titles
    save_title_features(tmp_path / names.TITLE_FEATURES, [t.title for t in load_catalogue(
        folder / names.PRODUCTS)[0]], runtime.sources.embeddings)
    monkeypatch.setattr(TitleTerms, "__init__", lambda *_: pytest.fail("TitleTerms computed"))
    loaded = SearchRuntime.load(tmp_path, threads=1, extra=EXTRA)
    assert loaded.sources.titles is not titles and loaded.sources.titles.index == titles.index
    for got, expected in zip(loaded.search(QUERIES, vectors, k=10, dense=DENSE),
                             runtime.search(QUERIES, vectors, k=10, dense=DENSE), strict=True):
        assert np.array_equal(got, expected)


def truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def drop_array(path, name: str) -> None:
    with np.load(path) as saved:
        kept = {key: saved[key] for key in saved.files if key != name}
    with path.open("wb") as handle:
        np.savez(handle, **kept)


@pytest.mark.parametrize(("file", "damage", "message"), [
    (names.EMBEDDINGS, truncate, "embeddings.npy is not a readable .npy array"),
    (names.PRIORS, truncate, "priors.npy is not a readable .npy array"),
    (names.PRIORS, lambda p: np.save(p, np.zeros((120, 3), np.float32)),
     r"priors.npy holds an array of shape \[120, 3\]; expected \[120, 2\]"),
    (names.PRIORS, lambda p: np.save(p, np.zeros((7, 2), np.float32)),
     r"priors.npy holds an array of shape \[7, 2\]"),
    (names.MEMORY, lambda p: drop_array(p, "grades"), "memory.npz lacks the array.s. grades"),
    (names.MEMORY, truncate, "memory.npz is not a readable .npz archive"),
    (names.LEXICAL, lambda p: drop_array(p, "vocab"), "lexical.npz lacks the array.s. vocab"),
    (names.LEXICAL, truncate, "lexical.npz is not a readable .npz archive"),
], ids=["embeddings-truncated", "priors-truncated", "priors-columns", "priors-rows",
        "memory-missing-array", "memory-truncated", "lexical-missing-array", "lexical-truncated"])
def test_a_malformed_artefact_stops_the_load_naming_the_file(folder, tmp_path, file, damage,
                                                              message):
    for name in (*names.SEARCH_RUN_FILES, names.EMBEDDINGS, names.PRODUCTS):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    SearchRuntime.load(tmp_path, threads=1)  # the intact copy loads
    damage(tmp_path / file)
    with pytest.raises(names.ArtefactError, match=message):
        SearchRuntime.load(tmp_path, threads=1)


def test_top_k_breaks_ties_by_row():
    rows, scores = top_k(np.array([0.5, 0.9, 0.5, 0.9, 0.1]), 3)
    assert rows.tolist() == [1, 3, 0] and scores.tolist() == [0.9, 0.9, 0.5]


@pytest.mark.parametrize(("size", "positive"), [(1000, 3), (1000, 40), (1000, 200),
                                              (1000, 900), (50_003, 150), (50_003, 30_000),
                                              (200_003, 400), (200_003, 20_000)])
def test_top_k_of_mostly_zero_scores_is_the_sorted_order(size, positive):
    # BM25-like: most rows 0, and ties (scores on a coarse grid) among the rest; the k best
    # are the first k of every row sorted by score, then row, whichever path top_k takes
    # (from 50,003 rows, not a whole number of groups, the group-maximum prefilter runs; the
    # tie at the k-th is found among a few groups' rows at 200,003 rows and 400 positive, by
    # a scan from row 0 where thousands of rows or the zeros tie).
    rng = np.random.default_rng(positive)
    scores = np.zeros(size, dtype=np.float32)
    scores[rng.choice(size, positive, replace=False)] = rng.integers(1, 6, positive) / 2
    for k in (1, 5, 50, 200):
        expected = np.lexsort((np.arange(size), -scores))[:k]
        rows, best = top_k(scores, k)
        np.testing.assert_array_equal(rows, expected)
        np.testing.assert_array_equal(best, scores[expected])


@pytest.mark.parametrize("tail", [0, 1, 63])
def test_top_k_of_dense_scores_with_ties_at_the_edge_is_the_sorted_order(tail):
    # Cosine-like: signed scores on a grid coarse enough that the k-th is tied with hundreds
    # of rows spread over many blocks, and the best rows sitting in the ragged last block.
    rng = np.random.default_rng(tail)
    size = 64 * 900 + tail
    scores = (rng.integers(-40, 41, size) / 40).astype(np.float32)
    scores[-tail or -1] = 2.0
    for k in (1, 7, 100):
        expected = np.lexsort((np.arange(size), -scores))[:k]
        rows, best = top_k(scores, k)
        np.testing.assert_array_equal(rows, expected)
        np.testing.assert_array_equal(best, scores[expected])


def test_a_corrected_query_is_shown_in_the_catalogue_s_own_words(runtime):
    assert runtime.corrected_text("cordlss driil") == "cordless drill"
    assert runtime.corrected_text("the cordlss drill") == "the cordless drill"  # stopword kept
    assert runtime.corrected_text("cordless drill") == ""  # nothing corrected
    # A corrected term is written as the titles most often write it.
    titles = TitleTerms(["Two garden hoses", "Garden hoses, blue", "A hose"])
    assert titles.surface["hose"] == "hoses" and titles.surface["garden"] == "garden"
