"""`fusionrank build`: export, index and write a Triton model repository serving every feature.

    build/
      artefacts/encoder/   encoder.onnx (+ encoder.int8.onnx), tokenizer.json
      artefacts/index/     embeddings.npy, products.jsonl, manifest.json, retrieval.onnx
                           (+ retrieval.int8.onnx)
      artefacts/ranking/   a trained run's search files, aligned with the catalogue
      model_repository/    search (+ recommend, sentiment) ensembles and their steps,
                           fusionrank.json (what is served, from what, built when)

`fusionrank build` writes all of it into a fresh folder beside --out and switches that in
whole once complete (app/staging.py): a server deployed from the old --out keeps its
files, and a failed build leaves the old --out as it was.

`--device gpu` writes the search ensemble for Triton's GPU container instead (its graphs on
the onnxruntime / tensorrt backends: model_repository/search/ensemble.py); recommend and
sentiment stay Python-backend models on the CPU.

The app layer: the only one that imports every other (training and export make the artefacts,
model_repository declares the models that serve them).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from fusionrank.core import artefacts as names
from fusionrank.core.catalogue import Catalogue
from fusionrank.core.fusion import FusionWeights
from fusionrank.core.live.segments import LiveBase
from fusionrank.core.search.ann import EXACT_BELOW
from fusionrank.export.encoder import ExportedEncoder
from fusionrank.export.index import build_index, load_embeddings
from fusionrank.export.quantize import quantise_encoder
from fusionrank.export.ray_embedding import RayOptions
from fusionrank.export.search.ann import AnnParams, build_ann_index, update_ann_index
from fusionrank.export.search.retrieval import int8_retrieval_graph, retrieval_graph
from fusionrank.model_repository.ensemble import Ensemble
from fusionrank.model_repository.recommend.ensemble import recommend_ensemble
from fusionrank.model_repository.search.ensemble import (
    SearchArtefacts,
    ServingOptions,
    catalogue_model,
    search_ensemble,
)
from fusionrank.model_repository.sentiment.ensemble import sentiment_ensemble
from fusionrank.training.encoder import export_model_folder

PARITY_TEXTS = 256
RUNS = Path("runs")
DEFAULT_RUN = RUNS / "relevance"
SHORT_RUN_STEPS = 60


class BuildError(Exception):
    """A build that cannot go on, for a reason the user can fix (printed as one line)."""


def build_search_repository(catalogue: Catalogue, model_dir: Path, out_dir: Path,
                            options: ServingOptions | None = None,
                            run_dir: Path | None = None,
                            student_dir: Path | None = None,
                            final_out: Path | None = None,
                            embedding_cache: Path | None = None,
                            live_through: int = 0,
                            previous_index: Path | None = None,
                            cascade_depth: int | str = "auto",
                            ray: RayOptions | None = None,
                            reranker: RerankerChoice | None = None) -> Path:
    """Export the encoder, embed the catalogue and write the model repository; returns it.
    With `run_dir` (a finished `fusionrank train` run) its fine-tuned encoder, BM25 candidates,
    feedback head and fusion weights are served; `model_dir` is then ignored. With
    `student_dir` (a `fusionrank distil` student of that run's encoder) the student encodes the
    queries while the index keeps the run's encoder's embeddings (artefacts/query_encoder/).

    `final_out`: where `out_dir`, a staging folder (`staged_output`), will be switched in
    (default: `out_dir` itself, built in place). The build there before is what this one
    reuses (its catalogue embeddings, where the encoder and the titles are the same) and numbers
    its version above, and the manifest names the files where they will be.

    `embedding_cache`: where each title's embedding is kept by its text and encoder, so a build
    embeds only the titles no earlier build embedded (and an interrupted one resumes); None: a
    temporary one (`fusionrank build` passes cli.EMBEDDING_CACHE).

    `live_through`: with a live catalogue, the last change set `catalogue` already holds (a
    compaction's, app/compact.py; 0: none). `previous_index`: the index folder of the build
    this one follows, where it is not the one at `final_out` (a compaction's first).

    `cascade_depth` (with `run_dir`): rank in a cascade whose feedback head scores each pool's
    top N by the hybrid score, with the weights `fusionrank tune-cascade` fitted for N on the
    run (`served_ranking`); "off" (or the pool's size) ranks the whole pool by S, as before;
    "auto" serves the depth the run's tuning chose, or the whole pool where it was never
    tuned.

    `ray`: embed the catalogue's new titles on a Ray cluster (export/ray_embedding.py) rather
    than in this process; the embeddings are the same.

    `reranker` (with `run_dir`): a cross-encoder (`fusionrank train-reranker`) reranks the
    fused top N as the last stage, with the weight `fusionrank evaluate --reranker` fitted for
    it on dev (artefacts/reranker/; `export_served_reranker`)."""
    from fusionrank.training.search.serving import search_artefacts

    options = options or ServingOptions()
    out_dir = Path(out_dir)
    final_out = out_dir if final_out is None else Path(final_out)

    def final(path: Path) -> Path:  # where a file of out_dir will be once switched in
        return final_out / path.relative_to(out_dir)

    if student_dir is not None and run_dir is None:
        raise BuildError("a student query encoder needs the trained run it was distilled from")
    ranking = None if run_dir is None else served_ranking(Path(run_dir), cascade_depth,
                                                          options.pool)
    if reranker is not None and run_dir is None:
        raise BuildError("a reranker reranks a trained run's fused ranking: it needs --run")
    files = SearchArtefacts(out_dir / "artefacts" / "encoder", out_dir / "artefacts" / "index",
                            out_dir / "artefacts" / "ranking" if run_dir is not None else None,
                            out_dir / "artefacts" / "query_encoder" if student_dir else None,
                            out_dir / "artefacts" / "reranker" if reranker else None)
    reranked = None if reranker is None else export_served_reranker(
        reranker, Path(run_dir), ranking, options, files.reranker,
        catalogue.titles[:PARITY_TEXTS])
    if run_dir is not None:
        model_dir = Path(run_dir) / "encoder" / "best"
    encoder = export_model_folder(model_dir, files.encoder, catalogue.titles[:PARITY_TEXTS])
    queries = encoder if student_dir is None else export_student(
        Path(student_dir), model_dir, encoder, files.queries, catalogue.titles[:PARITY_TEXTS])
    quantised = None
    if options.precision == "int8" and options.device == "cpu":  # TensorRT runs the FP32 graph
        quantised = quantise_encoder(queries.onnx_path, queries.tokenizer_path,
                                     files.queries / names.ENCODER_INT8,
                                     catalogue.titles[:PARITY_TEXTS])
    previous = previous_index or final(files.index)
    index = build_index(catalogue, encoder, files.index, previous=previous,
                        cache=embedding_cache, ray=ray)
    embeddings = load_embeddings(files.index)
    retrieval = build_retrieval(embeddings, files.index, options, quantised is not None,
                                previous=previous)
    FusionWeights().save(files.index / names.FUSION_WEIGHTS)
    if options.live_catalogue:
        LiveBase(live_through, encoder.sha256).write(files.index / names.LIVE_BASE)
    if files.run is not None:
        search_artefacts(run_dir, catalogue, files.run, embeddings, ranking)

    repository = out_dir / "model_repository"
    built = datetime.now(UTC)
    # Every model of a build gets the build's own version number (its time in seconds, above
    # any earlier build's here): Triton keys cached answers on (model, version, inputs), so no
    # later build, loaded beside or instead of this one, is answered from this one's cache.
    version = max(int(built.timestamp()), previous_version(final(repository)) + 1)
    if repository.exists():
        shutil.rmtree(repository)  # a stale model left from another build would be served
    repository.mkdir(parents=True)
    search_ensemble(files, options).export(repository, version)
    if options.live_catalogue:
        catalogue_model(files).export(repository, version)
    int8 = asdict(quantised) | {"onnx_path": str(final(quantised.onnx_path))} if quantised else None
    served = {
        "built_at": built.isoformat(timespec="seconds"),
        "version": version,
        "encoder": {"source": encoder.source, "onnx_sha256": encoder.sha256,
                    "parity_min_cosine": encoder.min_cosine,
                    "int8": int8 if student_dir is None else None},
        # The student that encodes the queries (None: the encoder above does).
        "query_encoder": None if student_dir is None else {
            "source": queries.source, "onnx_sha256": queries.sha256,
            "parity_min_cosine": queries.min_cosine, "int8": int8,
            "distillation": json.loads((Path(student_dir) / "checkpoint.json").read_text())},
        "training_run": run_provenance(Path(run_dir)) if run_dir is not None else None,
        "index": asdict(index) | {"embeddings": str(final(files.index / names.EMBEDDINGS))},
        "retrieval": retrieval | ({"ann": retrieval["ann"] | {
            "path": str(final(Path(retrieval["ann"]["path"])))}} if "ann" in retrieval else {}),
        "ranking": asdict(FusionWeights.load(files.weights)),
        "reranker": reranked,
        "serving": asdict(options),
    }
    (repository / names.REPOSITORY_MANIFEST).write_text(json.dumps(served, indent=2) + "\n")
    return repository


# What a build needs per product, measured on the 1M-product build (benchmarks/reports/scale.md):
# disk for the build folder (3.4 GB: embeddings 1,536 B, the float16 ANN index 1,040 B, title
# features, BM25, products; the model repository hard-links them) and the embedding cache (a
# float32 vector and its key); memory at the build's peak (11.3 GB at 1M), rounded up.
DISK_BYTES_PER_PRODUCT = 3_500
CACHE_BYTES_PER_PRODUCT = 1_560
BUILD_MEMORY_BYTES_PER_PRODUCT = 10_000
BUILD_MEMORY_BASE = 2 * 2**30  # the encoder, its export and parity check, the run's files


@dataclass(frozen=True)
class Capacity:
    """What a catalogue's build would take, against what the machine has."""

    products: int
    disk_needed: int
    disk_free: int
    memory_needed: int
    memory_available: int

    @classmethod
    def of(cls, products: int, out: Path) -> Capacity:
        import psutil

        existing = next(p for p in (out, *out.parents) if p.exists())
        return cls(products,
                   products * (DISK_BYTES_PER_PRODUCT + CACHE_BYTES_PER_PRODUCT),
                   shutil.disk_usage(existing).free,
                   BUILD_MEMORY_BASE + products * BUILD_MEMORY_BYTES_PER_PRODUCT,
                   psutil.virtual_memory().available)

    def problem(self) -> str | None:
        """Why the build cannot fit here, with the estimate; None if it fits."""
        for what, needed, has in (("disk", self.disk_needed, self.disk_free),
                                  ("memory", self.memory_needed, self.memory_available)):
            if needed > has:
                return (f"a catalogue of {self.products:,} products needs about "
                        f"{needed / 2**30:,.1f} GiB of {what} to build (measured per product: "
                        f"benchmarks/reports/scale.md), and {has / 2**30:,.1f} GiB is free")
        return None


def served_ranking(run_dir: Path, depth: int | str, pool: int) -> FusionWeights:
    """The fusion weights a build serves for `--cascade-depth` (see build_search_repository):
    a depth outside 1..pool is refused, naming the range."""
    from fusionrank.training.search.cascade import cascade_weights, chosen_depth

    if depth == "auto":
        depth = chosen_depth(run_dir) or "off"
    if depth == "off":
        return FusionWeights.load(run_dir / names.FUSION_WEIGHTS)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= pool:
        raise BuildError(f"--cascade-depth must be between 1 and {pool} (the pool each query's "
                         f"candidates fill), or off or auto, not {depth!r}")
    try:
        return cascade_weights(run_dir, depth)
    except (FileNotFoundError, ValueError) as error:
        raise BuildError(str(error)) from error


@dataclass(frozen=True)
class RerankerChoice:
    """`fusionrank build --reranker PATH --reranker-depth N [--reranker-precision P]`."""

    checkpoint: Path  # a `train-reranker` folder or its best/
    depth: int
    precision: str | None = None  # None: the build's precision (FP32 on the GPU)


def chosen_reranker(run_dir: Path, device: str, precision: str | None = None
                    ) -> RerankerChoice | None:
    """`--reranker auto`: the configuration benchmarks/reranker.py chose for the device by the
    stated rule (RUN/reranker/choice.json); None where the run has no choice or the rule chose
    none."""
    path = Path(run_dir) / "reranker" / "choice.json"
    if not path.is_file():
        return None
    chosen = json.loads(path.read_text()).get(device)
    if chosen is None:
        print(f"reranker: off ({path} chooses none for {device})", file=sys.stderr)
        return None
    return RerankerChoice(Path(chosen["checkpoint"]), int(chosen["depth"]),
                          precision or chosen["precision"])


def chosen_student(run_dir: Path) -> Path | None:
    """`--student auto`: the student `fusionrank evaluate --student` chose to serve by its rule
    (RUN/student/choice.json, training/search/evaluate.py `student_choice`), where it was
    distilled from the run's encoder as it is now; None otherwise: the teacher encodes the
    queries."""
    from fusionrank.training.embeddings import weights_digest
    from fusionrank.training.search.evaluate import STUDENT_CHOICE

    path = Path(run_dir) / "student" / STUDENT_CHOICE
    if not path.is_file():
        return None
    choice = json.loads(path.read_text())
    if not choice["serve"]:
        print(f"student: off ({path}: {choice['rule']} does not hold)", file=sys.stderr)
        return None
    if choice["teacher_weights"] != weights_digest(Path(run_dir) / "encoder" / "best"):
        print(f"student: off ({path} chose a student of other weights than the run's encoder: "
              f"`fusionrank distil` and `fusionrank evaluate --student` again)", file=sys.stderr)
        return None
    student = path.parent / choice["checkpoint"]
    print(f"student: {student} encodes the queries ({path})", file=sys.stderr)
    return student


def export_served_reranker(choice: RerankerChoice, run_dir: Path, ranking: FusionWeights,
                           options: ServingOptions, out: Path, titles: list[str]) -> dict:
    """The reranker's served files in `out`: its graph (RERANKER, FP32 or INT8, parity-checked),
    its tokenizer and RERANKER_SPEC (depth, the weight fitted on dev). Refused with a clear
    message: a checkpoint whose tokenizer does not match its model (both named), a depth
    outside the served cascade's head or the pool, a depth with no weight fitted."""
    from fusionrank.core.search.reranker import RerankerSpec
    from fusionrank.export.search.reranker import export_reranker
    from fusionrank.training.cross_encoder import CrossEncoder, check_tokenizer_matches
    from fusionrank.training.search.rerank_evaluation import RerankerCheckpoint, fitted_weight

    try:
        checkpoint = RerankerCheckpoint.open(choice.checkpoint)
    except FileNotFoundError as error:
        raise BuildError(str(error)) from None
    head = ranking.cascade.depth if ranking.cascades(options.pool) else options.pool
    if not 1 <= choice.depth <= head:
        where = "the served cascade's head (the products S scores)" if head < options.pool \
            else "the pool"
        raise BuildError(f"--reranker-depth must be between 1 and {head}, {where}, not "
                         f"{choice.depth}")
    precision = choice.precision or ("fp32" if options.device == "gpu" else options.precision)
    try:
        weight = fitted_weight(checkpoint, run_dir, precision, choice.depth)
        model, tokenizer = CrossEncoder.load(checkpoint.folder), checkpoint.tokenizer()
        check_tokenizer_matches(model, tokenizer, str(checkpoint.folder),
                                str(checkpoint.folder / names.TOKENIZER))
    except ValueError as error:
        raise BuildError(str(error)) from None
    # Parity pairs: each title with a query of its own first words, and of another's.
    queries = [" ".join(t.split()[:2]) for t in titles]
    check = (queries + queries, list(titles) + list(titles[1:]) + list(titles[:1]))
    exported = export_reranker(model, tokenizer, checkpoint.folder / names.TOKENIZER, out,
                               check, int8=precision == "int8")
    if precision == "int8":  # the step loads RERANKER: the INT8 graph takes its name
        exported.int8.replace(exported.fp32)
    grouped = None
    if options.device == "gpu":  # a native model: a query's N pairs are one batch item
        from fusionrank.export.search.reranker import export_grouped_reranker

        grouped = export_grouped_reranker(model, tokenizer, out / names.RERANKER_GROUPED,
                                          check, choice.depth)
    spec = RerankerSpec(checkpoint.record["max_query_tokens"], checkpoint.record["max_tokens"],
                        choice.depth, weight, checkpoint.layers, precision,
                        str(checkpoint.folder))
    spec.save(out / names.RERANKER_SPEC)
    print(f"reranker: {checkpoint.layers} layers, {precision}, top {choice.depth}, "
          f"final = S + {weight} · logit", file=sys.stderr)
    return asdict(spec) | {"fp32_max_abs_diff": exported.fp32_max_abs_diff,
                           "int8_max_abs_diff": exported.int8_max_abs_diff,
                           "int8_spearman": exported.int8_spearman,
                           "grouped_max_abs_diff": grouped}


def check_capacity(products: int, out: Path) -> None:
    """Refuse, before any work, a catalogue too large for this machine's disk or memory."""
    problem = Capacity.of(products, Path(out).resolve()).problem()
    if problem:
        raise BuildError(problem)


def retrieval_kind(products: int, options: ServingOptions) -> str:
    """"exact" or "ann": as asked, or by the catalogue's size against EXACT_BELOW."""
    if options.device == "gpu" or options.retrieval == "exact":
        return "exact"
    if options.retrieval == "ann" or products >= EXACT_BELOW:
        return "ann"
    return "exact"


def build_retrieval(embeddings, folder: Path, options: ServingOptions, int8: bool,
                    previous: Path | None = None) -> dict:
    """The retrieval step's index in `folder`: a FAISS index for a large catalogue (the one in
    `previous`, the last build's index folder, updated where it can be), else the exact ONNX
    graphs; what was built, for the repository's manifest (and said on stderr)."""
    products = len(embeddings)
    kind = retrieval_kind(products, options)
    chosen = {"kind": kind, "products": products, "exact_below": EXACT_BELOW,
              "asked": options.retrieval}
    if kind == "ann":
        path = folder / names.ANN_INDEX
        report = (update_ann_index(previous, embeddings, path) if previous is not None
                  else None) or build_ann_index(embeddings, path, AnnParams())
        setting = (f"efSearch {report.params['ef_search']}" if "HNSW" in report.factory
                   else f"nprobe {report.params['nprobe']}")
        how = (f"built in {report.build_seconds:.0f} s" if report.carried is None else
               f"updated in {report.build_seconds:.0f} s: {report.carried:,} entries kept, "
               f"{report.added:,} added, {report.stale:,} stale")
        print(f"retrieval: approximate, FAISS {report.factory} ({setting}), {products:,} "
              f"products (exact below {EXACT_BELOW:,}); index {how}", file=sys.stderr)
        return chosen | {"ann": report.to_json()}
    print(f"retrieval: exact, {products:,} products (ANN from {EXACT_BELOW:,})",
          file=sys.stderr)
    retrieval_graph(embeddings, folder / names.RETRIEVAL)
    if int8:
        int8_retrieval_graph(embeddings, folder / names.RETRIEVAL_INT8)
    if options.device == "gpu":  # a native model: K is a constant of the graph
        retrieval_graph(embeddings, folder / names.RETRIEVAL_FIXED_K,
                        k=min(options.candidates, products))
    return chosen


def export_student(student_dir: Path, teacher_dir: Path, teacher: ExportedEncoder,
                   out_dir: Path, check_texts: list[str]) -> ExportedEncoder:
    """The student query encoder exported to ONNX (parity-checked), after checking it belongs
    with the teacher that embeds the catalogue: distilled from these very weights, the same
    tokenizer, the same embedding size."""
    from fusionrank.core.encoding import OnnxEncoder
    from fusionrank.training.embeddings import weights_digest

    manifest = student_dir / "checkpoint.json"
    if not manifest.is_file():
        raise BuildError(f"--student {student_dir} is not a `fusionrank distil` checkpoint "
                         "(no checkpoint.json)")
    distilled_from = json.loads(manifest.read_text()).get("teacher_weights")
    if distilled_from != weights_digest(teacher_dir):
        raise BuildError(f"--student {student_dir} was distilled from other weights than the "
                         f"served encoder {teacher_dir}: distil it from this run")
    student = export_model_folder(student_dir, out_dir, check_texts)
    if student.tokenizer_path.read_bytes() != teacher.tokenizer_path.read_bytes():
        raise BuildError(f"--student {student_dir} tokenises differently from {teacher_dir}")
    sizes = OnnxEncoder(student.onnx_path).dimension, OnnxEncoder(teacher.onnx_path).dimension
    if sizes[0] != sizes[1]:
        raise BuildError(f"--student {student_dir} embeds {sizes[0]}-d queries, the catalogue "
                         f"is embedded in {sizes[1]}-d")
    return student


def previous_version(repository: Path) -> int:
    """The version an earlier build wrote into `repository` (0 if none)."""
    try:
        return int(json.loads((repository / names.REPOSITORY_MANIFEST).read_text())["version"])
    except (OSError, ValueError, KeyError):
        return 0


def run_provenance(run_dir: Path) -> dict:
    """Which checkpoint, trained on which data, the repository serves."""
    run = json.loads((run_dir / names.RUN_MANIFEST).read_text())
    checkpoint = run_dir / "encoder" / "best" / "checkpoint.json"
    return {"run": str(run_dir.resolve()), "data_file": run.get("data_file"),
            "data_sha256": run.get("data_sha256"),
            "checkpoint": json.loads(checkpoint.read_text()) if checkpoint.is_file() else None}


def add_ensemble(repository: Path, ensemble: Ensemble, provenance: dict) -> None:
    """Export another ensemble (recommend, sentiment) into a built repository and record what
    it serves in the repository's manifest."""
    manifest_path = repository / names.REPOSITORY_MANIFEST
    served = json.loads(manifest_path.read_text())
    ensemble.export(repository, served["version"])
    served.setdefault("ensembles", {})[ensemble.name] = provenance
    manifest_path.write_text(json.dumps(served, indent=2) + "\n")


def newest_run() -> Path | None:
    """The most recently finished `fusionrank train` run under runs/."""
    finished = sorted(RUNS.glob(f"*/{names.RUN_MANIFEST}"), key=lambda p: p.stat().st_mtime)
    return finished[-1].parent if finished else None


def train_default_run() -> Path:
    from fusionrank.app.search import train_main

    print(f"no trained run under {RUNS}/: training a short default run ({SHORT_RUN_STEPS} "
          f"fine-tuning steps, about 5 minutes on 2 cores) into {DEFAULT_RUN} first; "
          "`fusionrank train` makes the full one", file=sys.stderr)
    if train_main(["--out", str(DEFAULT_RUN), "--max-steps", str(SHORT_RUN_STEPS)]) != 0:
        raise BuildError("the default training run failed")
    return DEFAULT_RUN


def add_sentiment_model(repository: Path, trained: Path) -> None:
    exported = trained / names.SENTIMENT_EXPORT
    if not exported.is_dir():
        print(f"no trained sentiment model in {trained}: the sentiment ensemble is left out "
              "(`fusionrank train-sentiment` trains one)", file=sys.stderr)
        return
    add_ensemble(repository, sentiment_ensemble(exported), {"artefacts": str(exported.resolve())})


def with_review_sentiment(catalogue: Catalogue, trained: Path, reviews: Path,
                          out: Path) -> Catalogue:
    """The catalogue with each product's review sentiment (by product id) as a feature."""
    from fusionrank.training.sentiment.products import (
        build_product_sentiment,
        load_product_sentiment,
    )

    if not (trained / names.SENTIMENT_EXPORT).is_dir():
        raise BuildError(f"--reviews needs a trained sentiment model in {trained}: "
                         "run `fusionrank train-sentiment` first")
    report = build_product_sentiment(trained / names.SENTIMENT_EXPORT, out, reviews)
    feature = load_product_sentiment(report.path)
    products = [replace(p, review_count=feature.review_count(p.product_id),
                        review_sentiment=feature.score(p.product_id)
                        if feature.review_count(p.product_id) else None)
                for p in catalogue]
    matched = sum(1 for p in products if p.review_count)
    print(f"review sentiment: {matched} of {len(products)} products have reviews in {reviews}",
          file=sys.stderr)
    return Catalogue(products, source=catalogue.source)


def add_recommender(repository: Path, trained: Path) -> None:
    from fusionrank.training.recommend.evaluate import run as train_recommender

    serving = trained / names.RECOMMEND_SERVING_LATEST
    if not serving.is_dir():
        print(f"no trained recommender in {trained}: training one now (a few minutes; "
              "`fusionrank train-recommender` does this on its own)", file=sys.stderr)
        train_recommender(trained, serve_latest=True)
    add_ensemble(repository, recommend_ensemble(serving), {"artefacts": str(serving.resolve())})
