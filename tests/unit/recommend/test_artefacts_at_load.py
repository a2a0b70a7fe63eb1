"""A malformed recommender artefact (truncated, of the wrong shape, missing an array) stops the
load of both served steps' runtimes with a message naming the file."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fusionrank.core import artefacts
from fusionrank.core.recommend.runtime import HistoryEncoder, Recommender


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def drop_first_array(path: Path) -> None:
    with np.load(path) as saved:
        kept = {key: saved[key] for key in saved.files[1:]}
    with path.open("wb") as handle:
        np.savez(handle, **kept)


def one_row_fewer(path: Path) -> None:
    np.save(path, np.load(path)[:-1])


DAMAGES: list[tuple[str, Callable[[Path], None], str]] = [
    (artefacts.EMBEDDINGS, truncate, r"embeddings.npy is not a readable .npy array"),
    (artefacts.EMBEDDINGS, one_row_fewer, r"embeddings.npy holds an array of shape \[\d+, \d+\]"),
    (artefacts.COPURCHASE, truncate, r"copurchase.npy is not a readable .npy array"),
    (artefacts.COPURCHASE, one_row_fewer, r"copurchase.npy holds an array of shape"),
    (artefacts.PRODUCT_STATS, drop_first_array, r"product_stats.npz lacks the array\(s\) \w+"),
    (artefacts.PRODUCT_STATS, truncate, r"product_stats.npz is not a readable .npz archive"),
]


@pytest.mark.parametrize(("file", "damage", "message"), DAMAGES,
                         ids=[f"{f}-{d.__name__}" for f, d, _ in DAMAGES])
def test_a_malformed_artefact_stops_the_load_naming_the_file(recommender, tmp_path, file, damage,
                                                              message):
    folder = tmp_path / "serving"
    shutil.copytree(recommender, folder)
    Recommender.load(folder)  # the intact copy loads
    damage(folder / file)
    with pytest.raises(artefacts.ArtefactError, match=message):
        Recommender.load(folder)
    if file == artefacts.EMBEDDINGS:  # the history step reads the embeddings too
        with pytest.raises(artefacts.ArtefactError, match=message):
            HistoryEncoder.load(folder)
