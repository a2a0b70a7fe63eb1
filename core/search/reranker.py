"""The cross-encoder reranker at inference time: (query, title) pairs → relevance scores.

A cross-encoder reads the query and a product's title as one sequence,
    [CLS] query [SEP] title [SEP]      (token types 0 … 0 1 … 1)
and answers one logit, higher for a more relevant product. Only order matters: it was trained
with a listwise loss, so a logit means nothing on its own, and the final score adds it to the
fused S with a weight fitted on dev (`RerankStage`).

Over-long text is truncated, never refused: the query to `max_query_tokens` word pieces, then
the title to whatever the pair's `max_tokens` leaves. Training tokenises with this same class,
so what the model learnt from is what it is served.

Like `core/encoding.py`, this module runs in the server's model processes and in the offline
evaluator: numpy, tokenizers and onnxruntime only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fusionrank.core.encoding import onnx_session
from fusionrank.core.fusion import TIE_RESOLUTION

PAIR_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SPECIAL_TOKENS = 3  # [CLS], [SEP], [SEP]


@dataclass(frozen=True, slots=True)
class PairBatch:
    """Token ids, attention mask and token types of (query, title) pairs, padded to the
    batch's longest pair."""

    input_ids: np.ndarray  # int64 [pairs, tokens]
    attention_mask: np.ndarray  # int64 [pairs, tokens]
    token_type_ids: np.ndarray  # int64 [pairs, tokens]

    def feeds(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in PAIR_INPUTS}


class PairTokenizer:
    """The reranker's WordPiece tokenizer over (query, title) pairs, from its `tokenizer.json`."""

    def __init__(self, tokenizer_json: str | Path, max_query_tokens: int, max_tokens: int):
        from tokenizers import Tokenizer

        path = Path(tokenizer_json)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} not found")
        if not 1 <= max_query_tokens <= max_tokens - SPECIAL_TOKENS - 1:
            raise ValueError(f"max_query_tokens must leave a pair of {max_tokens} tokens room "
                             f"for a title: 1..{max_tokens - SPECIAL_TOKENS - 1}, not "
                             f"{max_query_tokens}")
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        ids = {name: self._tokenizer.token_to_id(name) for name in ("[CLS]", "[SEP]")}
        if None in ids.values():
            raise ValueError(f"{path} is not a BERT WordPiece tokenizer (no [CLS]/[SEP] token)")
        self.cls, self.sep = ids["[CLS]"], ids["[SEP]"]
        self.vocabulary_size = self._tokenizer.get_vocab_size()
        self.max_query_tokens = max_query_tokens
        self.max_tokens = max_tokens

    def _pieces(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def __call__(self, queries: Sequence[str], titles: Sequence[str]) -> PairBatch:
        """Pair i is (queries[i], titles[i])."""
        if len(queries) != len(titles):
            raise ValueError(f"{len(queries)} queries for {len(titles)} titles")
        if not len(queries):
            raise ValueError("no pairs to tokenise")
        # Each distinct query is tokenised once: a query's pairs are its candidates.
        distinct = list(dict.fromkeys(queries))
        query_ids = dict(zip(distinct, self._pieces(distinct), strict=True))
        sequences, first_lengths = [], []
        for query, title_ids in zip(queries, self._pieces(titles), strict=True):
            first = [self.cls, *query_ids[query][: self.max_query_tokens], self.sep]
            room = self.max_tokens - len(first) - 1
            sequences.append(first + title_ids[:room] + [self.sep])
            first_lengths.append(len(first))
        longest = max(map(len, sequences))
        ids = np.zeros((len(sequences), longest), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, (sequence, first) in enumerate(zip(sequences, first_lengths, strict=True)):
            ids[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = 1
            types[row, first : len(sequence)] = 1
        return PairBatch(ids, mask, types)


@dataclass(frozen=True)
class RerankerSpec:
    """What a served reranker is: how its pairs are tokenised, and how many of the fused
    ranking's best it reranks with which weight (written beside its ONNX graph as
    `reranker.json`)."""

    max_query_tokens: int
    max_tokens: int
    depth: int  # the fused ranking's top N it reranks
    weight: float  # final = S + weight · logit, fitted on dev
    layers: int
    precision: str  # "fp32" | "int8"
    provenance: str

    @classmethod
    def load(cls, path: str | Path) -> RerankerSpec:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


class OnnxReranker:
    """Pair batch → one float32 logit per pair."""

    def __init__(self, model_path: str | Path | bytes, threads: int | None = None):
        self._session = onnx_session(model_path, threads)
        names = {i.name for i in self._session.get_inputs()}
        if names != set(PAIR_INPUTS):
            raise ValueError(f"{model_path!s:.200}: not a reranker graph (inputs "
                             f"{sorted(names)}, wanted {list(PAIR_INPUTS)})")

    def __call__(self, batch: PairBatch) -> np.ndarray:
        (logits,) = self._session.run(None, batch.feeds())
        return logits.reshape(-1).astype(np.float32, copy=False)


class PairScorer:
    """(query, title) pairs → logits, in length-sorted chunks so padding stays small."""

    def __init__(self, tokenizer: PairTokenizer, model: OnnxReranker, batch_size: int = 64):
        self.tokenizer = tokenizer
        self.model = model
        self.batch_size = batch_size

    def __call__(self, queries: Sequence[str], titles: Sequence[str]) -> np.ndarray:
        out = np.empty(len(queries), dtype=np.float32)
        if not len(queries):
            return out
        order = np.argsort([len(q) + len(t) for q, t in zip(queries, titles, strict=True)],
                           kind="stable")
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[chunk] = self.model(self.tokenizer([queries[i] for i in chunk],
                                                   [titles[i] for i in chunk]))
        return out


def reranked(scores: np.ndarray, logits: np.ndarray, weight: float) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """The last stage over each query's head: `scores` [queries, N] the fused S of its top N
    (best first, float64 as fused), `logits` [queries, N] the reranker's. Answers the head's new
    order (positions into it) and the final scores S + weight · logit (float64) in that order.
    Scores within TIE_RESOLUTION are a tie, kept in the fused order: the order then does not
    depend on how pairs were batched, and weight 0 changes nothing."""
    final = np.asarray(scores, dtype=np.float64) + weight * np.asarray(logits, dtype=np.float64)
    positions = np.broadcast_to(np.arange(final.shape[1]), final.shape)
    order = np.lexsort((positions, -np.round(final / TIE_RESOLUTION)), axis=-1)
    return order, np.take_along_axis(final, order, axis=1)
