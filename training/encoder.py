"""The encoder being trained: the bundled all-MiniLM-L6-v2 (or any local BERT-family folder)
inside `MeanPooledEncoder`, the exact module whose ONNX export the server runs; and the
Hugging Face folders checkpoints are saved as."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fusionrank.core import artefacts
from fusionrank.core.model_folders import check_model_folder
from fusionrank.export.encoder import ExportedEncoder, export_encoder

# Files copied unchanged from the initial model folder into every checkpoint, so a checkpoint
# tokenises exactly as the model it started from.
TOKENIZER_FILES = (artefacts.TOKENIZER, "vocab.txt", "tokenizer_config.json",
                   "special_tokens_map.json")


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


def load_transformer(model_dir: str | Path) -> nn.Module:
    """A local Hugging Face model folder's transformer, loaded without transformers' "Loading
    weights" progress bar: a load takes milliseconds, and its bar is noise in a build's output."""
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        return AutoModel.from_pretrained(check_model_folder(model_dir), local_files_only=True)
    finally:
        if shown:
            transformers_logging.enable_progress_bar()


def load_pooled_encoder(model_dir: str | Path) -> MeanPooledEncoder:
    return MeanPooledEncoder(load_transformer(model_dir)).eval()


def export_model_folder(model_dir: str | Path, out_dir: Path,
                        check_texts: Sequence[str]) -> ExportedEncoder:
    """A Hugging Face encoder folder (the bundled model, a fine-tuned checkpoint) exported to
    ONNX with its tokenizer, parity-checked on `check_texts`."""
    model_dir = check_model_folder(model_dir)
    return export_encoder(load_pooled_encoder(model_dir), model_dir / artefacts.TOKENIZER,
                          out_dir, check_texts, source=str(model_dir))


class EncoderWithTokenizer:
    """A `MeanPooledEncoder` and the tokenizer of its folder."""

    def __init__(self, model_dir: str | Path):
        from transformers import AutoModel, AutoTokenizer

        self.source = check_model_folder(model_dir)
        transformer = AutoModel.from_pretrained(self.source, local_files_only=True)
        self.module = MeanPooledEncoder(transformer)
        self.tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=True)

    def freeze(self, layers: int) -> list[torch.nn.Parameter]:
        """Freeze the embeddings and the lowest `layers` transformer layers (0: train all);
        returns the parameters left to train."""
        transformer = self.module.transformer
        if layers > 0:
            frozen = [transformer.embeddings, *transformer.encoder.layer[:layers]]
            for part in frozen:
                for parameter in part.parameters():
                    parameter.requires_grad_(False)
        return [p for p in self.module.parameters() if p.requires_grad]

    def tokens(self, texts: Sequence[str], max_tokens: int) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=max_tokens, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def embed(self, texts: Sequence[str], max_tokens: int) -> torch.Tensor:
        return self.module(**self.tokens(texts, max_tokens))

    @torch.no_grad()
    def embed_eval(self, texts: Sequence[str], max_tokens: int, batch_size: int = 128
                   ) -> torch.Tensor:
        was_training = self.module.training
        self.module.eval()
        # Length-sorted batches: far less padding, so far less compute on CPU.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.module.transformer.config.hidden_size)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self.embed([texts[i] for i in chunk], max_tokens)
        self.module.train(was_training)
        return out

    def save(self, folder: Path) -> None:
        """An ordinary Hugging Face folder: config.json, model.safetensors, tokenizer files."""
        folder.mkdir(parents=True, exist_ok=True)
        self.module.transformer.save_pretrained(folder, safe_serialization=True)
        for name in TOKENIZER_FILES:
            if (self.source / name).is_file():
                shutil.copyfile(self.source / name, folder / name)

    def load_weights(self, folder: Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(check_model_folder(folder) / "model.safetensors"))
        self.module.transformer.load_state_dict(state, strict=False)
