"""Bytes per product of each artefact a build serves, and of each array of its title features,
and one `search_steps` process's resident size after it loads them (`SearchRuntime.load` and
the `Rank` step, in a fresh interpreter, as a model process starts).

    .venv/bin/python -m benchmarks.artefact_sizes BUILD [BUILD ...]

BUILD: a `fusionrank build --out` folder (its `artefacts/` subfolders are measured), several to
compare (before / after a format change, say). Writes benchmarks/reports/artefact_sizes.md and
.json. `artefact_bytes(build_dir)` is the figure the scale report reads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from benchmarks.harness import heading, save_report, stamp, table
from fusionrank.core import artefacts
from fusionrank.core.product_table import ProductTable

# Run in a fresh interpreter: a model process's resident size after its load.
LOAD = """
import gc, json, sys
from pathlib import Path
import psutil
from fusionrank.core.search.runtime import SearchRuntime
from fusionrank.model_repository.search.steps import Rank
before = psutil.Process().memory_info().rss
runtime, rank = SearchRuntime.load(sys.argv[1], threads=1), Rank(Path(sys.argv[1]), {})
gc.collect()
memory = psutil.Process().memory_full_info()
print(json.dumps({"rss": memory.rss, "uss": memory.uss, "imports_rss": before}))
"""


def artefact_bytes(build_dir: str | Path) -> dict[str, int]:
    """{"<subfolder>/<file>": bytes} of every file under BUILD/artefacts (index, ranking,
    encoder, ...)."""
    root = Path(build_dir) / "artefacts"
    if not root.is_dir():
        raise FileNotFoundError(f"{build_dir} has no artefacts/ folder (not a build --out)")
    return {str(path.relative_to(root)): path.stat().st_size
            for path in sorted(root.rglob("*")) if path.is_file()}


def products_of(build_dir: str | Path) -> int:
    return len(ProductTable.open(Path(build_dir) / "artefacts" / "index" / artefacts.PRODUCTS))


def npz_member_bytes(path: Path) -> dict[str, int]:
    """{array name: bytes in the file} of an .npz."""
    with zipfile.ZipFile(path) as archive:
        return {info.filename.removesuffix(".npy"): info.compress_size
                for info in archive.infolist()}


def served_folder(build_dir: Path) -> Path:
    """The search_steps model's version folder (what its process loads)."""
    versions = sorted(p for p in (build_dir / "model_repository" / "search_steps").iterdir()
                      if p.is_dir() and p.name.isdigit())
    if not versions:
        raise FileNotFoundError(f"{build_dir} has no search_steps version folder")
    return versions[-1]


def load_rss(folder: Path) -> dict[str, int | str]:
    """The process's sizes in bytes, or {"error": its last line} where the load fails (a build
    of an older format is refused by this code)."""
    out = subprocess.run([sys.executable, "-c", LOAD, str(folder)], capture_output=True,
                         text=True)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="+", type=Path)
    args = parser.parse_args()
    report = {**stamp(), "builds": {}}
    for build in args.builds:
        products = products_of(build)
        features = build / "artefacts" / "ranking" / artefacts.TITLE_FEATURES
        report["builds"][str(build)] = {
            "products": products, "artefact_bytes": artefact_bytes(build),
            "title_feature_arrays": npz_member_bytes(features) if features.is_file() else {},
            "load": load_rss(served_folder(build))}
    save_report("artefact_sizes", report, render(report))


def render(report: dict) -> str:
    builds = report["builds"]
    names = list(builds)
    per = {name: {**b["artefact_bytes"]} for name, b in builds.items()}
    files = sorted({f for sizes in per.values() for f in sizes})
    bpp = [[f, *(f"{per[n][f] / builds[n]['products']:,.1f}" if f in per[n] else "-"
                 for n in names)] for f in files]
    arrays = sorted({a for b in builds.values() for a in b["title_feature_arrays"]})
    app = [[a, *(f"{builds[n]['title_feature_arrays'][a] / builds[n]['products']:,.1f}"
                 if a in builds[n]["title_feature_arrays"] else "-" for n in names)]
           for a in arrays]
    mib = 1 << 20
    rss = [[n, f"{builds[n]['products']:,}",
            *((f"{builds[n]['load'][k] / mib:,.1f}" for k in ("rss", "uss", "imports_rss"))
              if "error" not in builds[n]["load"] else (builds[n]["load"]["error"], "", ""))]
           for n in names]
    return (heading("Artefact bytes per product", report) + "\n## Bytes per product, by file\n\n"
            + table(["file", *names], bpp)
            + "\n\n## title_features.npz, bytes per product, by array\n\n"
            + table(["array", *names], app)
            + "\n\n## One search_steps process after SearchRuntime.load + Rank (MiB)\n\n"
            + table(["build", "products", "RSS", "USS", "RSS after imports"], rss) + "\n")


if __name__ == "__main__":
    main()
