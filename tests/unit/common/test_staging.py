"""`fusionrank build`'s output folder is replaced whole (app/staging.py): a build
that fails leaves the previous --out as it was, a build that completes never writes into the
previous one's files (a deployed server hard-links them), and an --out a running server serves
from, or that is not a build's, is refused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from fusionrank.app import control
from fusionrank.app.cli import main
from fusionrank.app.staging import OutputError, staged_output


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (SHA-256, inode)} of every file under `folder`."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                         p.stat().st_ino)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def previous_build(out: Path) -> Path:
    """An --out as a build leaves it: artefacts, a model repository, and a file the user put
    beside the encoder (an engine from `fusionrank export-tensorrt`, say)."""
    (out / "artefacts" / "index").mkdir(parents=True)
    (out / "artefacts" / "index" / "embeddings.npy").write_bytes(b"old embeddings")
    (out / "artefacts" / "encoder").mkdir()
    (out / "artefacts" / "encoder" / "encoder.fp16.plan").write_bytes(b"engine")
    (out / "model_repository" / "search" / "1").mkdir(parents=True)
    (out / "model_repository" / "search" / "1" / "model.py").write_text("old model")
    return out


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.mark.parametrize("failure", [RuntimeError("the encoder export failed"),
                                     KeyboardInterrupt()])
def test_a_build_that_fails_midway_leaves_the_previous_out_as_it_was(tmp_path, failure):
    out = previous_build(tmp_path / "build")
    before = snapshot(out)
    with pytest.raises(type(failure)), staged_output(out) as staging:
        (staging / "artefacts" / "index").mkdir(parents=True)
        (staging / "artefacts" / "index" / "embeddings.npy").write_bytes(b"half written")
        raise failure
    assert snapshot(out) == before  # same bytes, same files (inodes)
    assert leftovers(out) == []  # the staging folder is gone


def test_a_completed_build_replaces_names_and_never_writes_into_the_old_files(tmp_path):
    out = previous_build(tmp_path / "build")
    # A serving repository deployed from this --out shares its files' inodes (deploy's links).
    deployed = tmp_path / "serving" / "model.py"
    deployed.parent.mkdir()
    os.link(out / "model_repository" / "search" / "1" / "model.py", deployed)
    with staged_output(out) as staging:
        (staging / "artefacts" / "index").mkdir(parents=True)
        (staging / "artefacts" / "index" / "embeddings.npy").write_bytes(b"new embeddings")
        (staging / "model_repository" / "search" / "2").mkdir(parents=True)
        (staging / "model_repository" / "search" / "2" / "model.py").write_text("new model")
    assert deployed.read_text() == "old model"
    assert (out / "artefacts" / "index" / "embeddings.npy").read_bytes() == b"new embeddings"
    # The user's engine is kept; the old repository is not (a stale model would be served).
    assert (out / "artefacts" / "encoder" / "encoder.fp16.plan").read_bytes() == b"engine"
    assert sorted(p.name for p in (out / "model_repository" / "search").iterdir()) == ["2"]
    assert leftovers(out) == []


def test_a_build_into_a_new_folder_creates_it(tmp_path):
    out = tmp_path / "deep" / "build"
    with staged_output(out) as staging:
        (staging / "model_repository").mkdir()
    assert (out / "model_repository").is_dir()
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_out_that_is_not_a_build_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a build's"), staged_output(tmp_path):
        pytest.fail("the block must not run")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_out_whose_repository_a_live_server_serves_is_refused(tmp_path):
    out = previous_build(tmp_path / "build")
    repository = (out / "model_repository").resolve()
    # The record `fusionrank serve` writes beside the repository it serves; this process stands
    # in for the live tritonserver (the integration test runs a real one).
    control.write_record(control.ControlRecord("key", str(repository), "127.0.0.1", 1, 2, 3,
                                               os.getpid(), os.getpid()))
    before = snapshot(out)
    refused = f"running server serves directly .*pid {os.getpid()}"
    with pytest.raises(OutputError, match=refused), staged_output(out):
        pytest.fail("the block must not run")
    assert snapshot(out) == before


def test_an_abandoned_staging_folder_is_removed_by_the_next_build(tmp_path):
    out = previous_build(tmp_path / "build")
    dead = 2 ** 22 + 1  # above the kernel's pid_max: no such process
    abandoned = tmp_path / f".build.staging-{dead}-0123abcd"
    (abandoned / "artefacts").mkdir(parents=True)
    with staged_output(out) as staging:
        (staging / "model_repository").mkdir()
    assert leftovers(out) == []


def test_the_cli_build_that_fails_leaves_the_previous_out_and_says_why(tmp_path, capsys,
                                                                       tiny_catalogue):
    pytest.importorskip("torch")  # the `fusionrank` parser imports the training layer
    out = previous_build(tmp_path / "build")
    catalogue = tmp_path / "catalogue.jsonl"
    tiny_catalogue.write_jsonl(catalogue)
    before = snapshot(out)
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("product_id,text,rating\n")
    assert main(["build", "--catalogue", str(catalogue), "--out", str(out), "--pretrained",
                 "--reviews", str(reviews), "--sentiment", str(tmp_path / "none")]) == 2
    assert "--reviews needs a trained sentiment model" in capsys.readouterr().err
    assert snapshot(out) == before
    assert leftovers(out) == []
