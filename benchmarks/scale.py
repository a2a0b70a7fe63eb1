"""The scale report: build, serve and rank the same catalogue at 45,782, 250,000 and 1,000,000
products (benchmarks/generate_catalogue.py: every real Home Depot product, then generated
distractors; each size a prefix of the next).

    python -m benchmarks.scale build --products 250000 [--cold]   # the build
    python -m benchmarks.scale change --products 250000             # then a 1 % change
    python -m benchmarks.scale serve --products 250000              # server memory and speed
    python -m benchmarks.scale serve --products 250000 --one-ranker # the same, one ranker copy
    python -m benchmarks.scale compare --products 1000000           # against 45,782, in rounds
    python -m benchmarks.scale report --quality EVALUATION.json     # scale.md/.json + a plot

Each phase writes its figures to WORK/<phase>-<products>.json with its own command, date and
the machine's load, and `report` puts them side by side with the quality figures of one
`fusionrank evaluate --scale` run. Phases rather than one long run: the 1M cold build alone
takes most of an hour on two cores, and a row is then redone without redoing the others.

- build: `fusionrank build` under /usr/bin/time (wall time, peak memory); the embedding cache
  is a new empty one with --cold, so every title is embedded. Bytes per product of every served
  artefact (benchmarks/artefact_sizes.py).
- change: 1 % of the products get a new title and `fusionrank build` runs again over a copy of
  that build (hard links: the build replaces files, never writes into one), as a shop rebuilds
  its --out after a catalogue change: the embedding cache embeds only those titles and the ANN
  index of the build before is updated rather than built again.
- serve: `tritonserver` on the built repository, its files first read once into the page
  cache (as on a server up a while), response cache off; memory (RSS and PSS of
  tritonserver and its model processes) when ready and its peak under load; perf_analyzer at
  concurrency 1 and 8 over distinct real Home Depot queries.
- compare: the speed targets are ratios to the 45,782-product figures, and a size's q/s here
  moves by up to a fifth between runs minutes apart, more than the targets' margins. Both sizes are
  served at once and measured in turn, round after round, the order alternating (ABBA…), so
  each round's ratio compares two windows a minute apart; the report gives every round and
  their median.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    ROOT,
    PeakMemoryShares,
    benchmark_queries,
    load_average,
    process_memory_mib,
    resident_by_file,
    stamp,
)

SIZES = (45_782, 250_000, 1_000_000)
SEED = 13
CHANGED = 0.01  # the share of products whose title a catalogue change rewrites
WORK = Path("/tmp/fusionrank-scale")
QUERIES = 2000
VENV_BIN = Path(sys.executable).parent


def catalogue_file(work: Path, products: int) -> Path:
    path = work / f"catalogue-{products}.parquet"
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "benchmarks.generate_catalogue", "--products",
                        str(products), "--seed", str(SEED), "--out", str(path)], check=True,
                       cwd=ROOT)
    return path


def changed_catalogue(source: Path, share: float = CHANGED, seed: int = SEED) -> Path:
    """The catalogue with `share` of its products retitled (a new edition of the same product:
    the title gains a variant), in a file beside it."""
    import pandas as pd

    frame = pd.read_parquet(source)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(frame), size=round(share * len(frame)), replace=False)
    variants = np.array(["(2-Pack)", "- New Edition", "with Storage Bag", "(Contractor Pack)"])
    frame.loc[rows, "title"] = (frame.loc[rows, "title"] + " "
                                + variants[rng.integers(0, len(variants), len(rows))])
    path = source.with_name(source.stem + "-changed.parquet")
    frame.to_parquet(path, index=False)
    return path


def build_command(catalogue: Path, out: Path, cache: Path) -> list[str]:
    return ["/usr/bin/time", "-v", str(VENV_BIN / "fusionrank"), "build", "--catalogue",
            str(catalogue), "--out", str(out), "--no-recommend", "--sentiment",
            str(out.parent / "no-sentiment"), "--embedding-cache", str(cache)]


def timed_build(catalogue: Path, out: Path, cache: Path, log: Path) -> dict:
    """`fusionrank build` under /usr/bin/time -v: wall seconds, peak RSS, what it embedded."""
    with log.open("w") as handle:
        done = subprocess.run(build_command(catalogue, out, cache), stdout=handle,
                              stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode != 0:
        text = log.read_text(errors="replace")
        raise RuntimeError(f"the build failed (rc {done.returncode}); see {log}:\n{text[-2000:]}")
    return build_figures(out, log)


def wall_seconds(time_log: str) -> float:
    """The wall time /usr/bin/time -v reports (h:mm:ss or m:ss)."""
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", time_log)
    return sum(float(part) * 60 ** i for i, part in enumerate(reversed(wall.group(1).split(":"))))


def build_figures(out: Path, log: Path) -> dict:
    """A finished build's figures, from its /usr/bin/time -v log and its manifests."""
    text = log.read_text(errors="replace")
    seconds = wall_seconds(text)
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    index = json.loads((out / "artefacts" / "index" / "manifest.json").read_text())
    served = json.loads((out / "model_repository" / "fusionrank.json").read_text())
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(peak_kib / 1024),
            "titles_embedded": index.get("titles_embedded"),
            "titles_cached": index.get("titles_cached"),
            "embedding_seconds": index.get("embedding_seconds"),
            "retrieval": served.get("retrieval"), "load_average_after": load_average()}


def run_build(args: argparse.Namespace) -> None:
    from benchmarks.artefact_sizes import artefact_bytes

    work, products = args.work, args.products
    catalogue = catalogue_file(work, products)
    out, cache = work / f"build-{products}", work / "cache"
    if args.cold:  # a cache of this build's own, empty: every title is embedded
        cache = work / f"cache-cold-{products}"
        if not (args.built or args.figures_from):  # (a build run before filled it)
            shutil.rmtree(cache, ignore_errors=True)
    if args.figures_from:  # this build's earlier phase file: its figures, today's artefacts
        earlier = json.loads(args.figures_from.read_text())
        first = earlier["build"] | {"figures_from": str(args.figures_from)}
        args.cold, cache = earlier["cold"], Path(earlier["cache"])
    elif args.built:  # a build run before, as build_command runs it (its log and --out)
        first = build_figures(out, args.built) | {"log": str(args.built)}
        # An interrupted build's earlier runs (LOG's stem + "-partN.log"), resumed by this one
        # from the embedding cache: their time counts too.
        parts = sorted(args.built.parent.glob(f"{args.built.stem}-part*.log"))
        if parts:
            first["seconds"] = round(first["seconds"] + sum(
                wall_seconds(p.read_text(errors="replace")) for p in parts), 1)
            first["resumed_after"] = [str(p) for p in parts]
            args.cold = True  # the first run started from an empty cache
    else:
        first = timed_build(catalogue, out, cache, work / f"build-{products}.log")
    sizes = artefact_bytes(out)
    record = out / "artefacts" / "index" / "ann.json"  # the ANN index served now, if any
    save_phase(work, "build", products, {
        "products": products, "cold": args.cold, "cache": str(cache), "build": first,
        "ann_index": json.loads(record.read_text()) if record.is_file() else None,
        "artefact_bytes": sizes,
        "bytes_per_product": {name: round(size / products, 1) for name, size in sizes.items()}})


def run_change(args: argparse.Namespace) -> None:
    """The build again, over a copy of WORK/build-N, after 1 % of the titles changed."""
    work, products = args.work, args.products
    built = json.loads((work / f"build-{products}.json").read_text())
    out = work / f"rebuild-{products}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(work / f"build-{products}", out, copy_function=os.link, symlinks=True)
    # (A build phase file from before "cache" was recorded: the cache it chose by --cold.)
    cache = Path(built.get("cache") or work / (f"cache-cold-{products}" if built["cold"]
                                               else "cache"))
    change = timed_build(changed_catalogue(catalogue_file(work, products)), out, cache,
                         work / f"rebuild-{products}.log")
    save_phase(work, "change", products, {"products": products, "rebuild_after_change": change,
                                          "changed_share": CHANGED})


def run_serve(args: argparse.Namespace) -> None:
    from benchmarks.search_benchmark import load_levels, perf_analyzer_input
    from fusionrank.app.serve import TritonServer

    repository = args.work / f"build-{args.products}" / "model_repository"
    phase = "serve"
    if args.one_ranker:
        repository, phase = one_ranker_repository(args.work / f"build-{args.products}"), \
            "serve-one-ranker"
    queries = benchmark_queries(args.queries)
    warmed = warm_page_cache(repository)
    with tempfile.TemporaryDirectory() as tmp:
        data = perf_analyzer_input(queries, Path(tmp) / "queries.json")
        started = time.perf_counter()
        with (args.work / f"serve-{args.products}.log").open("w") as log, \
                TritonServer(repository, log=log, cache_mib=0) as server:
            ready_seconds = time.perf_counter() - started
            ready = process_memory_mib(server.process.pid)
            peak = PeakMemoryShares(server.process.pid)
            peak.start()
            results = load_levels(server, data, [1, 8], args.seconds, "distinct")
            resident = resident_by_file(server.process.pid)  # as the load leaves it
            peak.stop()
    save_phase(args.work, phase, args.products, {
        "products": args.products, "queries": len(queries), "repository": str(repository),
        "ready_seconds": round(ready_seconds, 1), "page_cache_warmed_mib": warmed,
        "memory_ready_mib": ready, "memory_peak_mib": peak.peak,
        "resident_by_file_after_load": resident,
        "load": [vars(r) for r in results], "load_average_after": load_average()})


def run_compare(args: argparse.Namespace) -> None:
    from benchmarks.search_benchmark import load_levels, perf_analyzer_input
    from fusionrank.app.serve import TritonServer

    sizes = (args.against, args.products)
    queries = benchmark_queries(args.queries)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        data = perf_analyzer_input(queries, Path(tmp) / "queries.json")
        servers, peaks = {}, {}
        for products in sizes:
            repository = args.work / f"build-{products}" / "model_repository"
            warm_page_cache(repository)
            log = stack.enter_context((args.work / f"compare-{products}.log").open("w"))
            servers[products] = stack.enter_context(TritonServer(repository, log=log,
                                                                 cache_mib=0))
            peaks[products] = PeakMemoryShares(servers[products].process.pid)
            peaks[products].start()
        rounds = []
        for number in range(args.rounds):
            order = sizes if number % 2 == 0 else sizes[::-1]
            rounds.append({"order": list(order), "load": {
                str(n): [vars(r) for r in load_levels(servers[n], data, [1, 8], args.seconds,
                                                      "distinct")] for n in order}})
        for peak in peaks.values():
            peak.stop()
    save_phase(args.work, "compare", args.products, {
        "products": args.products, "against": args.against, "queries": len(queries),
        "seconds": args.seconds, "rounds": rounds,
        "memory_peak_mib": {str(n): peak.peak for n, peak in peaks.items()},
        "load_average_after": load_average()})


def warm_page_cache(repository: Path) -> int:
    """Read every file the repository serves (through its links) once, so each size is
    measured with its artefacts in the page cache, as on a server that has been up a while:
    without it the first size served after other work reads its files from disk under load
    (a 1M run so measured had 1.4x the p50 of the 1M run after it). Reading fills the page
    cache only: no process maps a page of it, so the RSS figures are unchanged. MiB read."""
    read = 0
    for path in sorted(repository.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                while chunk := handle.read(8 << 20):
                    read += len(chunk)
    return read >> 20


def one_ranker_repository(build: Path) -> Path:
    """The build's artefacts served as `fusionrank build --layout two --encoder-instances 2
    --ranker-instances 1 --ranker-threads 2` would serve them: one process maps the
    catalogue's files (written beside the build's own repository, which stays as it is)."""
    from fusionrank.model_repository.search.ensemble import (
        SearchArtefacts,
        ServingOptions,
        search_ensemble,
    )

    served = json.loads((build / "model_repository" / "fusionrank.json").read_text())
    repository = build / "model_repository-one-ranker"
    shutil.rmtree(repository, ignore_errors=True)
    files = SearchArtefacts(build / "artefacts" / "encoder", build / "artefacts" / "index",
                            build / "artefacts" / "ranking")
    options = ServingOptions(layout="two", encoder_instances=2, ranker_instances=1,
                             ranker_threads=2)
    search_ensemble(files, options).export(repository, int(served["version"]))
    return repository


def save_phase(work: Path, phase: str, products: int, figures: dict) -> None:
    path = work / f"{phase}-{products}.json"
    path.write_text(json.dumps(stamp() | figures, indent=1) + "\n")
    print(f"{phase} figures for {products} products in {path}", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    phases = parser.add_subparsers(dest="phase", required=True)
    for name in ("build", "change", "serve", "compare"):
        phase = phases.add_parser(name)
        phase.add_argument("--products", type=int, required=True)
        phase.add_argument("--work", type=Path, default=WORK)
        if name == "build":
            phase.add_argument("--cold", action="store_true",
                               help="a new, empty embedding cache: embed every title")
            phase.add_argument("--built", type=Path, metavar="LOG",
                               help="the first build ran before (into WORK/build-N, as "
                                    "build_command runs it; with --cold, with the cache "
                                    "WORK/cache-cold-N): read its figures from its log")
            phase.add_argument("--figures-from", type=Path, metavar="PHASE_JSON",
                               help="the build's figures from an earlier phase file of this "
                                    "build (its cold run), the artefact bytes from WORK/build-N "
                                    "as it is now: after a rebuild in place that changed only "
                                    "its ANN index")
        if name in ("serve", "compare"):
            phase.add_argument("--seconds", type=float, default=20.0,
                               help="perf_analyzer's measurement window")
            phase.add_argument("--queries", type=int, default=QUERIES)
        if name == "compare":
            phase.add_argument("--against", type=int, default=SIZES[0],
                               help="the size the targets' ratios divide by")
            phase.add_argument("--rounds", type=int, default=5)
        elif name == "serve":
            phase.add_argument("--one-ranker", action="store_true",
                               help="serve the build as --layout two with one ranker copy of "
                                    "two threads (WORK/serve-one-ranker-N.json)")
    report = phases.add_parser("report")
    report.add_argument("--work", type=Path, default=WORK)
    report.add_argument("--quality", type=Path, required=True,
                        help="the JSON of `fusionrank evaluate --scale` over the same builds")
    report.add_argument("--note", action="append", default=[],
                        help="a line for the report's notes (how a figure was taken)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.phase == "build":
        run_build(args)
    elif args.phase == "change":
        run_change(args)
    elif args.phase == "serve":
        run_serve(args)
    elif args.phase == "compare":
        run_compare(args)
    else:
        from benchmarks.scale_report import write_scale_report

        write_scale_report(args.work, args.quality, SIZES, args.note)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_MININTERVAL", "5")
    raise SystemExit(main())
