"""Rebuilding into a folder that was deployed leaves the live server alone (issue 21, item 2).

`fusionrank deploy` hard-links a build's files into the serving repository; `fusionrank build`
writes into a fresh folder and switches it in (app/staging.py). On a real server:
build A and serve it, build B into DIR and deploy it, then rebuild DIR with other content: every
file of the serving repository keeps its bytes, its SHA-256 manifests still match, and the
server answers as before. A rebuild that fails midway leaves DIR as it was, and a build into
the folder a server serves from directly is refused."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from fusionrank.app.cli import main
from fusionrank.app.deploy import deploy
from fusionrank.client import FusionRankClient, RetryPolicy
from fusionrank.core import artefacts
from fusionrank.core.catalogue import Catalogue
from tests.support.catalogue import ANCHORS, running_server

pytestmark = pytest.mark.server

QUERIES = [*ANCHORS, "blue glass vase", "gift box"]


def cli_build(catalogue: Catalogue, out: Path, *options: str) -> int:
    """`fusionrank build` of `catalogue` (pretrained encoder, search only) into `out`."""
    path = out.parent / f"{out.name}-catalogue.jsonl"
    catalogue.write_jsonl(path)
    return main(["build", "--catalogue", str(path), "--out", str(out), "--pretrained",
                 "--no-recommend", "--sentiment", str(out.parent / "no-sentiment"),
                 "--threads", "1", *options])


def repriced(catalogue: Catalogue, by: float, retitled: bool = False) -> Catalogue:
    """The catalogue with every price moved `by`; `retitled`: every anchor's title changed
    too, so the embeddings are computed again rather than reused."""
    anchors = {p.product_id for p in ANCHORS.values()}
    return Catalogue([replace(p, price=round(p.price + by, 2),
                              title=f"{p.title} (new)" if retitled and p.product_id in anchors
                              else p.title) for p in catalogue], source=f"tests/tiny+{by}")


def files(folder: Path) -> dict[str, str]:
    """{relative path: SHA-256} of every file under `folder`."""
    return {str(p.relative_to(folder)): artefacts.file_sha256(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def inodes(folder: Path) -> set[int]:
    return {p.stat().st_ino for p in folder.rglob("*") if p.is_file()}


def answers(url: str) -> list[list[tuple]]:
    with FusionRankClient(url, retry=RetryPolicy(attempts=1)) as client:
        return [[(h.product_id, round(h.score, 5), h.product.price) for h in hits]
                for hits in client.search_batch(QUERIES, k=5, products=True)]


def beside(out: Path) -> list[str]:
    """What a build left beside `out` (a staging folder, an old build renamed aside)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_a_rebuild_over_a_deployed_folder_leaves_the_serving_version_byte_identical(
        tiny_catalogue, tmp_path, capsys):
    served, rebuilt = tmp_path / "served", tmp_path / "next"
    assert cli_build(tiny_catalogue, served) == 0
    repository = served / "model_repository"
    with running_server(repository, tmp_path / "tritonserver.log") as server:
        assert cli_build(repriced(tiny_catalogue, 1.0), rebuilt) == 0
        assert deploy(server.grpc_url, repository, rebuilt / "model_repository",
                      drain_s=0.5).outcome == "switched"
        before, answered = files(repository), answers(server.grpc_url)
        # The scenario of the issue: the serving version's files ARE the files of DIR.
        assert inodes(repository) & inodes(rebuilt / "artefacts")
        prices = {h[2] for hits in answered for h in hits}
        assert prices & {round(p.price + 1.0, 2) for p in ANCHORS.values()}  # B serves

        # Rebuild DIR with other titles and prices (embeddings computed again).
        assert cli_build(repriced(tiny_catalogue, 2.0, retitled=True), rebuilt) == 0
        products = (rebuilt / "artefacts" / "index" / artefacts.PRODUCTS).read_text()
        assert "(new)" in products  # DIR holds the new build...
        assert files(repository) == before  # ...and the serving version kept every byte
        for version in repository.glob("*/[0-9]*"):
            artefacts.check_manifest(version)  # what a model process checks at its reload
        assert answers(server.grpc_url) == answered
        assert beside(rebuilt) == []

        # A rebuild that fails midway (the GPU repository's engine path is refused when the
        # models are written, after the encoder and the index): DIR stays as it was.
        dir_before = files(rebuilt)
        assert cli_build(tiny_catalogue, rebuilt, "--device", "gpu",
                         "--tensorrt-engine", "relative/encoder.plan") == 2
        assert "absolute path" in capsys.readouterr().err
        assert files(rebuilt) == dir_before
        assert beside(rebuilt) == []

        # A build into the folder the server serves from directly is refused, naming it.
        assert cli_build(tiny_catalogue, served) == 2
        error = capsys.readouterr().err
        assert "a running server serves directly" in error and str(repository) in error
        assert files(repository) == before
        assert answers(server.grpc_url) == answered


def test_the_rebuild_reuses_the_previous_builds_embeddings(tiny_catalogue, tmp_path):
    out = tmp_path / "build"
    assert cli_build(tiny_catalogue, out) == 0
    embeddings = out / "artefacts" / "index" / artefacts.EMBEDDINGS
    first = hashlib.sha256(embeddings.read_bytes()).hexdigest(), embeddings.stat().st_ino
    assert cli_build(repriced(tiny_catalogue, 1.0), out) == 0  # same titles, same encoder
    manifest = (out / "artefacts" / "index" / artefacts.INDEX_MANIFEST).read_text()
    assert '"embeddings_reused": true' in manifest
    # The same file, linked into the new build (no copy, no write).
    assert (hashlib.sha256(embeddings.read_bytes()).hexdigest(),
            embeddings.stat().st_ino) == first
