"""The cross-encoder being trained: a BERT-family transformer reading (query, title) as one
sequence, its [CLS] state through the pooler and one linear unit to a relevance logit
(transformers' sequence classification with one label: the layout sentence-transformers'
`CrossEncoder` loads too). It starts from the bundled all-MiniLM-L6-v2, with only some of its
layers kept (evenly spaced, as the distilled query encoder's), and tokenises with the serving
code's `PairTokenizer`, so training and serving read the same ids."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from fusionrank.core import artefacts
from fusionrank.core.model_folders import check_model_folder
from fusionrank.core.search.reranker import PAIR_INPUTS, PairBatch, PairTokenizer
from fusionrank.training.encoder import TOKENIZER_FILES


class CrossEncoder(nn.Module):
    """(input_ids, attention_mask, token_type_ids) [pairs, tokens] → logits [pairs]."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.classifier(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).logits[:, 0]

    def score(self, batch: PairBatch) -> torch.Tensor:
        return self(*(torch.from_numpy(getattr(batch, name)) for name in PAIR_INPUTS))

    @property
    def layers(self) -> int:
        return int(self.classifier.config.num_hidden_layers)

    @property
    def vocabulary_size(self) -> int:
        return int(self.classifier.config.vocab_size)

    @classmethod
    def load(cls, folder: str | Path) -> CrossEncoder:
        """A folder written by `save` (or an encoder folder: its classifier starts at random)."""
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging as transformers_logging

        folder = check_model_folder(folder)
        verbosity = transformers_logging.get_verbosity()
        shown = transformers_logging.is_progress_bar_enabled()
        transformers_logging.set_verbosity_error()  # "newly initialised classifier" is expected
        transformers_logging.disable_progress_bar()  # a load takes milliseconds
        try:
            classifier = AutoModelForSequenceClassification.from_pretrained(
                folder, num_labels=1, local_files_only=True)
        finally:
            transformers_logging.set_verbosity(verbosity)
            if shown:
                transformers_logging.enable_progress_bar()
        return cls(classifier)

    def save(self, folder: Path, tokenizer_source: Path) -> None:
        """A Hugging Face folder: config.json, model.safetensors and the tokenizer's files."""
        folder.mkdir(parents=True, exist_ok=True)
        self.classifier.save_pretrained(folder, safe_serialization=True)
        for name in TOKENIZER_FILES:
            if (tokenizer_source / name).is_file():
                shutil.copyfile(tokenizer_source / name, folder / name)


def pair_tokenizer(folder: Path, max_query_tokens: int, max_tokens: int) -> PairTokenizer:
    return PairTokenizer(Path(folder) / artefacts.TOKENIZER, max_query_tokens, max_tokens)


def check_tokenizer_matches(model: CrossEncoder, tokenizer: PairTokenizer, model_name: str,
                            tokenizer_name: str) -> None:
    """Refuse a checkpoint whose embedding table is not the tokenizer's vocabulary: its ids
    would read other words (or fall off the table)."""
    if model.vocabulary_size != tokenizer.vocabulary_size:
        raise ValueError(f"reranker checkpoint {model_name} ({model.vocabulary_size} token "
                         f"embeddings) does not match tokenizer {tokenizer_name} "
                         f"({tokenizer.vocabulary_size} tokens)")
