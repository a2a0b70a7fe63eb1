"""Encoder export (and the one parity check every export runs), the catalogue index and the
search retrieval graph."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from fusionrank.core.artefacts import file_sha256
from fusionrank.core.catalogue import Catalogue, Product
from fusionrank.core.encoding import onnx_session
from fusionrank.core.model_folders import check_model_folder
from fusionrank.export.graphs import check_parity
from fusionrank.export.index import build_index, load_embeddings
from fusionrank.export.search.retrieval import int8_retrieval_graph, retrieval_graph
from fusionrank.training.encoder import export_model_folder


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    titles = real_titles() or [p.title for p in _fixture_products()]
    return export_model_folder(model_dir, tmp_path_factory.mktemp("encoder"), titles)


def _fixture_products():
    from tests.support.catalogue import ANCHORS, filler_products

    return [*ANCHORS.values(), *filler_products()]


def real_titles() -> list[str]:
    """200 real Home Depot titles where the shared datasets are present."""
    from tests.conftest import SHARED_DATASETS

    path = SHARED_DATASETS / "homedepot/relevance.csv.gz"
    if not path.is_file():
        return []
    import pandas as pd

    return pd.read_csv(path, nrows=2000).product_title.drop_duplicates().head(200).tolist()


def test_export_matches_pytorch_on_real_titles(exported):
    assert exported.min_cosine >= 0.9999
    assert exported.sha256 == file_sha256(exported.onnx_path)


def test_graph_has_dynamic_batch_and_sequence_axes(exported):
    graph = onnx.load(str(exported.onnx_path)).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in graph.input}
    assert dims == {"input_ids": ["batch", "tokens"], "attention_mask": ["batch", "tokens"]}
    session = onnx_session(exported.onnx_path)
    for batch, tokens in [(1, 3), (5, 40)]:
        ids = np.full((batch, tokens), 1000, dtype=np.int64)
        (embedding,) = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        assert embedding.shape == (batch, 384)
        np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)


def test_index_and_manifest(exported, tmp_path):
    catalogue = Catalogue([Product("a", "Cordless drill"), Product("b", "Kitchen sink"),
                           Product("c", "Wool scarf", price=9.5)], source="inline")
    manifest = build_index(catalogue, exported, tmp_path, progress=False)
    stored = json.loads((tmp_path / "manifest.json").read_text())
    assert stored["encoder_sha256"] == exported.sha256 == manifest.encoder_sha256
    assert stored["products"] == 3 and stored["dimension"] == 384 and stored["built_at"]
    lines = (tmp_path / "products.jsonl").read_text().splitlines()
    assert [json.loads(line)["product_id"] for line in lines] == ["a", "b", "c"]
    assert load_embeddings(tmp_path).shape == (3, 384)


def test_retrieval_graph_equals_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    catalogue = rng.standard_normal((500, 16)).astype(np.float32)
    retrieval_graph(catalogue, tmp_path / "r.onnx")
    session = onnx_session(tmp_path / "r.onnx")
    queries = rng.standard_normal((4, 16)).astype(np.float32)
    similarity, rows = session.run(None, {"query": queries, "k": np.array([7])})
    expected = np.argsort(-(queries @ catalogue.T), axis=1)[:, :7]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(similarity, np.take_along_axis(queries @ catalogue.T, expected, 1),
                               rtol=1e-5)


def test_int8_retrieval_gives_the_exact_top_k_whatever_the_batch(tmp_path):
    # Unit vectors in tight clusters (near neighbours only 8-bit rounding apart) and exact
    # duplicates (ties, broken by the lower row), as real catalogues have them.
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((20, 32))
    catalogue = centres[rng.integers(0, 20, 3000)] + 0.15 * rng.standard_normal((3000, 32))
    catalogue[2000:2100] = catalogue[:100]
    catalogue = (catalogue / np.linalg.norm(catalogue, axis=1, keepdims=True)).astype(np.float32)
    int8_retrieval_graph(catalogue, tmp_path / "r8.onnx")
    session = onnx_session(tmp_path / "r8.onnx", threads=1)
    queries = catalogue[rng.integers(0, 3000, 40)] + 0.05 * rng.standard_normal((40, 32))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    exact = queries.astype(np.float64) @ catalogue.T.astype(np.float64)
    for k in (10, 100, 1500):  # 3 · 1500 > 3000: the shortlist is the whole catalogue
        similarity, rows = session.run(None, {"query": queries, "k": np.array([k]),
                                              "catalogue": catalogue})
        expected = np.lexsort((np.broadcast_to(np.arange(3000), exact.shape), -exact))[:, :k]
        # The same products; in the same order but where two cosines are within float32
        # rounding of each other.
        assert all(set(a) == set(b) for a, b in zip(rows.tolist(), expected.tolist(),
                                                   strict=True))
        np.testing.assert_allclose(similarity, np.take_along_axis(exact, rows, 1), atol=1e-6)
        assert (np.diff(similarity, axis=1) <= 0).all()
        one_by_one = [session.run(None, {"query": q[None], "k": np.array([k]),
                                         "catalogue": catalogue}) for q in queries[:5]]
        np.testing.assert_array_equal(np.concatenate([r for _, r in one_by_one]), rows[:5])
        np.testing.assert_array_equal(np.concatenate([s for s, _ in one_by_one]),
                                      similarity[:5])
    # An exact duplicate ties with its original: the lower row comes first.
    _, rows = session.run(None, {"query": catalogue[:1], "k": np.array([2]),
                                 "catalogue": catalogue})
    assert rows.tolist() == [[0, 2000]]
    assert (tmp_path / "r8.onnx").stat().st_size < catalogue.nbytes / 3  # 8-bit, not a copy


def test_not_a_model_folder_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model folder: missing"):
        check_model_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        check_model_folder(tmp_path / "absent")


def test_int8_encoder_is_smaller_close_to_fp32_and_independent_of_the_batch(exported, tmp_path):
    from fusionrank.core.encoding import MAX_TITLE_TOKENS, OnnxEncoder, TextTokenizer
    from fusionrank.export.quantize import quantise_encoder, quantised_with_this_method

    titles = (real_titles() or [p.title for p in _fixture_products()])[:64]
    int8 = quantise_encoder(exported.onnx_path, exported.tokenizer_path, tmp_path / "int8.onnx",
                            titles)
    # The word-embedding table stays FP32; every MatMul weight is 8-bit.
    assert int8.onnx_path.stat().st_size < exported.onnx_path.stat().st_size * 0.75
    assert int8.min_cosine_to_fp32 >= 0.998
    assert int8.mean_cosine_to_fp32 >= 0.999
    assert quantised_with_this_method(int8.onnx_path)
    assert not quantised_with_this_method(exported.onnx_path)
    # A text's embedding does not depend on the texts batched (and padded) with it.
    tokenizer = TextTokenizer(exported.tokenizer_path, MAX_TITLE_TOKENS)
    encoder = OnnxEncoder(int8.onnx_path)
    batched = encoder(tokenizer(titles))
    alone = np.concatenate([encoder(tokenizer([title])) for title in titles])
    np.testing.assert_allclose(alone, batched, atol=1e-6)


def test_rebuilding_the_same_index_reuses_its_embeddings(exported, tmp_path):
    catalogue = Catalogue([Product("a", "Cordless drill"), Product("b", "Kitchen sink")])
    first = build_index(catalogue, exported, tmp_path, progress=False)
    again = build_index(catalogue, exported, tmp_path, progress=False)
    assert not first.embeddings_reused and again.embeddings_reused
    changed = Catalogue([Product("a", "Cordless drill"), Product("b", "Garden hose")])
    assert not build_index(changed, exported, tmp_path, progress=False).embeddings_reused


def test_parity_check_names_the_worst_row_and_fails_beyond_its_limit():
    expected = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    close = expected + np.array([[0.0, 1e-6], [0.0, 0.0], [2e-6, 0.0]])
    assert check_parity("m", expected, close, max_abs_diff=1e-5) == pytest.approx(2e-6)
    assert check_parity("m", expected, close, min_cosine=0.9999) > 0.9999
    off = expected.copy()
    off[1] = [0.1, 0.9]
    with pytest.raises(RuntimeError, match=r"m: .* \|difference\| 1\.00e-01 > 1e-05 for 'b'"):
        check_parity("m", expected, off, max_abs_diff=1e-5, labels=["a", "b", "c"])
    with pytest.raises(RuntimeError, match=r"cosine 0\.99\d+ < 0\.9999 for row 1"):
        check_parity("m", expected, off, min_cosine=0.9999)
    with pytest.raises(RuntimeError, match="nan"):
        check_parity("m", expected, np.full_like(expected, np.nan), max_abs_diff=1.0)
    with pytest.raises(ValueError, match="at least one row"):
        check_parity("m", np.empty((0, 2)), np.empty((0, 2)), max_abs_diff=1.0)
