"""Catalogue and query embeddings through the served path: the encoder exported to ONNX and
run by ONNX Runtime (fusionrank.core.encoding), which is also the fastest path on CPU.

Catalogue embeddings take minutes, so they are cached by (model weights, titles) hash.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.encoding import (
    MAX_QUERY_TOKENS,
    MAX_TITLE_TOKENS,
    OnnxEncoder,
    TextEncoder,
    TextTokenizer,
)
from fusionrank.core.model_folders import check_model_folder
from fusionrank.training.encoder import export_model_folder

PARITY_TEXTS = 64


def exported_encoder(model_dir: Path, out_dir: Path, check_texts: Sequence[str]) -> Path:
    """`out_dir` holding encoder.onnx + tokenizer.json for `model_dir` (exported once)."""
    if not ((out_dir / artefacts.ENCODER).is_file() and (out_dir / artefacts.TOKENIZER).is_file()):
        export_model_folder(model_dir, out_dir, list(check_texts)[:PARITY_TEXTS])
    return out_dir


def weights_digest(model_dir: Path) -> str:
    model_dir = check_model_folder(model_dir)
    weights = next(p for p in (model_dir / "model.safetensors", model_dir / "pytorch_model.bin")
                   if p.is_file())
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def texts_digest(texts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]


class Embedder:
    """Queries and titles → unit embeddings with one exported encoder."""

    def __init__(self, onnx_dir: Path, threads: int | None = None,
                 model_file: str = artefacts.ENCODER):
        self.onnx_dir = onnx_dir
        encoder = OnnxEncoder(onnx_dir / model_file, threads=threads)
        self.titles = TextEncoder(TextTokenizer(onnx_dir / artefacts.TOKENIZER, MAX_TITLE_TOKENS),
                                  encoder, batch_size=64)
        self.queries = TextEncoder(TextTokenizer(onnx_dir / artefacts.TOKENIZER, MAX_QUERY_TOKENS),
                                   encoder, batch_size=128)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.queries.encode(list(texts))

    def encode_titles(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        return self.titles.encode(list(texts), progress=progress)


def catalogue_embeddings(model_dir: Path, titles: Sequence[str], work_dir: Path,
                         threads: int | None = None) -> tuple[np.ndarray, Embedder]:
    """Embeddings of every title (cached in `work_dir`) and the embedder that made them."""
    key = f"{weights_digest(model_dir)}-{texts_digest(titles)}"
    folder = work_dir / key
    embedder = Embedder(exported_encoder(model_dir, folder / "onnx", titles), threads)
    cached = folder / "catalogue.npy"
    if cached.is_file():
        embeddings = np.load(cached)
        if embeddings.shape[0] == len(titles):
            return embeddings, embedder
    print(f"embedding {len(titles)} titles with {model_dir} (ONNX Runtime)", file=sys.stderr)
    embeddings = embedder.encode_titles(titles)
    tmp = folder / "catalogue.tmp.npy"
    np.save(tmp, embeddings)
    tmp.replace(cached)
    return embeddings, embedder


def int8_embedder(embedder: Embedder, check_texts: Sequence[str],
                  threads: int | None = None) -> Embedder:
    """The embedder's encoder quantised to INT8 as `fusionrank build` serves it on CPU (made
    once, beside the FP32 export; remade where an older method made it)."""
    from fusionrank.export.quantize import quantise_encoder, quantised_with_this_method

    int8 = embedder.onnx_dir / artefacts.ENCODER_INT8
    if not quantised_with_this_method(int8):
        quantise_encoder(embedder.onnx_dir / artefacts.ENCODER,
                         embedder.onnx_dir / artefacts.TOKENIZER, int8, list(check_texts))
    return Embedder(embedder.onnx_dir, threads, model_file=artefacts.ENCODER_INT8)
