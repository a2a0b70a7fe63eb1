"""The `search` ensemble: query text in, ranked products out.

    QUERY, K[, DETAIL] >> search_steps (Tokenize, EncodeQueries, Retrieve, ScoreCandidates,
                                        Rank)         ScoreCandidates: trained runs only
                       [>> reranker (PairTokenize, ScorePairs, Rerank)]   with --reranker

DETAIL (optional) names the outputs the answer carries; only Rank reads it (it skips what was
not asked for), and, as an input, it is part of the response cache's key.

One model running the steps of `steps.py` one after the other in one process
(`config.merged`), in two copies: a hop between Python-backend models costs a process
crossing and a queue, and two copies of the whole pipeline keep both cores of the measured
machine busy. `ServingOptions.layout` serves two models instead ("two": query_encoder =
Tokenize, EncodeQueries; ranker = Retrieve, ScoreCandidates, Rank) or one model per step
("steps"); the sweep in benchmarks/reports/search_sweep.md measures all three.

With `ServingOptions.device == "gpu"` (`fusionrank build --device gpu`), the graphs run
natively on the GPU and only text work stays in Python models (`gpu_search_ensemble`):

    QUERY, K >> tokenizer (Python, CPU: Tokenize, padded to MAX_QUERY_TOKENS)
             >> query_encoder (onnxruntime + TensorRT FP16, or a tensorrt_plan engine)
             >> retrieval (onnxruntime + TensorRT FP16: MatMul + TopK, K fixed)
             >> ranker (Python, CPU: ScoreCandidates, Rank)

Each Python model's tensors are the ones its step declares (`steps.py`); a native model's are
its graph's, declared here.

`SearchArtefacts` names the folders `fusionrank build` fills: the exported encoder, the
catalogue index and, for a trained run, the run's search files aligned with the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts as names
from fusionrank.core.contract import MAX_K, TensorSpec
from fusionrank.core.encoding import MAX_QUERY_TOKENS
from fusionrank.core.fusion import FusionWeights
from fusionrank.core.search.contract import (
    CATALOGUE_MODEL,
    EXPLAIN_OUTPUTS,
    SEARCH_INPUTS,
    SEARCH_MODEL,
    SEARCH_OUTPUTS,
)
from fusionrank.core.search.reranker import RerankerSpec
from fusionrank.core.search.runtime import LEXICAL_CANDIDATES
from fusionrank.model_repository.config import (
    ONNX_RUNTIME,
    TENSORRT_PLAN,
    NativeModel,
    PythonModel,
    ServedModel,
    TensorRTAccelerator,
    merged,
)
from fusionrank.model_repository.ensemble import Ensemble, Inputs
from fusionrank.model_repository.search import rerank_steps, steps
from fusionrank.model_repository.search.catalogue import ApplyChanges
from fusionrank.model_repository.step import StepContract

LAYOUTS = ("one", "two", "steps")  # ServingOptions.layout
SEARCH_STEPS = "search_steps"  # layout one's model: every step of the pipeline


@dataclass
class ServingOptions:
    """How the server runs the models: copies per model, batching delay, threads per copy."""

    encoder_instances: int = 1  # copies of query_encoder (tokenizer + encoder), layouts two, steps
    # Copies of the model that ranks: SEARCH_STEPS (layout one: every step) or ranker (layout
    # two: retrieval, candidates, features, feedback head, fusion): two use both cores of the
    # measured machine.
    ranker_instances: int = 2
    max_queue_delay_us: int = 0  # the sweep: waiting to fill a batch only adds latency here
    # Overload: with max_queue_size > 0 each model holds at most that many waiting requests
    # and refuses more at once (UNAVAILABLE "Exceeds maximum queue size": the SDK's
    # ServerOverloadedError), and with queue_timeout_ms > 0 refuses one that waited longer.
    # Off by default: at 64 callers on 2 cores a bound of 16 refused half the calls yet served
    # fewer queries with a worse p99 than no bound (benchmarks/reports/search_overload.md).
    max_queue_size: int = 0
    queue_timeout_ms: int = 0
    # ONNX Runtime threads per copy. With two copies on two cores, a second thread only waits
    # for the core the other copy computes on (the sweep: benchmarks/reports/search_sweep.md).
    onnx_threads: int = 1
    # Threads of the ranker model's ONNX sessions and FAISS search (layouts two and steps;
    # None: onnx_threads): one ranker copy can then use both cores while it alone maps the
    # catalogue's files.
    ranker_threads: int | None = None
    candidates: int = MAX_K
    lexical_candidates: int = LEXICAL_CANDIDATES  # BM25 candidates added (the fitted pool)
    # How the CPU pipeline's steps are grouped into Triton models (LAYOUTS): "one" (every step
    # in one model, SEARCH_STEPS, `ranker_instances` copies), "two" (the query_encoder and the
    # ranker) or "steps" (one model per step). Each hop between Python-backend models costs a
    # process crossing and a queue, so "one" is the default: search_sweep.md measures the
    # three side by side. Each copy of a model maps the catalogue's files: "two" with one
    # ranker copy of two threads (ranker_threads) keeps them resident once, which halves the
    # RSS sum at a million products but not the PSS, at a third less throughput (scale.md).
    layout: str = "one"
    # The query encoder's precision; the catalogue is embedded in FP32 either way. INT8
    # (export/quantize.py: 8-bit weights, int8 arithmetic, each token's activations quantised
    # on their own, so a query's embedding does not depend on its batch) is the CPU default
    # because `fusionrank evaluate` finds no loss of fused quality against FP32 and it encodes
    # faster (benchmarks/reports/search_fused.md has both). INT8 also retrieves from an 8-bit
    # copy of the catalogue, rescored exactly (RETRIEVAL_INT8: export/search/retrieval.py).
    precision: str = "int8"
    # The `search` ensemble's answers go to Triton's response cache (`fusionrank serve
    # --cache-mib`, on by default): a repeated query is answered without running a step.
    response_cache: bool = True
    # Where the search graphs run: "cpu" (the models above) or "gpu" (`gpu_search_ensemble`:
    # the encoder and retrieval as native models on the GPU under TensorRT FP16; `precision`,
    # `onnx_threads` and `layout` are the CPU repository's).
    device: str = "cpu"
    # GPU: a TensorRT engine of the encoder (`fusionrank export-tensorrt`) served as
    # tensorrt_plan; an absolute path not built yet is built at the container's first start
    # (docker/entrypoint.sh). None: ONNX Runtime's TensorRT provider builds and caches its own.
    tensorrt_engine: str | None = None
    # GPU: the folder (in the container) where TensorRT engines are cached across restarts.
    engine_cache: str = "/engines"
    # Dense retrieval: "exact" (the ONNX graph over every product), "ann" (a FAISS index:
    # core/search/ann.py) or "auto": ANN from ann.EXACT_BELOW products on, where the sweep
    # found it faster at recall@100 ≥ 0.96 (benchmarks/reports/ann_sweep.md).
    # The GPU repository retrieves exactly, on the GPU.
    retrieval: str = "auto"
    # A catalogue that `fusionrank catalogue apply` changes while it serves (the `catalogue`
    # model; docs/live_catalogue.md). Its answers stay out of the response cache, which would
    # answer a query with what the catalogue held before a change.
    live_catalogue: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "int8"):
            raise ValueError(f"precision must be fp32 or int8, not {self.precision!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"device must be cpu or gpu, not {self.device!r}")
        if self.tensorrt_engine and self.device != "gpu":
            raise ValueError("tensorrt_engine is served by the GPU repository only (device gpu)")
        if self.retrieval not in ("auto", "exact", "ann"):
            raise ValueError(f"retrieval must be auto, exact or ann, not {self.retrieval!r}")
        if self.ranker_threads is not None and self.layout == "one" \
                and self.ranker_threads != self.onnx_threads:
            raise ValueError("ranker_threads needs layout two or steps: layout one runs the "
                             "encoder and the ranker in one model, with onnx_threads")
        if self.live_catalogue and (self.device != "cpu" or self.layout == "steps"):
            raise ValueError("a live catalogue is served by the CPU layouts one and two, where "
                             "retrieval, scoring and ranking run in one process and so answer "
                             "a request from one state of the catalogue")
        if self.live_catalogue and self.response_cache:
            raise ValueError("a live catalogue's answers change under the same query: leave "
                             "the response cache off (response_cache=False)")
        if self.retrieval == "ann" and self.device == "gpu":
            raise ValueError("retrieval ann is served by the CPU repository only; the GPU "
                             "repository retrieves exactly on the GPU")

    @property
    def ranker_parameters(self) -> dict[str, str]:
        return {"threads": str(self.ranker_threads or self.onnx_threads)}

    @property
    def pool(self) -> int:
        """Candidates a query's pool holds: the dense ones, then the BM25 ones added."""
        return self.candidates + self.lexical_candidates

    @property
    def encoder_file(self) -> str:
        return names.ENCODER_INT8 if self.precision == "int8" else names.ENCODER

    @property
    def retrieval_files(self) -> tuple[str, ...]:
        """The retrieval step's files: its INT8 graph reads the float32 embeddings too."""
        return (names.RETRIEVAL_INT8, names.EMBEDDINGS) if self.precision == "int8" else (
            names.RETRIEVAL,)


@dataclass(frozen=True)
class SearchArtefacts:
    encoder: Path  # ENCODER (and ENCODER_INT8), TOKENIZER
    index: Path  # EMBEDDINGS, PRODUCTS, RETRIEVAL; FUSION_WEIGHTS of similarity alone
    run: Path | None = None  # SEARCH_RUN_FILES of a trained run, aligned with the catalogue
    # A student query encoder (`fusionrank distil`; ENCODER, ENCODER_INT8, TOKENIZER) that
    # encodes the queries while the index keeps the embeddings of `encoder`, its teacher.
    query_encoder: Path | None = None
    # A cross-encoder reranker of the fused top N (RERANKER: the graph served, TOKENIZER,
    # RERANKER_SPEC: its N and weight); a trained run only.
    reranker: Path | None = None

    @property
    def weights(self) -> Path:
        return (self.run or self.index) / names.FUSION_WEIGHTS

    @property
    def queries(self) -> Path:
        """The folder of the encoder that encodes queries (and of its tokenizer)."""
        return self.query_encoder or self.encoder


def search_ensemble(files: SearchArtefacts, options: ServingOptions) -> Ensemble:
    """The search pipeline's steps, served as one model (SEARCH_STEPS), as two (`query_encoder`,
    `ranker`) or as one model each (`options.layout`); on the GPU, `gpu_search_ensemble`."""
    if options.device == "gpu":
        return gpu_search_ensemble(files, options)
    threads = {"threads": str(options.onnx_threads)}
    delay = options.max_queue_delay_us
    queue = queue_options(options)
    fused = files.run is not None
    tokenize = tokenizer_model(files, steps.Tokenize.CONTRACT)
    encode = PythonModel(
        "query_encoder", steps.EncodeQueries,
        artefacts={names.ENCODER: files.queries / options.encoder_file},
        parameters=threads, instances=options.encoder_instances, max_queue_delay_us=delay)
    retrieve = PythonModel(
        "retrieval", steps.Retrieve,
        artefacts={name: files.index / name for name in (
            *retrieval_files(files, options),
            *((names.LIVE_BASE,) if options.live_catalogue else ()))},
        parameters={**options.ranker_parameters, "candidates": str(options.candidates),
                    **({steps.LIVE_PARAMETER: "on"} if options.live_catalogue else {})},
        max_queue_delay_us=delay,
        # With BM25 candidates to merge, retrieval's pool is the dense part of the final one.
        tensor_names=dense_names(steps.CANDIDATES.name, steps.SIMILARITY.name) if fused else {})
    scoring, rank = ranking_models(files, options)
    last = [reranker_model(files, options)] if files.reranker is not None else []
    if options.layout == "steps":
        models = [replace(model, **queue) for model in (tokenize, encode, retrieve, *scoring,
                                                         rank)] + last
    elif options.layout == "one":
        models = [merged(SEARCH_STEPS, tokenize, encode, retrieve, *scoring, rank,
                         instances=options.ranker_instances, max_queue_delay_us=delay, **queue),
                  *last]
    else:
        models = [merged("query_encoder", tokenize, encode, instances=options.encoder_instances,
                         max_queue_delay_us=delay, **queue),
                  merged("ranker", retrieve, *scoring, rank, instances=options.ranker_instances,
                         max_queue_delay_us=delay, **queue), *last]
    return search_pipeline(models, options)


def catalogue_model(files: SearchArtefacts) -> PythonModel:
    """The `catalogue` model of a live catalogue: it embeds upserted titles with the encoder
    that embedded the base (not the query encoder, which may be a student or INT8)."""
    return PythonModel(
        CATALOGUE_MODEL, ApplyChanges,
        artefacts={names.ENCODER: files.encoder / names.ENCODER,
                   names.TOKENIZER: files.encoder / names.TOKENIZER,
                   names.PRODUCTS: files.index / names.PRODUCTS,
                   names.EMBEDDINGS: files.index / names.EMBEDDINGS,
                   names.LIVE_BASE: files.index / names.LIVE_BASE},
        max_batch_size=1, max_queue_delay_us=0)


def retrieval_files(files: SearchArtefacts, options: ServingOptions) -> tuple[str, ...]:
    """The retrieval step's files: a FAISS index (ANN_INDEX, its record, the embeddings it
    rescores with: core/search/ann.py) where the build made one for a large catalogue, else
    the exact graph of `options.precision`."""
    if (files.index / names.ANN_INDEX).is_file():
        rows = (names.ANN_ROWS,) if (files.index / names.ANN_ROWS).is_file() else ()
        return names.ANN_INDEX, names.ANN_RECORD, *rows, names.EMBEDDINGS
    return options.retrieval_files


def queue_options(options: ServingOptions) -> dict[str, int]:
    return {"max_queue_size": options.max_queue_size,
            "queue_timeout_us": options.queue_timeout_ms * 1000}


def dense_names(candidates: str, similarity: str) -> dict[str, str]:
    """A retrieval model's outputs (named `candidates`, `similarity`) → the names ScoreCandidates
    reads them by."""
    return {candidates: steps.DENSE_CANDIDATES.name, similarity: steps.DENSE_SIMILARITY.name}


def tokenizer_model(files: SearchArtefacts, contract: StepContract,
                    parameters: dict[str, str] | None = None) -> PythonModel:
    return PythonModel(
        "tokenizer", steps.Tokenize, contract,
        artefacts={names.TOKENIZER: files.queries / names.TOKENIZER},
        parameters=parameters or {}, max_queue_delay_us=0)


def ranking_models(files: SearchArtefacts,
                   options: ServingOptions) -> tuple[list[PythonModel], PythonModel]:
    """The steps after retrieval: ScoreCandidates (a trained run only) and Rank (which, with
    a reranker after it, answers under the FUSED_* names and hands on its head)."""
    reranking = files.reranker is not None
    rank = PythonModel(
        "ranker", steps.Rank, steps.Rank.fusing(FusionWeights.load(files.weights), reranking),
        artefacts={names.PRODUCTS: files.index / names.PRODUCTS,
                   names.FUSION_WEIGHTS: files.weights}, max_queue_delay_us=0,
        parameters={steps.RERANK_PARAMETER: str(RerankerSpec.load(
            files.reranker / names.RERANKER_SPEC).depth)} if reranking else {},
        tensor_names={name: spec.name for name, spec in rerank_steps.FUSED.items()}
        if reranking else {})
    run_files = (names.LEXICAL, names.PRIORS, names.MEMORY, names.FEEDBACK_HEAD)
    if files.run is not None and (files.run / names.TITLE_FEATURES).is_file():
        run_files += (names.TITLE_FEATURES,)  # saves the step computing them at each load
    scoring = [PythonModel(
        "scoring", steps.ScoreCandidates,
        # The weights too: in a cascade, the feedback is computed for the head Rank reads.
        artefacts={**{name: files.index / name for name in (names.EMBEDDINGS, names.PRODUCTS)},
                   **{name: files.run / name for name in run_files},
                   names.FUSION_WEIGHTS: files.weights},
        parameters={**options.ranker_parameters,
                    "lexical_candidates": str(options.lexical_candidates)},
        instances=options.ranker_instances,
        max_queue_delay_us=options.max_queue_delay_us)] if files.run is not None else []
    return scoring, rank


def reranker_model(files: SearchArtefacts, options: ServingOptions) -> PythonModel:
    """The last stage (`rerank_steps.py`), a model of its own: the pairs tokenised, scored by
    the reranker's graph (ONNX Runtime inside the model), the head reordered."""
    folder = files.reranker
    spec = {names.RERANKER_SPEC: folder / names.RERANKER_SPEC}
    tokenize = PythonModel("pair_tokenizer", rerank_steps.PairTokenize,
                           artefacts={**spec, names.TOKENIZER: folder / names.TOKENIZER})
    score = PythonModel("pair_scorer", rerank_steps.ScorePairs,
                        artefacts={names.RERANKER: folder / names.RERANKER},
                        parameters={"threads": str(options.onnx_threads)})
    rerank = PythonModel("rerank", rerank_steps.Rerank, artefacts=spec)
    return merged("reranker", tokenize, score, rerank, instances=options.ranker_instances,
                  max_queue_delay_us=options.max_queue_delay_us, **queue_options(options))


def search_pipeline(models: list[ServedModel], options: ServingOptions) -> Ensemble:
    pipeline = Inputs(*SEARCH_INPUTS)
    for model in models:
        pipeline = pipeline >> model
    return pipeline.ensemble(SEARCH_MODEL, (*SEARCH_OUTPUTS, *EXPLAIN_OUTPUTS),
                             response_cache=options.response_cache)


def gpu_search_ensemble(files: SearchArtefacts, options: ServingOptions) -> Ensemble:
    """The search pipeline with its graphs served natively on the GPU (module docstring):
    the encoder (FP32 graph; TensorRT runs it in FP16) and retrieval (`RETRIEVAL_FIXED_K`, its
    pool of `options.candidates`) as native models, the tokenizer and the ranker (the numpy
    features of ScoreCandidates are no graph yet, then Rank) as Python models on the CPU.
    Token ids are padded to MAX_QUERY_TOKENS: the dynamic batcher then joins any requests, and
    TensorRT's profiles span the batch alone."""
    products, dim = np.load(files.index / names.EMBEDDINGS, mmap_mode="r").shape
    pool = min(options.candidates, products)
    fixed = (MAX_QUERY_TOKENS,)
    tokenize = replace(
        tokenizer_model(files, steps.Tokenize.padded_to(MAX_QUERY_TOKENS),
                        {"pad_to": str(MAX_QUERY_TOKENS)}),
        instances=options.encoder_instances, **queue_options(options))
    # The encoder graph's tensors: the steps' names in lower case.
    graph_tokens = tuple(TensorSpec(t.name.lower(), t.dtype, fixed) for t in steps.TOKENS)
    encoder = {"inputs": graph_tokens, "outputs": (TensorSpec("embedding", "FP32", (dim,)),),
               "tensor_names": {**{t.name.lower(): t.name for t in steps.TOKENS},
                                "embedding": steps.EMBEDDING.name},
               "instances": options.encoder_instances,
               "max_queue_delay_us": options.max_queue_delay_us}
    if options.tensorrt_engine:
        encode = NativeModel("query_encoder", TENSORRT_PLAN, Path(options.tensorrt_engine),
                             onnx_source=files.queries / names.ENCODER, **encoder)
    else:
        encode = NativeModel("query_encoder", ONNX_RUNTIME, files.queries / names.ENCODER,
                             tensorrt=engine_cache(options, "query_encoder"), **encoder)
    retrieved = {"rows": steps.CANDIDATES.name, "similarity": steps.SIMILARITY.name}
    if files.run is not None:
        retrieved = dense_names("rows", "similarity")
    retrieve = NativeModel(
        "retrieval", ONNX_RUNTIME, files.index / names.RETRIEVAL_FIXED_K,
        (TensorSpec("query", "FP32", (dim,)),),
        (TensorSpec("similarity", "FP32", (pool,)), TensorSpec("rows", "INT64", (pool,))),
        tensorrt=engine_cache(options, "retrieval"),
        tensor_names={"query": steps.EMBEDDING.name, **retrieved},
        max_queue_delay_us=options.max_queue_delay_us)
    scoring, rank = ranking_models(files, options)
    ranker = merged("ranker", *scoring, rank, instances=options.ranker_instances,
                    max_queue_delay_us=options.max_queue_delay_us, **queue_options(options))
    last = gpu_reranker_models(files, options) if files.reranker is not None else []
    return search_pipeline([tokenize, encode, retrieve, ranker, *last], options)


def gpu_reranker_models(files: SearchArtefacts, options: ServingOptions) -> list[ServedModel]:
    """The last stage on the GPU: the pairs tokenised and padded to the reranker's max_tokens
    (Python, CPU), the reranker's grouped graph ([queries, N, tokens] → [queries, N]) on the
    onnxruntime backend under TensorRT FP16, the head reordered (Python, CPU)."""
    folder = files.reranker
    spec = RerankerSpec.load(folder / names.RERANKER_SPEC)
    fixed = (spec.depth, spec.max_tokens)
    tokenize = PythonModel(
        "pair_tokenizer", rerank_steps.PairTokenize,
        rerank_steps.PairTokenize.padded_to(*fixed),
        artefacts={names.RERANKER_SPEC: folder / names.RERANKER_SPEC,
                   names.TOKENIZER: folder / names.TOKENIZER},
        parameters={"pad_to": str(spec.max_tokens)}, **queue_options(options))
    graph = tuple(TensorSpec(n, "INT64", fixed) for n in rerank_steps.PAIR_INPUT_NAMES)
    reranker = NativeModel(
        "reranker", ONNX_RUNTIME, folder / names.RERANKER_GROUPED, graph,
        (TensorSpec("logit", "FP32", (spec.depth,)),),
        tensorrt=engine_cache(options, "reranker"),
        tensor_names={**{g.name: p.name for g, p in zip(graph, rerank_steps.PAIR_TOKENS,
                                                         strict=True)},
                      "logit": rerank_steps.RERANK_LOGITS.name},
        max_queue_delay_us=options.max_queue_delay_us)
    rerank = PythonModel("rerank", rerank_steps.Rerank,
                         artefacts={names.RERANKER_SPEC: folder / names.RERANKER_SPEC},
                         max_queue_delay_us=0)
    return [tokenize, reranker, rerank]


def engine_cache(options: ServingOptions, model: str) -> TensorRTAccelerator:
    return TensorRTAccelerator(cache_path=f"{options.engine_cache.rstrip('/')}/{model}")
