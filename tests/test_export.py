"""Encoder export, the catalogue index and its retrieval graph."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from fusionrank.catalogue import Catalogue, Product
from fusionrank.encoding import onnx_session
from fusionrank.export.index import build_index, load_embeddings, retrieval_graph
from fusionrank.export.onnx_encoder import check_model_folder, export_encoder, file_sha256


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    titles = real_titles() or [p.title for p in _fixture_products()]
    return export_encoder(model_dir, tmp_path_factory.mktemp("encoder"), titles)


def _fixture_products():
    from tests.fixtures import ANCHORS, filler_products

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


def test_not_a_model_folder_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model folder: missing"):
        check_model_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        check_model_folder(tmp_path / "absent")


def test_int8_encoder_is_smaller_and_stays_close_to_fp32(exported, tmp_path):
    from fusionrank.export.quantize import quantise_encoder

    titles = real_titles() or [p.title for p in _fixture_products()]
    int8 = quantise_encoder(exported.onnx_path, exported.tokenizer_path, tmp_path / "int8.onnx",
                            titles)
    assert int8.onnx_path.stat().st_size < exported.onnx_path.stat().st_size / 2
    assert int8.min_cosine_to_fp32 >= 0.95
    assert int8.mean_cosine_to_fp32 >= 0.98


def test_rebuilding_the_same_index_reuses_its_embeddings(exported, tmp_path):
    catalogue = Catalogue([Product("a", "Cordless drill"), Product("b", "Kitchen sink")])
    first = build_index(catalogue, exported, tmp_path, progress=False)
    again = build_index(catalogue, exported, tmp_path, progress=False)
    assert not first.embeddings_reused and again.embeddings_reused
    changed = Catalogue([Product("a", "Cordless drill"), Product("b", "Garden hose")])
    assert not build_index(changed, exported, tmp_path, progress=False).embeddings_reused
