"""Export the review sentiment classifier to ONNX (softmax over the stars and their sum per
class inside the graph) and check it against PyTorch on real reviews.

    out_dir/
      sentiment.onnx   input_ids, attention_mask (int64 [batch, tokens]) → probabilities
                       (float32 [batch, 3]: negative, neutral, positive)
      tokenizer.json   the encoder's tokenizer
      sentiment.json   classes, max_tokens, ONNX sha256, parity, the dev-chosen decision
                       offsets and temperature (SentimentRecord)
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fusionrank.core import artefacts
from fusionrank.core.encoding import OnnxEncoder, TextTokenizer
from fusionrank.core.sentiment.contract import CLASS_OF_STAR, SENTIMENT_CLASSES
from fusionrank.core.sentiment.runtime import SentimentRecord
from fusionrank.export.graphs import check_parity, export_token_graph

PARITY_TOLERANCE = 1e-4  # on each probability
PARITY_BATCH = 32


class ProbabilityModel(nn.Module):
    """A classifier of (input_ids, attention_mask) → star logits, with its softmax and the sum
    of each class's stars, so the served graph returns class probabilities."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier
        groups = torch.eye(len(SENTIMENT_CLASSES))[list(CLASS_OF_STAR)]  # [stars, classes]
        self.register_buffer("groups", groups)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(input_ids, attention_mask), dim=-1) @ self.groups


def export_sentiment(classifier: nn.Module, classes: Sequence[str], max_tokens: int,
                     tokenizer: Path, out_dir: str | Path, check_texts: Sequence[str],
                     checkpoint: str, decision_offsets: Sequence[float] = (0.0, 0.0, 0.0),
                     temperature: float = 1.0) -> SentimentRecord:
    """Write SENTIMENT_FILES into `out_dir`; fail unless ONNX Runtime's probabilities for
    `check_texts` (padded batches of real text) are within PARITY_TOLERANCE of PyTorch's.
    `checkpoint` records where the weights came from; `decision_offsets` and `temperature`
    (already folded into the classifier) are recorded for the served decision."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = ProbabilityModel(classifier).eval()
    onnx_path = export_token_graph(module, out_dir / artefacts.SENTIMENT_MODEL, "probabilities")
    tokenizer_path = out_dir / artefacts.TOKENIZER
    shutil.copyfile(tokenizer, tokenizer_path)
    texts = list(check_texts)
    text_tokenizer, graph = TextTokenizer(tokenizer_path, max_tokens), OnnxEncoder(onnx_path)
    expected, actual = [], []
    for start in range(0, len(texts), PARITY_BATCH):
        batch = text_tokenizer(texts[start : start + PARITY_BATCH])
        with torch.no_grad():
            expected.append(module(torch.from_numpy(batch.input_ids),
                                   torch.from_numpy(batch.attention_mask)).numpy())
        actual.append(graph(batch))
    worst = check_parity("sentiment classifier", np.concatenate(expected) if expected else
                         np.empty((0, len(classes))), np.concatenate(actual) if actual else
                         np.empty((0, len(classes))), max_abs_diff=PARITY_TOLERANCE,
                         labels=texts)
    record = SentimentRecord(list(classes), max_tokens, artefacts.file_sha256(onnx_path),
                             checkpoint, len(texts), worst,
                             tuple(float(o) for o in decision_offsets), float(temperature))
    record.save(out_dir)
    return record
