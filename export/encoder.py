"""Export a sentence encoder (token ids → unit-length embedding, pooling and L2 normalisation
inside the module) to ONNX, and check the export against PyTorch on real text."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fusionrank.core import artefacts
from fusionrank.core.encoding import MAX_TITLE_TOKENS, OnnxEncoder, TextTokenizer
from fusionrank.export.graphs import check_parity, export_token_graph

MIN_COSINE = 0.9999  # every check text's ONNX embedding against PyTorch's


@dataclass(frozen=True)
class ExportedEncoder:
    folder: Path
    onnx_path: Path
    tokenizer_path: Path
    sha256: str
    source: str
    min_cosine: float


def export_encoder(module: nn.Module, tokenizer: Path, out_dir: str | Path,
                   check_texts: Sequence[str], source: str) -> ExportedEncoder:
    """Write ENCODER (the traced `module`) and a copy of `tokenizer` into `out_dir`; fail unless
    the ONNX embeddings of `check_texts` match PyTorch's with cosine >= MIN_COSINE for every
    text. `source` records where the weights came from."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = export_token_graph(module, out_dir / artefacts.ENCODER, "embedding")
    tokenizer_path = out_dir / artefacts.TOKENIZER
    with artefacts.replacing(tokenizer_path) as temporary:
        shutil.copyfile(tokenizer, temporary)
    texts = list(check_texts)
    batch = TextTokenizer(tokenizer_path, MAX_TITLE_TOKENS)(texts)
    with torch.no_grad():
        expected = module(torch.from_numpy(batch.input_ids),
                          torch.from_numpy(batch.attention_mask)).numpy()
    worst = check_parity("sentence encoder", expected, OnnxEncoder(onnx_path)(batch),
                         min_cosine=MIN_COSINE, labels=texts)
    return ExportedEncoder(out_dir, onnx_path, tokenizer_path, artefacts.file_sha256(onnx_path),
                           source, worst)
