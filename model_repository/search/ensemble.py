"""The `search` ensemble: query text in, ranked products out.

    pretrained:  QUERY, K >> tokenizer >> query_encoder >> retrieval >> ranker
    trained run: QUERY, K >> tokenizer >> query_encoder >> retrieval >> scoring >> ranker

`SearchArtefacts` names the folders `fusionrank build` fills: the exported encoder, the
catalogue index and, for a trained run, the run's search files aligned with the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fusionrank.core import artefacts as names
from fusionrank.core.contract import MAX_K, TensorSpec
from fusionrank.core.fusion import SIGNAL_TENSORS, FusionWeights
from fusionrank.core.search.contract import SEARCH_INPUTS, SEARCH_MODEL, SEARCH_OUTPUTS
from fusionrank.core.search.runtime import LEXICAL_CANDIDATES
from fusionrank.model_repository.config import PythonModel
from fusionrank.model_repository.ensemble import Ensemble, Inputs
from fusionrank.model_repository.search import steps

TOKENS = (TensorSpec("INPUT_IDS", "INT64", (-1,), ragged=True),
          TensorSpec("ATTENTION_MASK", "INT64", (-1,), ragged=True))
EMBEDDING = TensorSpec("EMBEDDING", "FP32", (-1,))
CANDIDATES = (TensorSpec("CANDIDATES", "INT64", (-1,)), TensorSpec("SIMILARITY", "FP32", (-1,)))
DENSE = (TensorSpec("DENSE_CANDIDATES", "INT64", (-1,)),
         TensorSpec("DENSE_SIMILARITY", "FP32", (-1,)))
SIGNALS = {name: TensorSpec(tensor, "FP32", (-1,)) for name, tensor in SIGNAL_TENSORS.items()}
QUERY, K = SEARCH_INPUTS


@dataclass
class ServingOptions:
    """How the server runs the models: copies per model, batching delay, threads per copy."""

    encoder_instances: int = 1
    retrieval_instances: int = 1
    pre_post_instances: int = 1  # tokenizer and ranker
    scoring_instances: int = 2  # candidates, features and the feedback head: the costliest step
    max_queue_delay_us: int = 200
    onnx_threads: int = 1  # a measured sweep on 2 cores: more copies beat more threads
    candidates: int = MAX_K
    lexical_candidates: int = LEXICAL_CANDIDATES  # BM25 candidates added (the fitted pool)
    # "int8" serves a dynamically quantised query encoder (the catalogue is embedded in FP32).
    # Not the default: its activations are quantised with one scale per batch, so a query's
    # embedding depends on the queries batched with it, and the served ranking would no
    # longer be exactly the evaluated one (`fusionrank evaluate` measures its quality).
    precision: str = "fp32"
    # The `search` ensemble's answers go to Triton's response cache (`fusionrank serve
    # --cache-mib`, on by default): a repeated query is answered without running a step.
    response_cache: bool = True

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "int8"):
            raise ValueError(f"precision must be fp32 or int8, not {self.precision!r}")

    @property
    def encoder_file(self) -> str:
        return names.ENCODER_INT8 if self.precision == "int8" else names.ENCODER


@dataclass(frozen=True)
class SearchArtefacts:
    encoder: Path  # ENCODER (and ENCODER_INT8), TOKENIZER
    index: Path  # EMBEDDINGS, PRODUCTS, RETRIEVAL; FUSION_WEIGHTS of similarity alone
    run: Path | None = None  # SEARCH_RUN_FILES of a trained run, aligned with the catalogue

    @property
    def weights(self) -> Path:
        return (self.run or self.index) / names.FUSION_WEIGHTS


def search_ensemble(files: SearchArtefacts, options: ServingOptions) -> Ensemble:
    threads = {"threads": str(options.onnx_threads)}
    fused = files.run is not None
    tokenize = PythonModel(
        "tokenizer", steps.Tokenize, (QUERY,), TOKENS,
        artefacts={names.TOKENIZER: files.encoder / names.TOKENIZER},
        instances=options.pre_post_instances, max_queue_delay_us=0)
    encode = PythonModel(
        "query_encoder", steps.EncodeQueries, TOKENS, (EMBEDDING,),
        artefacts={names.ENCODER: files.encoder / options.encoder_file},
        parameters=threads, instances=options.encoder_instances,
        max_queue_delay_us=options.max_queue_delay_us)
    retrieve = PythonModel(
        "retrieval", steps.Retrieve, (EMBEDDING, K), CANDIDATES,
        artefacts={names.RETRIEVAL: files.index / names.RETRIEVAL},
        parameters={**threads, "candidates": str(options.candidates)},
        instances=options.retrieval_instances, max_queue_delay_us=options.max_queue_delay_us,
        # With BM25 candidates to merge, retrieval's pool is the dense part of the final one.
        tensor_names={"CANDIDATES": "DENSE_CANDIDATES", "SIMILARITY": "DENSE_SIMILARITY"}
        if fused else {})
    signals = tuple(SIGNALS[name] for name in FusionWeights.load(files.weights).weights)
    rank = PythonModel(
        "ranker", steps.Rank, (CANDIDATES[0], *signals, K), SEARCH_OUTPUTS,
        artefacts={names.PRODUCTS: files.index / names.PRODUCTS,
                   names.FUSION_WEIGHTS: files.weights},
        instances=options.pre_post_instances, max_queue_delay_us=0)
    if files.run is None:
        return (Inputs(QUERY, K) >> tokenize >> encode >> retrieve >> rank
                ).ensemble(SEARCH_MODEL, SEARCH_OUTPUTS, response_cache=options.response_cache)
    score = PythonModel(
        "scoring", steps.ScoreCandidates, (QUERY, EMBEDDING, *DENSE),
        (*CANDIDATES, SIGNALS["lexical"], SIGNALS["feedback"]),
        artefacts={**{name: files.index / name for name in (names.EMBEDDINGS, names.PRODUCTS)},
                   **{name: files.run / name for name in (names.LEXICAL, names.PRIORS,
                                                          names.MEMORY, names.FEEDBACK_HEAD)}},
        parameters={**threads, "lexical_candidates": str(options.lexical_candidates)},
        instances=options.scoring_instances, max_queue_delay_us=options.max_queue_delay_us)
    return (Inputs(QUERY, K) >> tokenize >> encode >> retrieve >> score >> rank
            ).ensemble(SEARCH_MODEL, SEARCH_OUTPUTS, response_cache=options.response_cache)
