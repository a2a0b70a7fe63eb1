"""Whether rebuilding into a folder that was deployed can change what a live server serves
(issue 21, item 2), on the real demo catalogue and trained run.

1. `fusionrank build` the catalogue into A and serve A's repository (a real tritonserver);
2. build the catalogue with every price moved into DIR, and `fusionrank deploy` DIR onto A's
   server: the serving repository now shares DIR's files (hard links, checked);
3. rebuild DIR with other prices: every file of the serving repository is compared by SHA-256
   before and after, each version folder's `sha256.json` is checked as a model process checks
   it at a reload, and the server's answers to the probe queries are compared.

    .venv/bin/python -m benchmarks.rebuild_safety [--catalogue online_retail] [--run runs/relevance]

Writes benchmarks/reports/rebuild_safety.md and .json. The test that keeps it:
tests/integration/test_rebuild_deployed.py (tiny catalogue, the same steps).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import heading, save_report, stamp, table
from fusionrank.app.deploy import deploy
from fusionrank.app.serve import TritonServer
from fusionrank.client import FusionRankClient
from fusionrank.core import artefacts
from fusionrank.core.catalogue import Catalogue, load_catalogue

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ("heart lantern", "christmas decoration", "tea set", "cake stand", "gift box")


def build(catalogue: Path, out: Path, run: Path, printed: list[int]) -> float:
    """Seconds `fusionrank build` took; the number of lines it printed joins `printed` (a
    progress bar's redraws count as one line, as a terminal shows them)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "fusionrank.app.cli", "build", "--catalogue",
                           str(catalogue), "--run", str(run), "--out", str(out),
                           "--no-recommend", "--sentiment", str(out.parent / "no-sentiment")],
                          check=True, cwd=ROOT, capture_output=True)
    # Bytes, not text: text mode would turn a progress bar's \r redraws into lines.
    printed.append((done.stdout + done.stderr).count(b"\n"))
    return round(time.monotonic() - started, 1)


def repriced(products: Catalogue, by: float, path: Path) -> Path:
    from dataclasses import replace

    Catalogue([replace(p, price=round((p.price or 0.0) + by, 2)) for p in products],
              source=f"{products.source}+{by}").write_jsonl(path)
    return path


def inodes(folder: Path) -> set[int]:
    return {p.stat().st_ino for p in folder.rglob("*") if p.is_file()}


def answers(url: str) -> list[list[tuple]]:
    with FusionRankClient(url) as client:
        return [[(h.product_id, h.score) for h in hits]
                for hits in client.search_batch(list(QUERIES), k=10)]


def manifests_hold(repository: Path) -> tuple[int, list[str]]:
    checked, failed = 0, []
    for version in sorted(repository.glob("*/[0-9]*")):
        if (version / artefacts.SHA256_MANIFEST).is_file():
            checked += 1
            try:
                artefacts.check_manifest(version)
            except artefacts.ArtefactError as error:
                failed.append(f"{version.relative_to(repository)}: {error}")
    return checked, failed


def measure(catalogue: Path, run: Path, folder: Path) -> dict:
    if not catalogue.is_file():
        raise SystemExit(f"{catalogue} is not a catalogue file (products.jsonl of a build)")
    products, _ = load_catalogue(catalogue)
    served, rebuilt = folder / "served", folder / "next"
    printed: list[int] = []
    seconds = {"build_served": build(catalogue, served, run, printed),
               "build_next": build(repriced(products, 1.0, folder / "plus1.jsonl"), rebuilt,
                                   run, printed)}
    repository = served / "model_repository"
    with (folder / "tritonserver.log").open("w") as log:
        server = TritonServer(repository, log=log).start()
        try:
            rollout = deploy(server.grpc_url, repository, rebuilt / "model_repository",
                             drain_s=0.5)
            shared = len(inodes(repository) & inodes(rebuilt))
            before, answered = artefacts.folder_sha256(repository), answers(server.grpc_url)
            seconds["rebuild_next"] = build(repriced(products, 2.0, folder / "plus2.jsonl"),
                                            rebuilt, run, printed)
            after = artefacts.folder_sha256(repository)
            checked, failed = manifests_hold(repository)
            answered_after = answers(server.grpc_url)
        finally:
            server.stop()
    changed = sorted(name for name in before if after.get(name) != before[name])
    return {"rollout": rollout.outcome, "shared_files_with_rebuilt_folder": shared,
            "serving_files": len(before), "serving_files_changed": len(changed),
            "changed": changed[:20], "manifests_checked": checked, "manifests_failed": failed,
            "answers_unchanged": answered == answered_after, "seconds": seconds,
            "build_output_lines": printed}


def markdown(report: dict) -> str:
    r = report["result"]
    rows = [["files of the serving repository changed by the rebuild",
             f"{r['serving_files_changed']} of {r['serving_files']}",
             "yes" if r["serving_files_changed"] == 0 else "**no**"],
            ["version folders whose sha256.json still matches",
             f"{r['manifests_checked'] - len(r['manifests_failed'])} of {r['manifests_checked']}",
             "yes" if not r["manifests_failed"] else "**no**"],
            ["the server's answers to the probe queries", "unchanged" if r["answers_unchanged"]
             else "changed", "yes" if r["answers_unchanged"] else "**no**"]]
    return "\n".join([
        heading("Rebuild over a deployed folder (issue 21, item 2)", report),
        f"Rollout of DIR onto the server: {r['rollout']}; the serving repository shared "
        f"{r['shared_files_with_rebuilt_folder']} files (hard links) with DIR before the "
        f"rebuild. Build seconds: {json.dumps(r['seconds'])}; lines each build printed: "
        f"{r['build_output_lines']}.", "",
        table(["check", "measured", "met"], rows), ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalogue", type=Path,
                        default=ROOT / "build" / "artefacts" / "index" / artefacts.PRODUCTS,
                        help="a catalogue file (default: the demo build's products.jsonl)")
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "relevance")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rebuild-safety-") as tmp:
        result = measure(args.catalogue.resolve(), args.run.resolve(), Path(tmp))
    report = {**stamp(), "result": result}
    save_report("rebuild_safety", report, markdown(report))
    return 0 if result["serving_files_changed"] == 0 and not result["manifests_failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
