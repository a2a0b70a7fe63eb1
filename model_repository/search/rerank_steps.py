"""The search ensemble's last stage, where a build serves a cross-encoder reranker:

    PairTokenize   QUERY, HEAD_TITLES (Rank's top N) → the pairs' token ids, mask and types
    ScorePairs     the pairs' tokens → RERANK_LOGITS (the reranker's ONNX graph)
    Rerank         the head reordered by S + w · logit, the answer cut to the K asked for;
                   "why this result" gains the reranker's part

Rank, before them, answers its usual outputs under FUSED_* names (`FUSED`) for at least N
products, plus HEAD_TITLES and HEAD_SCORES (`steps.Rank`). The three run as one model of their
own, `reranker`, so the encoder and ranking models are as before. The order is
`fusionrank.core.search.reranker.reranked`, the function `fusionrank evaluate` ranks with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.contract import RequestError, TensorSpec
from fusionrank.core.search.contract import EXPLAIN_OUTPUTS, SEARCH_OUTPUTS
from fusionrank.core.search.reranker import (
    PAIR_INPUTS,
    OnnxReranker,
    PairBatch,
    PairTokenizer,
    RerankerSpec,
    reranked,
)
from fusionrank.model_repository.search.steps import (
    HEAD_SCORES,
    HEAD_TITLES,
    QUERY,
    K,
    checked_k,
    optional,
    query_text,
)
from fusionrank.model_repository.step import StepContract, Tensors, split_rows

RERANKER_NAME = "reranker"  # its name among the explained signals
# [N, tokens] a request: each request's pairs padded to its own longest.
PAIR_TOKENS = (TensorSpec("PAIR_INPUT_IDS", "INT64", (-1, -1), ragged=True),
               TensorSpec("PAIR_ATTENTION_MASK", "INT64", (-1, -1), ragged=True),
               TensorSpec("PAIR_TOKEN_TYPE_IDS", "INT64", (-1, -1), ragged=True))
PAIR_INPUT_NAMES = PAIR_INPUTS  # the reranker graph's own input names (native models)
RERANK_LOGITS = TensorSpec("RERANK_LOGITS", "FP32", (-1,))
# Rank's outputs as the reranker reads them: the ensemble renames Rank's to these.
FUSED = {spec.name: replace(spec, name=f"FUSED_{spec.name}")
         for spec in (*SEARCH_OUTPUTS, *EXPLAIN_OUTPUTS)}
PRODUCT_IDS, SCORES, PRODUCTS = SEARCH_OUTPUTS
SIGNAL_NAMES, SIGNAL_WEIGHTS, SIGNALS, CORRECTED = EXPLAIN_OUTPUTS


def load_spec(folder: Path) -> RerankerSpec:
    return RerankerSpec.load(folder / artefacts.RERANKER_SPEC)


class PairTokenize:
    """Each query with each of its head's titles, tokenised as the reranker was trained
    (`PairTokenizer`: over-long text is truncated, never refused); padded to the request's
    longest pair, or with the parameter `pad_to` to the reranker's max_tokens (the GPU
    repository: TensorRT builds for fixed shapes)."""

    CONTRACT = StepContract(inputs=(QUERY, HEAD_TITLES), outputs=PAIR_TOKENS)

    @classmethod
    def padded_to(cls, depth: int, tokens: int) -> StepContract:
        """The contract with `pad_to`: [depth, tokens] a query, fixed."""
        return replace(cls.CONTRACT, outputs=tuple(TensorSpec(s.name, s.dtype, (depth, tokens))
                                                   for s in PAIR_TOKENS))

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        spec = load_spec(folder)
        self.tokenizer = PairTokenizer(folder / artefacts.TOKENIZER, spec.max_query_tokens,
                                       spec.max_tokens)
        self.pad = "pad_to" in parameters

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        results: list[Tensors | RequestError] = []
        for request in requests:
            titles = request[HEAD_TITLES.name]
            queries = [query_text(q) for q in request[QUERY.name].reshape(-1)]
            rows, depth = titles.shape
            batch = self.tokenizer([q for q in queries for _ in range(depth)],
                                   [query_text(t) for t in titles.reshape(-1)])
            room = self.tokenizer.max_tokens - batch.input_ids.shape[1] if self.pad else 0
            results.append({spec.name: np.pad(getattr(batch, field), ((0, 0), (0, room))
                                              ).reshape(rows, depth, -1)
                            for spec, field in zip(PAIR_TOKENS, ("input_ids", "attention_mask",
                                                                 "token_type_ids"), strict=True)})
        return results


class ScorePairs:
    """Every request's pairs → their logits, from one ONNX Runtime call."""

    CONTRACT = StepContract(inputs=PAIR_TOKENS, outputs=(RERANK_LOGITS,))

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        threads = int(parameters.get("threads", "0"))
        self.model = OnnxReranker(folder / artefacts.RERANKER, threads=threads or None)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        ids, mask, types = (spec.name for spec in PAIR_TOKENS)
        shapes = [request[ids].shape for request in requests]
        longest = max(shape[2] for shape in shapes)

        def joined(name: str) -> np.ndarray:  # [all pairs, longest], padded with 0
            return np.concatenate([np.pad(r[name].reshape(-1, r[name].shape[2]),
                                          ((0, 0), (0, longest - r[name].shape[2])))
                                   for r in requests])

        logits = self.model(PairBatch(joined(ids), joined(mask), joined(types)))
        parts = split_rows(logits, [rows * depth for rows, depth, _ in shapes])
        return [{RERANK_LOGITS.name: part.reshape(rows, depth)}
                for part, (rows, depth, _) in zip(parts, shapes, strict=True)]


class Rerank:
    """The fused answer with its head reordered by S + w · logit (w: `reranker.json`, fitted
    on dev), cut to the K asked for. Products below the head keep their fused order and score.
    Explained, each product gains the signal "reranker": its logit with weight w in the head,
    0 with weight 0 below; the parts still add up to SCORES."""

    CONTRACT = StepContract(
        inputs=(FUSED["PRODUCT_IDS"], FUSED["SCORES"], HEAD_SCORES, RERANK_LOGITS,
                K,
                *optional(FUSED["PRODUCTS"], *(FUSED[s.name] for s in EXPLAIN_OUTPUTS))),
        outputs=(PRODUCT_IDS, SCORES, *optional(PRODUCTS, *EXPLAIN_OUTPUTS)))

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        self.weight = load_spec(folder).weight

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        results: list[Tensors | RequestError] = []
        for request in requests:
            try:
                k = checked_k(request)
            except RequestError as error:
                results.append(error)
                continue
            logits = request[RERANK_LOGITS.name]
            head, (queries, ranked) = logits.shape[1], request[FUSED["PRODUCT_IDS"].name].shape
            within, final = reranked(request[HEAD_SCORES.name], logits, self.weight)
            order = np.concatenate([within, np.tile(np.arange(head, ranked), (queries, 1))],
                                   axis=1)[:, :k]
            scores = request[FUSED["SCORES"].name].astype(np.float32)
            # The head's final scores back at their fused positions, which `order` indexes.
            np.put_along_axis(scores[:, :head], within, final.astype(np.float32), axis=1)
            answer = {PRODUCT_IDS.name: np.take_along_axis(
                          request[FUSED["PRODUCT_IDS"].name], order, axis=1),
                      SCORES.name: np.take_along_axis(scores, order, axis=1)}
            if FUSED["PRODUCTS"].name in request:
                answer[PRODUCTS.name] = np.take_along_axis(request[FUSED["PRODUCTS"].name],
                                                           order, axis=1)
            if FUSED["SIGNALS"].name in request:
                answer |= self.explanation(request, logits, order)
            results.append(answer)
        return results

    def explanation(self, request: Tensors, logits: np.ndarray, order: np.ndarray) -> Tensors:
        queries, ranked = order.shape[0], request[FUSED["PRODUCT_IDS"].name].shape[1]
        head = logits.shape[1]
        part = np.zeros((queries, ranked), dtype=np.float32)
        part[:, :head] = logits
        weight = np.zeros((queries, ranked), dtype=np.float64)
        weight[:, :head] = self.weight
        names = request[FUSED["SIGNAL_NAMES"].name]
        weights = np.concatenate([request[FUSED["SIGNAL_WEIGHTS"].name], weight[..., None]],
                                 axis=2)
        values = np.concatenate([request[FUSED["SIGNALS"].name], part[..., None]], axis=2)
        return {SIGNAL_NAMES.name: np.concatenate(
                    [names, np.full((queries, 1), RERANKER_NAME.encode(), dtype=object)], axis=1),
                SIGNAL_WEIGHTS.name: np.take_along_axis(weights, order[..., None], axis=1),
                SIGNALS.name: np.take_along_axis(values, order[..., None], axis=1),
                CORRECTED.name: request[FUSED["CORRECTED"].name]}
