"""FAISS ANN retrieval (core/search/ann.py, export/search/ann.py) against exact search on a
small generated catalogue with cluster structure, as real embeddings have; the index's checksum,
its parameters' checks and the Retrieve step that serves it."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace

import numpy as np
import pytest

from fusionrank.core import artefacts
from fusionrank.core.search.ann import SHORTLIST, AnnIndex, AnnRecord, IndexVectors, record_path
from fusionrank.core.search.runtime import dense_candidates
from fusionrank.export.search import retrieval
from fusionrank.export.search.ann import (
    MAX_STALE,
    AnnParams,
    build_ann_index,
    carried_entries,
    update_ann_index,
)
from fusionrank.model_repository.search.ensemble import (
    SearchArtefacts,
    ServingOptions,
    retrieval_files,
)
from fusionrank.model_repository.search.steps import CANDIDATES, EMBEDDING, SIMILARITY, K, Retrieve

PRODUCTS, DIM, CLUSTERS, QUERIES, TOP = 20_000, 32, 200, 40, 100


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def catalogue() -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings around CLUSTERS centres, and queries near some of the products."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CLUSTERS, DIM))
    embeddings = unit(centres[rng.integers(CLUSTERS, size=PRODUCTS)]
                      + 0.4 * rng.standard_normal((PRODUCTS, DIM)))
    queries = unit(embeddings[rng.integers(PRODUCTS, size=QUERIES)]
                   + 0.3 * rng.standard_normal((QUERIES, DIM)))
    return embeddings, queries


def built(embeddings: np.ndarray, folder, params: AnnParams) -> AnnIndex:
    np.save(folder / artefacts.EMBEDDINGS, embeddings)
    build_ann_index(embeddings, folder / artefacts.ANN_INDEX, params, progress=False)
    return AnnIndex.load(folder)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact,
                                                                        strict=True)]))


@pytest.mark.parametrize("params", [AnnParams("ivf_sq8", nlist=128, nprobe=32),
                                    AnnParams("ivf_pq", nlist=128, nprobe=32, pq_m=16,
                                              pq_bits=8, train_size=5_000),
                                    AnnParams("hnsw", hnsw_m=16, ef_search=256),
                                    AnnParams("hnsw_sq8", hnsw_m=16, ef_search=256),
                                    AnnParams("hnsw_fp16", hnsw_m=16, ef_search=256)],
                         ids=lambda params: params.index_type)
def test_recall_at_100_against_exact(catalogue, tmp_path, params):
    embeddings, queries = catalogue
    exact_rows, _ = dense_candidates(embeddings, queries, TOP)
    rows, _ = built(embeddings, tmp_path, params).search(queries, TOP)
    assert recall(rows, exact_rows) >= 0.95


def test_similarity_is_the_exact_cosine_best_first(catalogue, tmp_path):
    embeddings, queries = catalogue
    embeddings = embeddings.copy()
    embeddings[1] = embeddings[7]  # a tie: the lower row must come first
    queries = np.vstack([queries, embeddings[7]])
    rows, similarity = built(embeddings, tmp_path, AnnParams("ivf_flat", nlist=64,
                                                             nprobe=8)).search(queries, TOP)
    assert rows.dtype == np.int64 and similarity.dtype == np.float32
    assert rows.shape == similarity.shape == (len(queries), TOP)
    cosine = np.einsum("qkd,qd->qk", embeddings[rows].astype(np.float64), queries)
    np.testing.assert_allclose(similarity, cosine, atol=1e-5)
    assert np.all(np.diff(similarity, axis=1) <= 0)
    assert list(rows[-1, :2]) == [1, 7]
    assert all(len(set(row)) == TOP for row in rows)


def test_loaded_index_keeps_its_search_settings(catalogue, tmp_path):
    """nprobe is not in FAISS's file: the record carries it. Visiting every list is exact."""
    embeddings, queries = catalogue
    index = built(embeddings, tmp_path, AnnParams("ivf_flat", nlist=32, nprobe=32))
    exact_rows, exact_similarity = dense_candidates(embeddings, queries, TOP)
    rows, similarity = index.search(queries, TOP)
    np.testing.assert_array_equal(rows, exact_rows)
    np.testing.assert_allclose(similarity, exact_similarity, atol=1e-6)


def test_too_few_found_falls_back_to_exact(catalogue, tmp_path):
    """One list of ~30 products visited, SHORTLIST · 100 asked: FAISS pads with -1."""
    embeddings, queries = catalogue
    embeddings = embeddings[:2_000]
    index = built(embeddings, tmp_path, AnnParams("ivf_flat", nlist=64, nprobe=1))
    rows, similarity = index.search(queries, TOP)
    exact_rows, exact_similarity = dense_candidates(embeddings, queries, TOP)
    np.testing.assert_array_equal(rows, exact_rows)
    np.testing.assert_allclose(similarity, exact_similarity, atol=1e-6)
    assert index.fallbacks == len(queries)


def test_damaged_index_is_refused_naming_the_file(catalogue, tmp_path):
    embeddings, _ = catalogue
    built(embeddings[:5_000], tmp_path, AnnParams("ivf_sq8", nlist=32, nprobe=4))
    path = tmp_path / artefacts.ANN_INDEX
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(artefacts.ArtefactError, match=re.escape(str(path))):
        AnnIndex.load(tmp_path)


def test_an_expected_digest_passed_in_is_checked(catalogue, tmp_path):
    embeddings, _ = catalogue
    built(embeddings[:5_000], tmp_path, AnnParams("ivf_sq8", nlist=32, nprobe=4))
    path = tmp_path / artefacts.ANN_INDEX
    with pytest.raises(artefacts.ArtefactError, match=re.escape(str(path))):
        AnnIndex(path, embeddings[:5_000], sha256="0" * 64)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(path, moved / "other.faiss")
    # No record beside it:
    with pytest.raises(artefacts.ArtefactError, match=re.escape("other.json")):
        AnnIndex(moved / "other.faiss", embeddings[:5_000])


@pytest.mark.parametrize(("params", "named"), [
    (AnnParams("ivf_pq", nlist=16, nprobe=4, pq_m=5), "pq_m"),
    (AnnParams("ivf_flat", nlist=4_000, train_size=1_000), "nlist"),
    (AnnParams("ivf_flat", nlist=16, nprobe=32), "nprobe"),
    (AnnParams("ivf_pq", nlist=16, nprobe=4, pq_m=8, pq_bits=12, train_size=1_000),
     "pq_bits"),
    (AnnParams("lsh"), "index_type"),
    (AnnParams("hnsw", hnsw_m=0), "hnsw_m"),
])
def test_bad_parameters_are_refused_naming_them(catalogue, tmp_path, params, named):
    embeddings, _ = catalogue
    with pytest.raises(ValueError, match=named):
        build_ann_index(embeddings[:2_000], tmp_path / artefacts.ANN_INDEX, params,
                        progress=False)
    assert not (tmp_path / artefacts.ANN_INDEX).exists()


def test_shortlist_factor_is_the_int8_graphs():
    assert SHORTLIST == retrieval.SHORTLIST


def test_record_beside_the_index():
    assert record_path(artefacts.ANN_INDEX).name == artefacts.ANN_RECORD


def test_retrieve_step_serves_the_ann_index(catalogue, tmp_path):
    """A version folder holding ANN_INDEX: the Retrieve step answers the index's candidates."""
    embeddings, queries = catalogue
    index = built(embeddings, tmp_path, AnnParams("ivf_flat", nlist=32, nprobe=32))
    step = Retrieve(tmp_path, {"threads": "1", "candidates": str(TOP)})
    requests = [{EMBEDDING.name: queries[:3], K.name: np.array([[10]] * 3, dtype=np.int32)},
                {EMBEDDING.name: queries[3:4], K.name: np.array([[10]], dtype=np.int32)}]
    answers = step(requests)
    rows, similarity = index.search(queries[:4], TOP)
    np.testing.assert_array_equal(np.vstack([a[CANDIDATES.name] for a in answers]), rows)
    np.testing.assert_array_equal(np.vstack([a[SIMILARITY.name] for a in answers]), similarity)


def test_the_ensemble_places_the_ann_index_where_the_build_made_one(tmp_path):
    files = SearchArtefacts(encoder=tmp_path, index=tmp_path)
    options = ServingOptions()
    assert retrieval_files(files, options) == options.retrieval_files
    (tmp_path / artefacts.ANN_INDEX).write_bytes(b"")
    assert retrieval_files(files, options) == (artefacts.ANN_INDEX, artefacts.ANN_RECORD,
                                               artefacts.EMBEDDINGS)
    (tmp_path / artefacts.ANN_ROWS).write_bytes(b"")  # an updated index: entries are not rows
    assert retrieval_files(files, options) == (artefacts.ANN_INDEX, artefacts.ANN_RECORD,
                                               artefacts.ANN_ROWS, artefacts.EMBEDDINGS)


def test_embeddings_of_another_catalogue_are_refused(catalogue, tmp_path):
    embeddings, _ = catalogue
    built(embeddings[:5_000], tmp_path, AnnParams("ivf_sq8", nlist=32, nprobe=4))
    with pytest.raises(artefacts.ArtefactError, match="indexes 5000 vectors"):
        AnnIndex(tmp_path / artefacts.ANN_INDEX, embeddings[:4_000])


def changed_catalogue(embeddings: np.ndarray, seed: int = 1) -> tuple[np.ndarray, dict]:
    """The catalogue a day later: 2 % of the products get a new vector, 1 % leave, 1 % arrive,
    and the rows are shuffled; with the counts an update must find."""
    rng = np.random.default_rng(seed)
    products = len(embeddings)
    changed, gone = np.split(rng.permutation(products)[:products * 3 // 100],
                             [products * 2 // 100])
    after = embeddings.copy()
    after[changed] = unit(after[changed] + 0.5 * rng.standard_normal((len(changed), DIM)))
    arrivals = unit(embeddings[rng.integers(products, size=products // 100)]
                    + 0.4 * rng.standard_normal((products // 100, DIM)))
    after = np.vstack([np.delete(after, gone, axis=0), arrivals])[rng.permutation(
        products - len(gone) + len(arrivals))]
    return after, {"carried": products - len(changed) - len(gone),
                   "added": len(changed) + len(arrivals), "stale": len(changed) + len(gone)}


def test_an_update_adds_only_new_vectors_and_never_answers_a_stale_entry(catalogue, tmp_path):
    embeddings, queries = catalogue
    before, after_dir = tmp_path / "before", tmp_path / "after"
    before.mkdir(), after_dir.mkdir()
    built(embeddings, before, AnnParams("hnsw_sq8", hnsw_m=16, ef_search=256))
    after, expected = changed_catalogue(embeddings)
    np.save(after_dir / artefacts.EMBEDDINGS, after)
    report = update_ann_index(before, after, after_dir / artefacts.ANN_INDEX,
                              AnnParams("hnsw_sq8", hnsw_m=16, ef_search=256), progress=False)
    assert (report.carried, report.added, report.stale) == (
        expected["carried"], expected["added"], expected["stale"])
    assert report.entries == len(embeddings) + expected["added"]
    index = AnnIndex.load(after_dir)
    assert index.products == len(after) and index.live_entries == len(after)
    # Every live entry holds its row's vector: its SQ8 code decoded is that vector, up to
    # the 8-bit steps (and a clipped component where a new vector leaves the trained range).
    live = np.flatnonzero(index.entry_rows >= 0)
    decoded = unit(index.index.reconstruct_batch(live))
    assert np.einsum("nd,nd->n", decoded, after[index.entry_rows[live]]).min() > 0.98
    assert sorted(index.entry_rows[live]) == list(range(len(after)))
    rows, _ = index.search(queries, TOP)
    exact_rows, _ = dense_candidates(after, queries, TOP)
    assert recall(rows, exact_rows) >= 0.95
    assert all(len(set(r)) == TOP for r in rows)


def test_an_update_of_an_updated_index_keeps_counting(catalogue, tmp_path):
    embeddings, _ = catalogue
    folders = [tmp_path / name for name in ("one", "two", "three")]
    for folder in folders:
        folder.mkdir()
    params = AnnParams("hnsw_sq8", hnsw_m=16, ef_search=256)
    built(embeddings, folders[0], params)
    second, first_change = changed_catalogue(embeddings, seed=1)
    update_ann_index(folders[0], second, folders[1] / artefacts.ANN_INDEX, params,
                     progress=False)
    third = second.copy()
    third[:100] = unit(third[:100] + 0.5)  # 100 more products change
    report = update_ann_index(folders[1], third, folders[2] / artefacts.ANN_INDEX, params,
                              progress=False)
    assert report.added == 100 and report.stale == first_change["stale"] + 100
    assert report.carried == len(third) - 100


def test_too_many_stale_entries_mean_a_whole_build(catalogue, tmp_path):
    embeddings, _ = catalogue
    params = AnnParams("hnsw_sq8", hnsw_m=16, ef_search=256)
    built(embeddings, tmp_path, params)
    changed = embeddings.copy()
    share = MAX_STALE + 0.02
    changed[:int(share * len(embeddings))] *= -1
    assert update_ann_index(tmp_path, changed, tmp_path / "new.faiss", params,
                            progress=False) is None
    # Another kind of index, a graph built at another efConstruction (the record would name
    # a graph it is not), or one without its keys, is not updated either.
    assert update_ann_index(tmp_path, embeddings, tmp_path / "new.faiss",
                            AnnParams("hnsw", hnsw_m=16), progress=False) is None
    assert AnnRecord.load(tmp_path / artefacts.ANN_RECORD).ef_construction == \
        params.ef_construction
    assert update_ann_index(tmp_path, embeddings, tmp_path / "new.faiss",
                            replace(params, ef_construction=params.ef_construction + 1),
                            progress=False) is None
    assert update_ann_index(tmp_path, embeddings, tmp_path / "same.faiss", params,
                            progress=False) is not None
    (tmp_path / artefacts.ANN_KEYS).unlink()
    assert update_ann_index(tmp_path, embeddings, tmp_path / "new.faiss", params,
                            progress=False) is None


def test_duplicate_vectors_pair_with_entries_one_to_one():
    # Entries 0..4 hold keys 7, 7, 9, 3, 7 (entry 3 already stale); the new rows 9, 7, 7, 7, 5.
    kept, fresh = carried_entries(np.array([7, 7, 9, 3, 7], dtype=np.uint64),
                                  np.array([True, True, True, False, True]),
                                  np.array([9, 7, 7, 7, 5], dtype=np.uint64))
    assert kept.tolist() == [1, 2, 0, -1, 3]
    assert fresh.tolist() == [4]


def updated(embeddings: np.ndarray, folder, params: AnnParams):
    """An index of `embeddings` in folder/before, updated to `changed_catalogue` in
    folder/after: (that folder, the changed embeddings)."""
    before, after_dir = folder / "before", folder / "after"
    before.mkdir(), after_dir.mkdir()
    built(embeddings, before, params)
    after, _ = changed_catalogue(embeddings)
    np.save(after_dir / artefacts.EMBEDDINGS, after)
    update_ann_index(before, after, after_dir / artefacts.ANN_INDEX, params, progress=False)
    return after_dir, after


def test_a_damaged_entry_map_is_refused_naming_the_file(catalogue, tmp_path):
    embeddings, _ = catalogue
    after_dir, _ = updated(embeddings, tmp_path, AnnParams("hnsw_sq8", hnsw_m=16, ef_search=64))
    rows = np.load(after_dir / artefacts.ANN_ROWS)
    rows[[0, 1]] = rows[[1, 0]]
    np.save(after_dir / artefacts.ANN_ROWS, rows)
    with pytest.raises(artefacts.ArtefactError, match=re.escape(artefacts.ANN_ROWS)):
        AnnIndex.load(after_dir)


class Unread:
    """Float32 embeddings that fail the test if a row of them is read: an index that keeps its
    vectors whole must answer from them alone."""

    def __init__(self, embeddings: np.ndarray):
        self.shape, self.dtype = embeddings.shape, embeddings.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows):
        raise AssertionError(f"the float32 embeddings were read (rows {rows})")


def assert_float16_of(decoded: np.ndarray, vectors: np.ndarray) -> None:
    """`decoded` holds `vectors` to float16 precision (FAISS rounds some to the next float16:
    within one step, 2^-10 of the value)."""
    assert decoded.dtype == np.float32 and decoded.shape == vectors.shape
    np.testing.assert_allclose(decoded, vectors, rtol=2.0 ** -10, atol=2.0 ** -24)
    assert not np.array_equal(decoded, vectors)  # rounded: not the float32 rows themselves


def test_a_float16_index_serves_as_the_product_vectors(catalogue, tmp_path):
    embeddings, queries = catalogue
    built(embeddings, tmp_path, AnnParams("hnsw_fp16", hnsw_m=16, ef_search=256))
    index = AnnIndex(tmp_path / artefacts.ANN_INDEX, Unread(embeddings))
    assert index.record.stores_vectors and isinstance(index.vectors, IndexVectors)
    rows = np.array([[5, 0, 19_999], [7, 7, 3]])
    assert_float16_of(index.vectors[rows], embeddings[rows])
    assert_float16_of(index.vectors[3:9:2], embeddings[3:9:2])
    assert index.vectors[np.zeros(0, dtype=np.int64)].shape == (0, DIM)
    found, similarity = index.search(queries, TOP)
    # Each found product's cosine, to float16 precision, best first.
    cosine = np.einsum("qkd,qd->qk", embeddings[found], queries)
    np.testing.assert_allclose(similarity, cosine, atol=2e-3)
    assert (np.diff(similarity, axis=1) <= 0).all()
    # FAISS's own inner products answer (nothing rescores them): the cosines of the very
    # vectors the ranker's features read.
    np.testing.assert_allclose(
        similarity, np.einsum("qkd,qd->qk", index.vectors[found], queries), atol=1e-6)
    # ... and the exact fallback too (a query the index finds too few products for).
    rows, similarity = index.exact(queries[0], 10)
    exact_rows, exact_similarity = dense_candidates(embeddings, queries[:1], 10)
    assert len(set(rows) & set(exact_rows[0])) >= 9
    np.testing.assert_allclose(similarity, exact_similarity[0], atol=2e-3)


def test_an_updated_float16_index_gives_each_row_its_own_vector(catalogue, tmp_path):
    """After an update entries are not rows (stale ones stay): the vectors are still found by
    row."""
    embeddings, queries = catalogue
    after_dir, after = updated(embeddings, tmp_path,
                               AnnParams("hnsw_fp16", hnsw_m=16, ef_search=256))
    index = AnnIndex(after_dir / artefacts.ANN_INDEX, Unread(after))
    assert index.entry_rows is not None and index.live_entries < index.index.ntotal
    assert_float16_of(index.vectors[np.arange(len(after))], after)
    rows, _ = index.search(queries, TOP)
    exact_rows, _ = dense_candidates(after, queries, TOP)
    assert recall(rows, exact_rows) >= 0.95


def test_one_mapping_of_an_index_a_process(catalogue, tmp_path):
    """The Retrieve step and the ranker's product vectors load the same file: one mapping, so
    its pages count once in the process; a file replaced at the same path is read anew."""
    embeddings, _ = catalogue
    first = built(embeddings, tmp_path, AnnParams("hnsw_fp16", hnsw_m=16, ef_search=64))
    assert AnnIndex.load(tmp_path).index is first.index
    built(embeddings[:10_000], tmp_path, AnnParams("hnsw_fp16", hnsw_m=16, ef_search=64))
    again = AnnIndex.load(tmp_path)
    assert again.index is not first.index and again.index.ntotal == 10_000
