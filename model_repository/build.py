"""Build a Triton model repository that serves search over one catalogue.

    build/
      artefacts/encoder/   encoder.onnx, tokenizer.json       (export of the encoder)
      artefacts/index/     embeddings.npy, products.jsonl, manifest.json
      model_repository/    tokenizer, query_encoder, retrieval, ranker, search (ensemble),
                           fusionrank.json (what is served, from what, built when)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from fusionrank.catalogue import Catalogue
from fusionrank.contract import MAX_K, SEARCH_INPUTS, SEARCH_MODEL, SEARCH_OUTPUTS, TensorSpec
from fusionrank.export.index import (
    EMBEDDINGS_FILE,
    PRODUCTS_FILE,
    build_index,
    load_embeddings,
    retrieval_graph,
)
from fusionrank.export.onnx_encoder import export_encoder
from fusionrank.export.quantize import quantise_encoder
from fusionrank.model_repository.config import PythonModel
from fusionrank.model_repository.ensemble import Ensemble, Inputs
from fusionrank.model_repository.models import (
    feedback,
    lexical,
    query_encoder,
    ranker,
    retrieval,
    tokenizer,
)
from fusionrank.ranking import SIGNAL_TENSORS, FusionWeights

MANIFEST_FILE = "fusionrank.json"
PARITY_TEXTS = 256

TOKENS = (TensorSpec("INPUT_IDS", "INT64", (-1,), ragged=True),
          TensorSpec("ATTENTION_MASK", "INT64", (-1,), ragged=True))
EMBEDDING = TensorSpec("EMBEDDING", "FP32", (-1,))
CANDIDATES = (TensorSpec("CANDIDATES", "INT64", (-1,)), TensorSpec("SIMILARITY", "FP32", (-1,)))
CANDIDATE_ROWS = CANDIDATES[0]
DENSE = (TensorSpec("DENSE_CANDIDATES", "INT64", (-1,)),
         TensorSpec("DENSE_SIMILARITY", "FP32", (-1,)))
SIGNALS = {name: TensorSpec(tensor, "FP32", (-1,)) for name, tensor in SIGNAL_TENSORS.items()}
LEXICAL, FEEDBACK = SIGNALS["lexical"], SIGNALS["feedback"]
QUERY, K = SEARCH_INPUTS


@dataclass
class ServingOptions:
    """How the server runs the models: copies per model, batching delay, threads per copy."""

    encoder_instances: int = 1
    retrieval_instances: int = 1
    pre_post_instances: int = 1  # tokenizer and ranker
    max_queue_delay_us: int = 200
    onnx_threads: int = 2
    candidates: int = MAX_K
    lexical_candidates: int = 100  # BM25 candidates added (the pool the fusion was fitted on)
    # "int8" serves a dynamically quantised query encoder (the catalogue is embedded in FP32).
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "int8"):
            raise ValueError(f"precision must be fp32 or int8, not {self.precision!r}")


def encoder_file(options: ServingOptions) -> str:
    return "encoder.int8.onnx" if options.precision == "int8" else "encoder.onnx"


def search_ensemble(artefacts: dict[str, Path], options: ServingOptions) -> Ensemble:
    """The search pipeline. `artefacts` names the folders of the encoder, the index and, for a
    trained run, the ranking files; then BM25 candidates and the feedback head join in:

        tokenizer → query_encoder → retrieval → ranker                      (pretrained)
        tokenizer → query_encoder → retrieval → lexical → feedback → ranker (trained run)
    """
    threads = {"threads": str(options.onnx_threads)}
    fused = "ranking" in artefacts
    weights_dir = artefacts["ranking"] if fused else artefacts["index"]
    tokenize = PythonModel(
        "tokenizer", tokenizer.__name__, (QUERY,), TOKENS,
        artefacts={tokenizer.TOKENIZER_FILE: artefacts["encoder"] / "tokenizer.json"},
        instances=options.pre_post_instances, max_queue_delay_us=0)
    encode = PythonModel(
        "query_encoder", query_encoder.__name__, TOKENS, (EMBEDDING,),
        artefacts={query_encoder.ENCODER_FILE: artefacts["encoder"] / encoder_file(options)},
        parameters=threads, instances=options.encoder_instances,
        max_queue_delay_us=options.max_queue_delay_us)
    retrieve = PythonModel(
        "retrieval", retrieval.__name__, (EMBEDDING, K), CANDIDATES,
        artefacts={retrieval.INDEX_FILE: artefacts["index"] / retrieval.INDEX_FILE},
        parameters={**threads, "candidates": str(options.candidates)},
        instances=options.retrieval_instances, max_queue_delay_us=options.max_queue_delay_us,
        # With BM25 candidates to merge, retrieval's pool is the dense part of the final one.
        tensor_names={"CANDIDATES": "DENSE_CANDIDATES", "SIMILARITY": "DENSE_SIMILARITY"}
        if fused else {})
    signals = tuple(SIGNALS[name] for name in FusionWeights.load(weights_dir /
                                                                 ranker.WEIGHTS_FILE).weights)
    rank = PythonModel(
        "ranker", ranker.__name__, (CANDIDATES[0], *signals, K), SEARCH_OUTPUTS,
        artefacts={ranker.PRODUCTS_FILE: artefacts["index"] / PRODUCTS_FILE,
                   ranker.WEIGHTS_FILE: weights_dir / ranker.WEIGHTS_FILE},
        instances=options.pre_post_instances, max_queue_delay_us=0)
    if not fused:
        return (Inputs(QUERY, K) >> tokenize >> encode >> retrieve >> rank
                ).ensemble(SEARCH_MODEL, SEARCH_OUTPUTS)
    index_files = {lexical.EMBEDDINGS_FILE: artefacts["index"] / EMBEDDINGS_FILE}
    add_lexical = PythonModel(
        "lexical", lexical.__name__, (QUERY, EMBEDDING, *DENSE), (*CANDIDATES, LEXICAL),
        artefacts={lexical.LEXICAL_FILE: artefacts["ranking"] / lexical.LEXICAL_FILE,
                   **index_files},
        parameters={"lexical_candidates": str(options.lexical_candidates)},
        instances=options.pre_post_instances, max_queue_delay_us=0)
    predict_feedback = PythonModel(
        "feedback", feedback.__name__, (QUERY, EMBEDDING, CANDIDATE_ROWS, LEXICAL), (FEEDBACK,),
        artefacts={feedback.HEAD_FILE: artefacts["ranking"] / feedback.HEAD_FILE,
                   feedback.PRIORS_FILE: artefacts["ranking"] / feedback.PRIORS_FILE,
                   feedback.MEMORY_FILE: artefacts["ranking"] / feedback.MEMORY_FILE,
                   feedback.PRODUCTS_FILE: artefacts["index"] / PRODUCTS_FILE, **index_files},
        parameters=threads, instances=options.pre_post_instances,
        max_queue_delay_us=options.max_queue_delay_us)
    return (Inputs(QUERY, K) >> tokenize >> encode >> retrieve >> add_lexical
            >> predict_feedback >> rank).ensemble(SEARCH_MODEL, SEARCH_OUTPUTS)


def build_search_repository(catalogue: Catalogue, model_dir: Path, out_dir: Path,
                            options: ServingOptions | None = None,
                            run_dir: Path | None = None) -> Path:
    """Export the encoder, embed the catalogue and write the model repository; returns it.
    With `run_dir` (a finished `fusionrank train` run) its fine-tuned encoder, BM25 candidates,
    feedback head and fusion weights are served; `model_dir` is then ignored."""
    options = options or ServingOptions()
    out_dir = Path(out_dir)
    artefacts = {"encoder": out_dir / "artefacts" / "encoder",
                 "index": out_dir / "artefacts" / "index"}
    if run_dir is not None:
        model_dir = Path(run_dir) / "encoder" / "best"
    encoder = export_encoder(model_dir, artefacts["encoder"], catalogue.titles[:PARITY_TEXTS])
    quantised = None
    if options.precision == "int8":
        quantised = quantise_encoder(encoder.onnx_path, encoder.tokenizer_path,
                                     artefacts["encoder"] / encoder_file(options),
                                     catalogue.titles[:PARITY_TEXTS])
    index = build_index(catalogue, encoder, artefacts["index"])
    retrieval_graph(load_embeddings(artefacts["index"]), artefacts["index"] / retrieval.INDEX_FILE)
    FusionWeights().save(artefacts["index"] / ranker.WEIGHTS_FILE)
    if run_dir is not None:
        from fusionrank.training.artefacts import search_artefacts

        artefacts["ranking"] = out_dir / "artefacts" / "ranking"
        search_artefacts(run_dir, catalogue, artefacts["ranking"])

    repository = out_dir / "model_repository"
    if repository.exists():
        shutil.rmtree(repository)  # a stale model left from another build would be served
    repository.mkdir(parents=True)
    search_ensemble(artefacts, options).export(repository)
    weights_dir = artefacts.get("ranking", artefacts["index"])
    served = {
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "encoder": {"source": encoder.source, "onnx_sha256": encoder.sha256,
                    "parity_min_cosine": encoder.min_cosine,
                    "int8": asdict(quantised) | {"onnx_path": str(quantised.onnx_path)}
                    if quantised else None},
        "training_run": run_provenance(Path(run_dir)) if run_dir is not None else None,
        "index": asdict(index) | {"embeddings": str(artefacts["index"] / EMBEDDINGS_FILE)},
        "ranking": asdict(FusionWeights.load(weights_dir / ranker.WEIGHTS_FILE)),
        "serving": asdict(options),
    }
    (repository / MANIFEST_FILE).write_text(json.dumps(served, indent=2) + "\n")
    return repository


def run_provenance(run_dir: Path) -> dict:
    """Which checkpoint, trained on which data, the repository serves."""
    run = json.loads((run_dir / "run.json").read_text())
    checkpoint = run_dir / "encoder" / "best" / "checkpoint.json"
    return {"run": str(run_dir.resolve()), "data_file": run.get("data_file"),
            "data_sha256": run.get("data_sha256"),
            "checkpoint": json.loads(checkpoint.read_text()) if checkpoint.is_file() else None}


def add_ensemble(repository: Path, ensemble: Ensemble, provenance: dict) -> None:
    """Export another ensemble (recommend, sentiment) into a built repository and record what
    it serves in the repository's manifest."""
    ensemble.export(repository)
    manifest_path = repository / MANIFEST_FILE
    served = json.loads(manifest_path.read_text())
    served.setdefault("ensembles", {})[ensemble.name] = provenance
    manifest_path.write_text(json.dumps(served, indent=2) + "\n")
