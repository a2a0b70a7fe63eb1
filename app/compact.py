"""`fusionrank catalogue compact`: fold a live catalogue's segments into a new base, rolled out
with the existing deploy (docs/live_catalogue.md).

    fusionrank catalogue compact --repository build/model_repository --url 127.0.0.1:8001

1. gather: the live products of the published state, in row order, with the vectors the state
   serves (core/live/compaction.py), through the last applied change set N;
2. build: the served build again (its run, encoder and serving options, read from the
   repository's fusionrank.json) over those products, into `--out`, with an embedding cache
   seeded with their vectors (nothing is embedded again) and the base marked as holding the
   sets through N (`LiveBase.through`);
3. deploy: the changed models (the search steps, the catalogue model) rolled out as
   `fusionrank deploy` does. While both bases are loaded they serve the same catalogue from
   the same state: the old one its segments from 1, the new one those after N; sets applied
   meanwhile are served by both;
4. prune: once the old base is unloaded, the segments and log records through N go.

Sets keep arriving throughout: a compaction never stops the writer for longer than one prune.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusionrank.app import build, staging
from fusionrank.app.deploy.plan import only_version
from fusionrank.app.deploy.rollout import DRAIN_S, deploy
from fusionrank.core import artefacts as names
from fusionrank.core.catalogue import catalogue_from_records
from fusionrank.core.live.compaction import ServedCatalogue, served_catalogue
from fusionrank.core.live.segments import LIVE_FOLDER, LiveBase, LiveFolder
from fusionrank.core.product_table import ProductTable
from fusionrank.core.search.contract import CATALOGUE_MODEL
from fusionrank.export.embedding_cache import EmbeddingCache, title_keys
from fusionrank.model_repository.search.ensemble import ServingOptions


@dataclass
class Compaction:
    """One compaction, as `fusionrank catalogue compact` reports it."""

    through: int  # the last change set the new base holds
    products: int  # in the new base
    rows_before: int  # the old base's rows and its segments', dead ones included
    segments_folded: int
    titles_embedded: int  # by the build (0 where the seeded cache had every title)
    outcome: str  # the rollout's: switched, refused or unchanged
    reason: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # per phase, and total
    peak_rss_mib: float = 0.0  # of this process (the build's)

    def summary(self) -> str:
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        why = f": {self.reason}" if self.reason else ""
        return (f"compaction through change set {self.through} {self.outcome}{why}: "
                f"{self.rows_before:,} rows ({self.segments_folded} segments) → "
                f"{self.products:,} products, {self.titles_embedded} titles embedded; {phases}; "
                f"peak memory {self.peak_rss_mib:,.0f} MiB")


@dataclass(frozen=True)
class CompactedBuild:
    """A new base built over a live catalogue's products (not rolled out yet)."""

    repository: Path  # its model repository, in --out
    gathered: ServedCatalogue
    base: LiveBase  # the base it replaces
    manifest: dict  # its fusionrank.json
    seconds: dict[str, float]  # gather, build


def served_depth(served: dict) -> int | str:
    """The cascade depth the served build ranks with ("off": none), so the compacted base
    ranks as it did whatever the run's tuning says since."""
    cascade = (served.get("ranking") or {}).get("cascade")
    return cascade["depth"] if cascade else "off"


def build_compacted(repository: Path, out: Path) -> CompactedBuild:
    """Steps 1 and 2: the live products of the state `repository` serves, built again as the
    served build was into `out`. The FAISS index of a large catalogue is updated from the last
    compaction's (or, the first time, the served build's) rather than built whole: the
    products that did not change keep their vectors, so their entries are carried."""
    repository = Path(repository).resolve()
    started = time.monotonic()
    served = json.loads((repository / names.REPOSITORY_MANIFEST).read_text())
    if not served.get("serving", {}).get("live_catalogue"):
        raise build.BuildError(f"{repository} does not serve a live catalogue (build it with "
                               "--live-catalogue)")
    folder = repository / CATALOGUE_MODEL
    folder = folder / str(only_version(folder))
    base = LiveBase.read(folder / names.LIVE_BASE)
    table = ProductTable.open(folder / names.PRODUCTS)
    vectors = names.load_array(folder / names.EMBEDDINGS, shape=(len(table), None), mmap=True)
    gathered = served_catalogue(LiveFolder(repository.parent / LIVE_FOLDER), base, table,
                                vectors)
    catalogue, _ = catalogue_from_records(gathered.products,
                                          f"live catalogue through set {gathered.through}")
    gathered_at = time.monotonic()
    options = ServingOptions(**served["serving"])
    run = (served.get("training_run") or {}).get("run")
    student = (served.get("query_encoder") or {}).get("source")
    index = out / "artefacts" / "index"
    previous = index if index.is_dir() else repository.parent / "artefacts" / "index"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="compaction-cache-", dir=out.parent) as cache:
        keys, first = np.unique(title_keys(catalogue.titles), return_index=True)
        EmbeddingCache(cache, base.encoder).add(keys, gathered.vectors[first])
        with staging.staged_output(out) as staged:
            new = build.build_search_repository(
                catalogue, Path(served["encoder"]["source"]), staged, options,
                run_dir=Path(run) if run else None,
                student_dir=Path(student) if student else None, final_out=out,
                embedding_cache=Path(cache), live_through=gathered.through,
                previous_index=previous, cascade_depth=served_depth(served))
            built = json.loads((new / names.REPOSITORY_MANIFEST).read_text())
            if built["encoder"]["onnx_sha256"] != base.encoder:
                raise build.BuildError(
                    f"the served run's encoder ({served['encoder']['source']}) no longer "
                    "exports to the encoder that embedded the catalogue: a compaction keeps "
                    "the encoder; build and deploy a new one instead")
    return CompactedBuild(out / new.name, gathered, base, built,
                          {"gather": round(gathered_at - started, 2),
                           "build": round(time.monotonic() - gathered_at, 2)})


def compact(url: str, repository: Path, out: Path, drain_s: float = DRAIN_S,
            control_key: str | None = None) -> Compaction:
    """All four steps, on the server at `url` serving `repository`."""
    started = time.monotonic()
    seconds: dict[str, float] = {}

    def lap(phase: str) -> None:
        seconds[phase] = round(time.monotonic() - started - sum(seconds.values()), 2)

    built = build_compacted(repository, out)
    seconds.update(built.seconds)
    record = deploy(url, repository, built.repository, drain_s, control_key)
    lap("deploy")
    through = built.gathered.through
    if record.outcome == "switched":
        LiveFolder(Path(repository).resolve().parent / LIVE_FOLDER).prune(through)
        lap("prune")
    seconds["total"] = round(time.monotonic() - started, 2)
    return Compaction(through, len(built.gathered.products), built.gathered.rows,
                      through - built.base.through, built.manifest["index"]["titles_embedded"],
                      record.outcome, record.reason, seconds,
                      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def default_out(repository: Path) -> Path:
    """Beside the served build: <build>-compacted (replaced whole by each compaction)."""
    build_folder = Path(repository).resolve().parent
    return build_folder.with_name(build_folder.name + "-compacted")
