"""Text → embedding at inference time: a fast tokenizer and an ONNX Runtime encoder.

This module is what runs inside the server's model processes and in the in-process reference
pipeline, so it imports only numpy, tokenizers and onnxruntime (never torch).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts

ONNX_OPSET = 17  # every ONNX graph the project writes (exports and the features graph)
MAX_QUERY_TOKENS = 32
MAX_TITLE_TOKENS = 64


@dataclass(frozen=True, slots=True)
class TokenBatch:
    """Token ids and attention mask, padded to the batch's longest sequence."""

    input_ids: np.ndarray  # int64 [batch, tokens]
    attention_mask: np.ndarray  # int64 [batch, tokens]


class TextTokenizer:
    """The encoder's WordPiece tokenizer, read from its `tokenizer.json`."""

    def __init__(self, tokenizer_json: str | Path, max_tokens: int):
        from tokenizers import Tokenizer

        path = Path(tokenizer_json)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} not found")
        self._configure(Tokenizer.from_file(str(path)), max_tokens)

    @classmethod
    def from_json(cls, text: str, max_tokens: int) -> TextTokenizer:
        """The tokenizer from the text of a `tokenizer.json` (one sent to another machine)."""
        from tokenizers import Tokenizer

        tokenizer = cls.__new__(cls)
        tokenizer._configure(Tokenizer.from_str(text), max_tokens)
        return tokenizer

    def _configure(self, tokenizer, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_tokens)

    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's ids (with [CLS] and [SEP]), unpadded."""
        encodings = self._tokenizer.encode_batch(list(texts))
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        return pad(self.token_ids(texts))


def pad(sequences: Sequence[np.ndarray], length: int | None = None) -> TokenBatch:
    """Right-pad id sequences with 0 ([PAD]) into one batch, with the matching mask: to the
    longest sequence, or to `length` (a fixed shape, as TensorRT profiles want)."""
    longest = max(len(s) for s in sequences)
    if length is not None:
        if longest > length:
            raise ValueError(f"a sequence of {longest} tokens does not fit a length of {length}")
        longest = length
    ids = np.zeros((len(sequences), longest), dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = sequence
        mask[row, : len(sequence)] = 1
    return TokenBatch(ids, mask)


def onnx_session(model_path: str | Path | bytes, threads: int | None = None):
    """An ONNX Runtime CPU session with the graph fully optimised, from a file or from a
    serialised model."""
    import onnxruntime as ort

    if not isinstance(model_path, bytes):
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"ONNX model {model_path} not found: run `fusionrank build` "
                                    "first")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or int(os.environ.get("FUSIONRANK_ORT_THREADS", "0"))
    options.inter_op_num_threads = 1
    # Idle ORT threads spin by default; on a small machine shared by several model processes
    # that steals the cores the next pipeline step needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model_path if isinstance(model_path, bytes) else str(model_path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """Token batch → unit-length sentence embedding (pooling and normalisation are in the graph)."""

    def __init__(self, model_path: str | Path | bytes, threads: int | None = None):
        self._session = onnx_session(model_path, threads)
        self.dimension = int(self._session.get_outputs()[0].shape[-1])

    def __call__(self, batch: TokenBatch) -> np.ndarray:
        (embeddings,) = self._session.run(
            None, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
        return embeddings


class TextEncoder:
    """Texts → embeddings, in length-sorted chunks so padding stays small."""

    def __init__(self, tokenizer: TextTokenizer, encoder: OnnxEncoder, batch_size: int = 64):
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.batch_size = batch_size

    @classmethod
    def titles_of(cls, folder: str | Path, threads: int | None = None) -> TextEncoder:
        """The title encoder a folder holds: artefacts.ENCODER and its TOKENIZER."""
        folder = Path(folder)
        return cls(TextTokenizer(folder / artefacts.TOKENIZER, MAX_TITLE_TOKENS),
                   OnnxEncoder(folder / artefacts.ENCODER, threads))

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        ids = self.tokenizer.token_ids(texts)
        order = np.argsort([len(s) for s in ids], kind="stable")
        out = np.empty((len(texts), self.encoder.dimension), dtype=np.float32)
        starts = range(0, len(order), self.batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="encoding", unit="batch")
        for start in starts:
            chunk = order[start : start + self.batch_size]
            out[chunk] = self.encoder(pad([ids[i] for i in chunk]))
        return out
