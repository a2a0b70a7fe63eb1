"""Artefact files are read as plain arrays, never unpickled: no numpy load allowing pickles
anywhere in the source tree, and the shared loaders refuse pickled or malformed files, naming
the file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fusionrank.core import artefacts

ROOT = Path(__file__).resolve().parents[3]
SOURCES = ("fusionrank", "client", "export", "model_repository", "training", "scripts",
           "benchmarks", "tests")


def python_files() -> list[Path]:
    files = [path for folder in SOURCES if (ROOT / folder).is_dir()
             for path in (ROOT / folder).rglob("*.py") if not path.is_symlink()]
    return sorted(set(files))


def test_nothing_loads_pickles():
    files = python_files()
    assert len(files) > 50  # the tree was found
    pickling = re.compile(r"allow_pickle\s*=\s*True")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in files
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if pickling.search(line)]
    assert offenders == []


def test_a_pickled_array_is_refused(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object))  # numpy pickles object arrays
    with pytest.raises(artefacts.ArtefactError, match=r"objects.npy is not a readable .npy"):
        artefacts.load_array(path)


def test_shapes_are_checked_axis_by_axis(tmp_path):
    path = tmp_path / "table.npy"
    np.save(path, np.zeros((4, 3), np.float32))
    assert artefacts.load_array(path, shape=(4, None)).shape == (4, 3)
    assert artefacts.load_array(path, mmap=True).shape == (4, 3)
    for shape in [(4,), (5, None), (4, 2), (4, 3, 1)]:
        with pytest.raises(artefacts.ArtefactError, match=r"table.npy holds an array of shape "
                                                          r"\[4, 3\]"):
            artefacts.load_array(path, shape=shape)


def test_a_missing_npz_array_is_named(tmp_path):
    path = tmp_path / "pair.npz"
    np.savez(path, a=np.zeros(2))
    assert list(artefacts.load_arrays(path, ["a"])) == ["a"]
    with pytest.raises(artefacts.ArtefactError, match=r"pair.npz lacks the array\(s\) b, c"):
        artefacts.load_arrays(path, ["a", "b", "c"])


@pytest.fixture
def version_folder(tmp_path) -> Path:
    """A Python model exported as `fusionrank build` exports one: two artefacts placed in its
    version folder, and their manifest."""
    from fusionrank.model_repository.config import PythonModel
    from fusionrank.model_repository.recommend.steps import EncodeHistory

    sources = tmp_path / "sources"
    sources.mkdir()
    np.save(sources / "table.npy", np.arange(12, dtype=np.float32).reshape(4, 3))
    (sources / "weights.json").write_text('{"bm25": 0.5}')
    model = PythonModel("m", EncodeHistory,
                        artefacts={name: sources / name for name in ("table.npy", "weights.json")})
    return model.export(tmp_path / "repository", version=3) / "3"


def flip_a_byte(path: Path) -> None:
    """Change the file in place, as a damaged disk would (size and name unchanged)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_the_build_writes_a_manifest_the_load_accepts(version_folder):
    manifest = (version_folder / artefacts.SHA256_MANIFEST).read_text()
    assert '"table.npy"' in manifest and '"weights.json"' in manifest
    assert "model.py" not in manifest  # only what the build placed
    artefacts.check_manifest(version_folder)


def test_a_changed_artefact_stops_the_load_naming_it(version_folder):
    flip_a_byte(version_folder / "table.npy")
    with pytest.raises(artefacts.ArtefactError,
                       match=r"3/table.npy does not match its SHA-256 in .*sha256.json"):
        artefacts.check_manifest(version_folder)


def test_a_missing_artefact_stops_the_load_naming_it(version_folder):
    (version_folder / "weights.json").unlink()
    with pytest.raises(artefacts.ArtefactError, match=r"3/weights.json is missing"):
        artefacts.check_manifest(version_folder)


def test_an_unreadable_manifest_stops_the_load(version_folder):
    (version_folder / artefacts.SHA256_MANIFEST).write_text('{"table.npy": ')
    with pytest.raises(artefacts.ArtefactError, match=r"sha256.json is not a readable manifest"):
        artefacts.check_manifest(version_folder)


def test_a_folder_built_before_manifests_loads_unchecked(tmp_path):
    (tmp_path / "table.npy").write_bytes(b"anything")
    artefacts.check_manifest(tmp_path)
