"""`build --ray`: the catalogue embedded by a Ray Data actor pool equals the single-process
build's, row for row; a Ray that is missing or a cluster that does not answer is refused before
anything is written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fusionrank.app.serve import free_port
from fusionrank.export.index import embed_catalogue
from fusionrank.export.ray_embedding import RayOptions, RayUnavailable, ray_embedder
from tests.export.test_embedding_cache import titles

pytest.importorskip("ray", reason="Ray is an extra: pip install '.[ray]'")


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    from fusionrank.training.encoder import export_model_folder

    return export_model_folder(tiny_model_dir, tmp_path_factory.mktemp("ray_encoder"), titles(8))


def test_ray_embeddings_equal_the_single_process_builds(exported, tmp_path):
    catalogue = titles(1000) + titles(40)  # 16 encoder batches over 2 actors; 40 repeated titles
    alone = embed_catalogue(catalogue, exported, tmp_path / "alone.npy", tmp_path / "one", False)
    on_ray = embed_catalogue(catalogue, exported, tmp_path / "ray.npy", tmp_path / "two", False,
                             ray=RayOptions(actors=2))
    assert (alone.embedded, on_ray.embedded) == (1000, 1000)
    single, ray = np.load(tmp_path / "alone.npy"), np.load(tmp_path / "ray.npy")
    assert ray.shape == single.shape == (1040, single.shape[1])
    np.testing.assert_allclose(ray, single, rtol=0, atol=1e-6)  # same rows, same order
    # Ray made the very batches of the single-process build, so the cache's parts are the same
    # titles (a part is named by its keys).
    parts = sorted(p.name for p in (tmp_path / "one").rglob("part-*.npz"))
    assert parts == sorted(p.name for p in (tmp_path / "two").rglob("part-*.npz"))


def test_an_address_nobody_answers_is_refused_before_any_work(exported, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(RayUnavailable, match=f"no Ray cluster answers at {address}"):
        embed_catalogue(titles(10), exported, tmp_path / "e.npy", tmp_path / "cache", False,
                        ray=RayOptions(address=address))
    assert not (tmp_path / "e.npy").exists() and not (tmp_path / "cache").exists()
    with pytest.raises(RayUnavailable, match="HOST:PORT"):
        ray_embedder(RayOptions(address="headnode"), exported.tokenizer_path, exported.onnx_path,
                     64, 64)


def test_the_cli_refuses_an_unreachable_cluster_in_one_line(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "fusionrank.app.cli", "build", "--pretrained", "--ray", address,
         "--out", str(tmp_path / "build")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"no Ray cluster answers at {address}" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "build").exists()
    actors = subprocess.run(
        [sys.executable, "-m", "fusionrank.app.cli", "build", "--ray-actors", "2"],
        capture_output=True, text=True, timeout=120)
    assert actors.returncode == 2 and "--ray-actors needs --ray" in actors.stderr
