"""The files a trained run adds to a model repository, aligned with the served catalogue.

`fusionrank build` calls `search_artefacts(run_dir, catalogue, out_dir)`; it writes
    lexical.npz         BM25 over the served catalogue's titles       (lexical model)
    priors.npy          product priors, row i = served product i       (feedback model)
    memory.npz          training judgements, products as served rows  (feedback model)
    feedback_head.onnx  the run's feedback head                        (feedback model)
    ranking.json        the run's fusion weights                        (ranker model)
Rows are matched by product id, so any catalogue works: products the run never saw get the
neutral prior (the training mean, no judgements).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from fusionrank.catalogue import Catalogue
from fusionrank.training.features import JudgementMemory, ProductPriors
from fusionrank.training.lexical_index import LexicalIndex

RUN_MANIFEST = "run.json"
FILES = {"lexical": "lexical.npz", "priors": "priors.npy", "memory": "memory.npz",
         "feedback_head": "feedback_head.onnx", "weights": "ranking.json"}


def run_catalogue_ids(run_dir: Path) -> list[str]:
    from fusionrank.datasets import homedepot_catalogue

    manifest = json.loads((run_dir / RUN_MANIFEST).read_text())
    catalogue, _ = homedepot_catalogue(manifest["data_file"])
    return catalogue.ids


def aligned_priors(run_dir: Path, run_ids: list[str], catalogue_ids: list[str]
                   ) -> ProductPriors:
    trained = ProductPriors.load(run_dir / FILES["priors"])
    if len(run_ids) != len(trained.mean):
        raise ValueError(f"{run_dir}: priors and the run's catalogue disagree in size")
    row_of = {pid: i for i, pid in enumerate(run_ids)}
    # Unjudged products carry the smoothed global mean already; reuse it.
    neutral = float(np.median(trained.mean[trained.count == 0])) if (trained.count == 0).any() \
        else float(trained.mean.mean())
    mean = np.full(len(catalogue_ids), neutral, dtype=np.float32)
    count = np.zeros(len(catalogue_ids), dtype=np.float32)
    for i, pid in enumerate(catalogue_ids):
        j = row_of.get(pid)
        if j is not None:
            mean[i], count[i] = trained.mean[j], trained.count[j]
    return ProductPriors(mean, count)


def aligned_memory(run_dir: Path, run_ids: list[str], catalogue_ids: list[str]
                   ) -> JudgementMemory:
    """The run's memory with its products' rows in the served catalogue (-1: not served; the
    stored vectors still describe them)."""
    served_row = {pid: i for i, pid in enumerate(catalogue_ids)}
    row_map = np.array([served_row.get(pid, -1) for pid in run_ids], dtype=np.int64)
    return JudgementMemory.load(run_dir / FILES["memory"]).aligned(row_map)


def search_artefacts(run_dir: str | Path, catalogue: Catalogue, out_dir: str | Path
                     ) -> dict[str, Path]:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not (run_dir / RUN_MANIFEST).is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished `fusionrank train` run "
                                f"(no {RUN_MANIFEST})")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / file for name, file in FILES.items()}
    LexicalIndex.build(catalogue.titles).save(paths["lexical"])
    run_ids = run_catalogue_ids(run_dir)
    aligned_priors(run_dir, run_ids, catalogue.ids).save(paths["priors"])
    aligned_memory(run_dir, run_ids, catalogue.ids).save(paths["memory"])
    for name in ("feedback_head", "weights"):
        shutil.copyfile(run_dir / FILES[name], paths[name])
    return paths
