"""The files a trained run adds to a model repository, aligned with the served catalogue.

`fusionrank build` calls `search_artefacts(run_dir, catalogue, out_dir, embeddings)`; it writes
    lexical.npz         BM25 over the served catalogue's titles       (scoring step)
    priors.npy          product priors, row i = served product i       (scoring step)
    memory.npz          training judgements, products as served rows  (scoring step)
    feedback_head.onnx  the run's feedback head                        (scoring step)
    ranking.json        the run's fusion weights, or a cascade's        (scoring, ranker)
    title_features.npz  the titles' term structures, computed here     (scoring step)
                        rather than at each load (with `embeddings` only: title_features.py)
Rows are matched by product id, so any catalogue works: products the run never saw get the
neutral prior (the training mean, no judgements).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.catalogue import Catalogue
from fusionrank.core.fusion import FusionWeights
from fusionrank.core.search.judgements import JudgementMemory, ProductPriors
from fusionrank.core.search.lexical import LexicalIndex
from fusionrank.core.search.title_features import save_title_features


def served_rows(run_dir: Path, catalogue_ids: list[str]) -> np.ndarray:
    """int64 [the run's products]: each one's row in the served catalogue, -1 if not served
    (ids are unique in both catalogues, so the map is one to one)."""
    from fusionrank.core.datasets import homedepot_catalogue

    manifest = json.loads((run_dir / artefacts.RUN_MANIFEST).read_text())
    run_catalogue, _ = homedepot_catalogue(manifest["data_file"])
    served_row = {pid: i for i, pid in enumerate(catalogue_ids)}
    return np.array([served_row.get(pid, -1) for pid in run_catalogue.ids], dtype=np.int64)


def aligned_priors(run_dir: Path, row_map: np.ndarray, served: int) -> ProductPriors:
    trained = ProductPriors.load(run_dir / artefacts.PRIORS)
    if len(row_map) != len(trained.mean):
        raise ValueError(f"{run_dir}: priors and the run's catalogue disagree in size")
    # Unjudged products carry the smoothed global mean already; reuse it.
    neutral = float(np.median(trained.mean[trained.count == 0])) if (trained.count == 0).any() \
        else float(trained.mean.mean())
    mean = np.full(served, neutral, dtype=np.float32)
    count = np.zeros(served, dtype=np.float32)
    kept = row_map >= 0
    mean[row_map[kept]], count[row_map[kept]] = trained.mean[kept], trained.count[kept]
    return ProductPriors(mean, count)


def aligned_memory(run_dir: Path, row_map: np.ndarray) -> JudgementMemory:
    """The run's memory with its products' rows in the served catalogue (-1: not served; the
    stored vectors still describe them)."""
    return JudgementMemory.load(run_dir / artefacts.MEMORY).aligned(row_map)


def search_artefacts(run_dir: str | Path, catalogue: Catalogue, out_dir: str | Path,
                     embeddings: np.ndarray | None = None,
                     ranking: FusionWeights | None = None) -> dict[str, Path]:
    """The run's search files for `catalogue` in `out_dir`; with the catalogue's `embeddings`,
    its TITLE_FEATURES too; with `ranking`, those weights (a cascade's, say) rather than the
    run's own."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not (run_dir / artefacts.RUN_MANIFEST).is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished `fusionrank train` run "
                                f"(no {artefacts.RUN_MANIFEST})")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in artefacts.SEARCH_RUN_FILES}
    LexicalIndex.build(catalogue.titles).save(paths[artefacts.LEXICAL])
    row_map = served_rows(run_dir, catalogue.ids)
    aligned_priors(run_dir, row_map, len(catalogue.ids)).save(paths[artefacts.PRIORS])
    aligned_memory(run_dir, row_map).save(paths[artefacts.MEMORY])
    shutil.copyfile(run_dir / artefacts.FEEDBACK_HEAD, paths[artefacts.FEEDBACK_HEAD])
    if ranking is None:
        shutil.copyfile(run_dir / artefacts.FUSION_WEIGHTS, paths[artefacts.FUSION_WEIGHTS])
    else:
        ranking.save(paths[artefacts.FUSION_WEIGHTS])
    if embeddings is not None:
        paths[artefacts.TITLE_FEATURES] = out_dir / artefacts.TITLE_FEATURES
        save_title_features(paths[artefacts.TITLE_FEATURES], catalogue.titles, embeddings)
    return paths
