"""How long the search `ranker` takes to load, with its title structures computed at load (as
before TITLE_FEATURES existed) and read from `title_features.npz` (as `fusionrank build` now
writes it): `SearchRuntime.load` in a fresh process, and Triton loading the whole repository and
reloading the ranker (the reload `fusionrank serve`'s watch makes after a model process died).

    .venv/bin/python -m benchmarks.ranker_load build/homedepot_fused/model_repository

The repository is not changed: each variant is a hard-linked copy in a temporary folder, the
saved variant with TITLE_FEATURES computed into its ranker version folder. Writes
benchmarks/reports/ranker_load.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import heading, save_report, stamp, table
from fusionrank.app.serve import TritonServer
from fusionrank.app.stub_watch import StubWatch
from fusionrank.core import artefacts
from fusionrank.core.search.title_features import save_title_features
from fusionrank.model_repository.config import model_of_step, served_version

# Run in a fresh interpreter, as a model process starts: seconds to import, then to load.
LOAD = """
import sys, time
start = time.perf_counter()
from fusionrank.core.search.runtime import SearchRuntime
imported = time.perf_counter()
SearchRuntime.load(sys.argv[1])
print(imported - start, time.perf_counter() - imported)
"""


def runtime_load(folder: Path, runs: int) -> dict:
    """Median seconds of `runs` fresh processes: importing the runtime, then loading it."""
    times = [[float(x) for x in subprocess.run(
        [sys.executable, "-c", LOAD, str(folder)], check=True, capture_output=True,
        text=True).stdout.split()] for _ in range(runs)]
    return {"import_s": round(statistics.median(t[0] for t in times), 2),
            "load_s": round(statistics.median(t[1] for t in times), 2),
            "load_runs_s": [round(t[1], 2) for t in times]}


def triton_load(repository: Path, log: Path) -> dict:
    """Seconds from starting tritonserver to ready (every model loaded), then to reload the
    ranker with a changed config (as the watch does)."""
    with log.open("w") as handle:
        server = TritonServer(repository, log=handle)
        started = time.monotonic()
        server.start()
        ready = time.monotonic() - started
        try:
            reload = StubWatch(server, say=lambda _: None).reload(
                model_of_step(repository, "search", "ScoreCandidates"), [])
        finally:
            server.stop()
    if reload.error:
        raise RuntimeError(f"the ranker did not reload: {reload.error}")
    return {"server_ready_s": round(ready, 2), "ranker_reload_s": reload.seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per variant")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="ranker_load_") as scratch:
        for variant in ("computed at load", "saved at build"):
            copy = Path(scratch) / variant.replace(" ", "_") / "model_repository"
            shutil.copytree(args.repository, copy, copy_function=os.link)
            folder = served_version(copy, model_of_step(copy, "search", "ScoreCandidates"))
            saved = folder / artefacts.TITLE_FEATURES
            saved.unlink(missing_ok=True)
            row: dict = {"variant": variant}
            if variant == "saved at build":
                lines = (folder / artefacts.PRODUCTS).read_text(encoding="utf-8").splitlines()
                started = time.perf_counter()
                save_title_features(saved, [json.loads(line)["title"] for line in lines],
                                    artefacts.load_array(folder / artefacts.EMBEDDINGS))
                row["save_s"] = round(time.perf_counter() - started, 2)
                row["file_mb"] = round(saved.stat().st_size / 1e6, 1)
            # The manifest (a hard link to the build's: replaced, not written through) lists
            # the files this variant has.
            manifest = folder / artefacts.SHA256_MANIFEST
            listed = json.loads(manifest.read_text(encoding="utf-8"))
            manifest.unlink()
            artefacts.write_manifest(folder, [n for n in listed if (folder / n).is_file()])
            row |= runtime_load(folder, args.runs)
            row |= triton_load(copy, Path(scratch) / f"{variant.replace(' ', '_')}.log")
            results.append(row)
            print(row, flush=True)
    report = {**stamp(), "repository": str(args.repository), "results": results}
    save_report("ranker_load", report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    rows = table(["title structures", "import, s", "SearchRuntime.load, s (runs)",
                  "Triton ready, s", "ranker reload, s", "file, MB"],
                 [[r["variant"], r["import_s"],
                   f"{r['load_s']} ({', '.join(map(str, r['load_runs_s']))})",
                   r["server_ready_s"], r["ranker_reload_s"], r.get("file_mb", "-")]
                  for r in report["results"]])
    return heading(
        "Loading the search ranker: title structures computed at load or saved at build", report,
        f"Repository: `{report['repository']}` (hard-linked copies; the saved variant gets\n"
        "  `title_features.npz` in the version folder of the model running ScoreCandidates (the "
        "ranker:\n  `search_steps` by default), written by `save_title_features`, as "
        "`fusionrank build` writes it)",
        "SearchRuntime.load: median of fresh processes (its import apart), what the ranker's\n"
        "  ScoreCandidates step runs at each load (its features graph built too). Triton: "
        "`tritonserver`\n  started on the copy (every model, the ranker's 2 instances among "
        "them) until ready, then the\n  ranker reloaded with a changed config, as `fusionrank "
        "serve`'s watch reloads it after a\n  model process died.") + f"\n{rows}\n"


if __name__ == "__main__":
    raise SystemExit(main())
