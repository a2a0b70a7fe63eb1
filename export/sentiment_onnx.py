"""Export the review sentiment classifier to ONNX (softmax inside the graph) and check it
against PyTorch on real reviews.

    out_dir/
      sentiment.onnx   input_ids, attention_mask (int64 [batch, tokens]) → probabilities
                       (float32 [batch, 3]: negative, neutral, positive)
      tokenizer.json   the encoder's tokenizer
      sentiment.json   classes, max_tokens, ONNX sha256, parity (SentimentArtefacts)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fusionrank.encoding import TextTokenizer, onnx_session
from fusionrank.export.onnx_encoder import TOKENIZER_FILE, export_token_graph, file_sha256
from fusionrank.training.sentiment import ENCODER_DIR, SentimentClassifier, load_classifier

MODEL_FILE = "sentiment.onnx"
ARTEFACTS_FILE = "sentiment.json"
PARITY_TOLERANCE = 1e-4


class ProbabilityModel(nn.Module):
    """The classifier with its softmax, so the served graph returns probabilities."""

    def __init__(self, classifier: SentimentClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(input_ids, attention_mask), dim=-1)


@dataclass(frozen=True)
class SentimentArtefacts:
    """What `sentiment.json` records about an export; the serving steps read `max_tokens`."""

    classes: list[str]
    max_tokens: int
    onnx_sha256: str
    checkpoint: str
    parity_texts: int
    parity_max_abs_diff: float

    def save(self, folder: Path) -> None:
        (folder / ARTEFACTS_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n",
                                             encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> SentimentArtefacts:
        path = Path(folder) / ARTEFACTS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: export the classifier with "
                                    "`fusionrank train-sentiment` first")
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def export_sentiment(checkpoint: str | Path, out_dir: str | Path,
                     check_texts: Sequence[str]) -> SentimentArtefacts:
    """Write the ONNX model, tokenizer and record into `out_dir`; fail unless ONNX Runtime's
    probabilities for `check_texts` are within PARITY_TOLERANCE of PyTorch's."""
    classifier, manifest = load_classifier(checkpoint)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = ProbabilityModel(classifier).eval()
    onnx_path = export_token_graph(module, out_dir / MODEL_FILE, "probabilities")
    tokenizer_path = out_dir / TOKENIZER_FILE
    shutil.copyfile(Path(checkpoint) / ENCODER_DIR / TOKENIZER_FILE, tokenizer_path)
    worst = parity_check(module, onnx_path, TextTokenizer(tokenizer_path, manifest.max_tokens),
                         check_texts)
    artefacts = SentimentArtefacts(list(manifest.classes), manifest.max_tokens,
                                   file_sha256(onnx_path), str(checkpoint), len(check_texts),
                                   worst)
    artefacts.save(out_dir)
    return artefacts


def parity_check(module: ProbabilityModel, onnx_path: Path, tokenizer: TextTokenizer,
                 texts: Sequence[str], tolerance: float = PARITY_TOLERANCE,
                 batch_size: int = 32) -> float:
    """Largest absolute difference between PyTorch's and ONNX Runtime's probabilities, over
    batches of real (padded) texts; raises when it exceeds `tolerance`."""
    if not texts:
        raise ValueError("the parity check needs at least one text")
    session = onnx_session(onnx_path)
    worst, worst_text = 0.0, ""
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        batch = tokenizer(chunk)
        with torch.no_grad():
            expected = module(torch.from_numpy(batch.input_ids),
                              torch.from_numpy(batch.attention_mask)).numpy()
        (actual,) = session.run(None, {"input_ids": batch.input_ids,
                                       "attention_mask": batch.attention_mask})
        diff = np.abs(expected - actual).max(axis=1)
        if diff.max() > worst:
            worst, worst_text = float(diff.max()), chunk[int(diff.argmax())]
    if worst > tolerance:
        raise RuntimeError(f"ONNX export diverges from PyTorch: probability difference "
                           f"{worst:.2e} > {tolerance:.0e} for {worst_text!r}")
    return worst
