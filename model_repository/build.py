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
from fusionrank.model_repository.models import query_encoder, ranker, retrieval, tokenizer
from fusionrank.ranking import FusionWeights

MANIFEST_FILE = "fusionrank.json"
PARITY_TEXTS = 256

TOKENS = (TensorSpec("INPUT_IDS", "INT64", (-1,), ragged=True),
          TensorSpec("ATTENTION_MASK", "INT64", (-1,), ragged=True))
EMBEDDING = TensorSpec("EMBEDDING", "FP32", (-1,))
CANDIDATES = (TensorSpec("CANDIDATES", "INT64", (-1,)), TensorSpec("SIMILARITY", "FP32", (-1,)))
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
    # "int8" serves a dynamically quantised query encoder (the catalogue is embedded in FP32).
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "int8"):
            raise ValueError(f"precision must be fp32 or int8, not {self.precision!r}")


def encoder_file(options: ServingOptions) -> str:
    return "encoder.int8.onnx" if options.precision == "int8" else "encoder.onnx"


def search_ensemble(version_dirs: dict[str, Path], options: ServingOptions) -> Ensemble:
    """The search pipeline: tokenise → encode → retrieve → rank. `version_dirs` names the
    artefacts each model needs."""
    threads = {"threads": str(options.onnx_threads)}
    tokenize = PythonModel(
        "tokenizer", tokenizer.__name__, (QUERY,), TOKENS,
        artefacts={tokenizer.TOKENIZER_FILE: version_dirs["encoder"] / "tokenizer.json"},
        instances=options.pre_post_instances, max_queue_delay_us=0)
    encode = PythonModel(
        "query_encoder", query_encoder.__name__, TOKENS, (EMBEDDING,),
        artefacts={query_encoder.ENCODER_FILE: version_dirs["encoder"] / encoder_file(options)},
        parameters=threads, instances=options.encoder_instances,
        max_queue_delay_us=options.max_queue_delay_us)
    retrieve = PythonModel(
        "retrieval", retrieval.__name__, (EMBEDDING, K), CANDIDATES,
        artefacts={retrieval.INDEX_FILE: version_dirs["index"] / retrieval.INDEX_FILE},
        parameters={**threads, "candidates": str(options.candidates)},
        instances=options.retrieval_instances, max_queue_delay_us=options.max_queue_delay_us)
    rank = PythonModel(
        "ranker", ranker.__name__, (*CANDIDATES, K), SEARCH_OUTPUTS,
        artefacts={ranker.PRODUCTS_FILE: version_dirs["index"] / PRODUCTS_FILE,
                   ranker.WEIGHTS_FILE: version_dirs["index"] / ranker.WEIGHTS_FILE},
        instances=options.pre_post_instances, max_queue_delay_us=0)
    return (Inputs(QUERY, K) >> tokenize >> encode >> retrieve >> rank
            ).ensemble(SEARCH_MODEL, SEARCH_OUTPUTS)


def build_search_repository(catalogue: Catalogue, model_dir: Path, out_dir: Path,
                            options: ServingOptions | None = None,
                            weights: FusionWeights | None = None) -> Path:
    """Export the encoder, embed the catalogue and write the model repository; returns it."""
    options = options or ServingOptions()
    out_dir = Path(out_dir)
    artefacts = {"encoder": out_dir / "artefacts" / "encoder",
                 "index": out_dir / "artefacts" / "index"}
    encoder = export_encoder(model_dir, artefacts["encoder"], catalogue.titles[:PARITY_TEXTS])
    quantised = None
    if options.precision == "int8":
        quantised = quantise_encoder(encoder.onnx_path, encoder.tokenizer_path,
                                     artefacts["encoder"] / encoder_file(options),
                                     catalogue.titles[:PARITY_TEXTS])
    index = build_index(catalogue, encoder, artefacts["index"])
    retrieval_graph(load_embeddings(artefacts["index"]), artefacts["index"] / retrieval.INDEX_FILE)
    (weights or FusionWeights()).save(artefacts["index"] / ranker.WEIGHTS_FILE)

    repository = out_dir / "model_repository"
    if repository.exists():
        shutil.rmtree(repository)  # a stale model left from another build would be served
    repository.mkdir(parents=True)
    search_ensemble(artefacts, options).export(repository)
    served = {
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "encoder": {"source": encoder.source, "onnx_sha256": encoder.sha256,
                    "parity_min_cosine": encoder.min_cosine,
                    "int8": asdict(quantised) | {"onnx_path": str(quantised.onnx_path)}
                    if quantised else None},
        "index": asdict(index) | {"embeddings": str(artefacts["index"] / EMBEDDINGS_FILE)},
        "ranking": asdict(weights or FusionWeights()),
        "serving": asdict(options),
    }
    (repository / MANIFEST_FILE).write_text(json.dumps(served, indent=2) + "\n")
    return repository


def add_ensemble(repository: Path, ensemble: Ensemble, provenance: dict) -> None:
    """Export another ensemble (recommend, sentiment) into a built repository and record what
    it serves in the repository's manifest."""
    ensemble.export(repository)
    manifest_path = repository / MANIFEST_FILE
    served = json.loads(manifest_path.read_text())
    served.setdefault("ensembles", {})[ensemble.name] = provenance
    manifest_path.write_text(json.dumps(served, indent=2) + "\n")
