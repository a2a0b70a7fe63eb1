"""The sentiment runtime: review text → class probabilities (negative, neutral, positive).

A review is checked (`check_review`), tokenised and truncated to the classifier's token window,
and the exported classifier (softmax inside the graph) runs over length-sorted batches. The
served steps (`model_repository/sentiment/steps.py`) run the same tokenizer and graph through
`fusionrank.core.encoding`; the offline evaluator and the product-sentiment feature call
`SentimentRuntime` directly. numpy, tokenizers and ONNX Runtime only: never torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.encoding import OnnxEncoder, TextTokenizer, pad
from fusionrank.core.sentiment.contract import MAX_REVIEW_BATCH, check_review


@dataclass(frozen=True)
class SentimentRecord:
    """What `sentiment.json` records about an export; the serving steps read `max_tokens` and
    `decision_offsets`."""

    classes: list[str]
    max_tokens: int
    onnx_sha256: str
    checkpoint: str
    parity_texts: int
    parity_max_abs_diff: float
    # Added to log P before the arg-max (`decide`); chosen on dev for macro-F1. An export
    # from before they existed decides by the plain arg-max.
    decision_offsets: tuple[float, ...] = (0.0, 0.0, 0.0)
    temperature: float = 1.0  # dividing the star logits (folded into the graph): calibration

    def save(self, folder: str | Path) -> None:
        (Path(folder) / artefacts.SENTIMENT_RECORD).write_text(
            json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> SentimentRecord:
        path = Path(folder) / artefacts.SENTIMENT_RECORD
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: export the classifier with "
                                    "`fusionrank train-sentiment` first")
        fields = json.loads(path.read_text(encoding="utf-8"))
        if "decision_offsets" in fields:
            fields["decision_offsets"] = tuple(fields["decision_offsets"])
        return cls(**fields)


def decide(probabilities: np.ndarray, offsets: Sequence[float]) -> np.ndarray:
    """Class indices: arg-max of log P + offsets. The probabilities stay calibrated for whoever
    averages them; the offsets move only the decision (toward the minority classes)."""
    log_p = np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), 1e-12))
    return np.argmax(log_p + np.asarray(offsets, dtype=np.float64), axis=1)


class SentimentRuntime:
    """An exported classifier folder (SENTIMENT_FILES), ready to classify reviews."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        folder = Path(folder)
        self.record = SentimentRecord.load(folder)  # fails clearly when nothing was exported
        self.classes = tuple(self.record.classes)
        self.tokenizer = TextTokenizer(folder / artefacts.TOKENIZER, self.record.max_tokens)
        self.classifier = OnnxEncoder(folder / artefacts.SENTIMENT_MODEL, threads)

    def __call__(self, texts: Sequence[str], batch_size: int = MAX_REVIEW_BATCH,
                 progress: bool = False) -> np.ndarray:
        """Probabilities [len(texts), classes]; a RequestError for a text the server rejects.
        Texts go in length-sorted batches so little of the work is padding."""
        checked = [check_review(text, row) for row, text in enumerate(texts)]
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(checked), len(self.classes)), dtype=np.float32)
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="classifying reviews", unit="batch", mininterval=5.0)
        for start in starts:
            rows = order[start : start + batch_size]
            batch = pad(self.tokenizer.token_ids([checked[i] for i in rows]))
            out[rows] = self.classifier(batch)
        return out

    def labels(self, probabilities: np.ndarray) -> np.ndarray:
        """The served decision for probabilities this runtime returned (class indices)."""
        return decide(probabilities, self.record.decision_offsets)
