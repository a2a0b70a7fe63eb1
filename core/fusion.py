"""Fused ranking: S = Σ wᵢ·signalᵢ over each query's candidates (α·s + β·f, and so on).

The weights live in a small JSON file beside the ranker, written by whoever fitted them, so the
served ranking and the offline evaluator apply the very same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# Scores closer than this are a tie, broken by catalogue order: batched and unbatched float
# arithmetic differ in the last bits, and the order must not depend on how requests were batched.
TIE_RESOLUTION = 1e-6

# Which request tensor carries each signal.
SIGNAL_TENSORS = {"similarity": "SIMILARITY", "feedback": "FEEDBACK", "lexical": "LEXICAL"}


@dataclass
class FusionWeights:
    weights: dict[str, float] = field(default_factory=lambda: {"similarity": 1.0})
    # How the weights were chosen: the data, split and metric of the fit, or why none was needed.
    provenance: str = "one signal only: the ranking does not depend on its weight"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(SIGNAL_TENSORS))
        if unknown:
            raise ValueError(f"unknown ranking signal(s) {unknown}; "
                             f"known: {sorted(SIGNAL_TENSORS)}")
        if not self.weights:
            raise ValueError("the ranking needs at least one weighted signal")

    @classmethod
    def load(cls, path: Path) -> FusionWeights:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    def signals(self, tensors: Mapping[str, np.ndarray]) -> list[tuple[float, np.ndarray]]:
        return [(w, tensors[SIGNAL_TENSORS[name]]) for name, w in self.weights.items()]


def fuse(signals: list[tuple[float, np.ndarray]]) -> np.ndarray:
    return sum(w * np.asarray(s, dtype=np.float64) for w, s in signals)


def ranked_positions(candidates: np.ndarray, signals: list[tuple[float, np.ndarray]],
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query row: the positions in the pool of the k best candidates by fused score (ties
    by catalogue order), and their scores. `candidates` and every signal are [queries, pool]."""
    scores = fuse(signals)
    keys = np.round(scores / TIE_RESOLUTION)
    order = np.lexsort((candidates, -keys), axis=-1)[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def rank(candidates: np.ndarray, signals: list[tuple[float, np.ndarray]],
         k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query row: the k best candidates by fused score (ties by catalogue order), and
    their scores."""
    order, scores = ranked_positions(candidates, signals, k)
    return np.take_along_axis(candidates, order, axis=1), scores
