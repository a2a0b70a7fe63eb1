"""Fused ranking: S = Σ wᵢ·signalᵢ over each query's candidates (α·s + β·f, and so on).

The weights live in a small JSON file beside the ranker, written by whoever fitted them, so the
served ranking and the offline evaluator apply the very same numbers.

A cascade (`Cascade`) ranks in two stages, as search engines do: a cheap first-stage score
(a weighted sum of signals every candidate has, such as 0.65·s + 0.35·lexical) orders the
whole pool, only its top `depth` candidates get the expensive signals (the feedback head), and
S orders those; the rest follow below them in the first stage's order.
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


def _check_signals(weights: Mapping[str, float], what: str) -> None:
    unknown = sorted(set(weights) - set(SIGNAL_TENSORS))
    if unknown:
        raise ValueError(f"unknown {what} signal(s) {unknown}; known: {sorted(SIGNAL_TENSORS)}")
    if not weights:
        raise ValueError(f"the {what} needs at least one weighted signal")


@dataclass
class Cascade:
    """Two-stage ranking: `first_stage` (weights of signals every candidate has) orders the
    pool, and S orders its top `depth`; the signals S alone reads (the feedback) are computed
    for those only."""

    depth: int
    first_stage: dict[str, float]

    def __post_init__(self) -> None:
        _check_signals(self.first_stage, "first-stage")
        if "feedback" in self.first_stage:
            raise ValueError("the first stage orders the pool before the feedback is computed: "
                             "it cannot weigh it")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"cascade depth must be a positive integer, not {self.depth!r}")

    def first_scores(self, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        """float64 [queries, pool]: every candidate's first-stage score."""
        return fuse([(w, tensors[SIGNAL_TENSORS[name]]) for name, w in self.first_stage.items()])

    def head(self, candidates: np.ndarray, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        """int64 [queries, min(depth, pool)]: the pool positions of each query's top `depth`
        by the first stage (ties by catalogue order), best first."""
        return _order(candidates, self.first_scores(tensors))[:, :self.depth]


@dataclass
class FusionWeights:
    weights: dict[str, float] = field(default_factory=lambda: {"similarity": 1.0})
    # How the weights were chosen: the data, split and metric of the fit, or why none was needed.
    provenance: str = "one signal only: the ranking does not depend on its weight"
    cascade: Cascade | None = None  # None: S orders the whole pool

    def __post_init__(self) -> None:
        _check_signals(self.weights, "ranking")
        if isinstance(self.cascade, Mapping):  # as read from JSON
            self.cascade = Cascade(**self.cascade)
        if self.cascade is not None:
            first = self.cascade.first_stage
            if set(first) - set(self.weights):
                raise ValueError(f"the first stage weighs {sorted(set(first) - set(self.weights))}"
                                 f", which the ranking does not fuse: {sorted(self.weights)}")
            # Summed in S's order, as an explanation lists the parts: the same float64 sum.
            self.cascade.first_stage = {n: first[n] for n in self.weights if n in first}

    @classmethod
    def load(cls, path: Path) -> FusionWeights:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    def save(self, path: Path) -> None:
        saved = asdict(self)
        if self.cascade is None:  # the file of a one-stage ranking reads as it always has
            del saved["cascade"]
        Path(path).write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")

    def signals(self, tensors: Mapping[str, np.ndarray]) -> list[tuple[float, np.ndarray]]:
        return [(w, tensors[SIGNAL_TENSORS[name]]) for name, w in self.weights.items()]

    def cascades(self, pool: int) -> bool:
        """Whether a pool of this size is ranked in two stages (a depth that covers the whole
        pool ranks it in one: the same ranking)."""
        return self.cascade is not None and self.cascade.depth < pool

    def head(self, candidates: np.ndarray, tensors: Mapping[str, np.ndarray]
             ) -> np.ndarray | None:
        """The pool positions whose S is computed, [queries, depth] (None: every one)."""
        return self.cascade.head(candidates, tensors) if self.cascades(candidates.shape[1]) \
            else None

    def ranked_positions(self, candidates: np.ndarray, tensors: Mapping[str, np.ndarray],
                         k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per query row: the positions in the pool of its k best candidates, and their
        scores: S, and in a cascade the first-stage score of those below its head. `tensors`:
        the signals by tensor name, each [queries, pool]; in a cascade only the head's
        feedback is read."""
        if not self.cascades(candidates.shape[1]):
            return ranked_positions(candidates, self.signals(tensors), k)
        first = self.cascade.first_scores(tensors)
        by_first = _order(candidates, first)
        head, tail = by_first[:, :self.cascade.depth], by_first[:, self.cascade.depth:k]
        at_head = {name: np.take_along_axis(np.asarray(value), head, axis=1)
                   for name, value in tensors.items() if name in _SIGNAL_NAMES}
        within, scores = ranked_positions(np.take_along_axis(candidates, head, axis=1),
                                          self.signals(at_head), min(k, head.shape[1]))
        order = np.concatenate([np.take_along_axis(head, within, axis=1), tail], axis=1)
        scores = np.concatenate([scores, np.take_along_axis(first, tail, axis=1)], axis=1)
        return order, scores


_SIGNAL_NAMES = frozenset(SIGNAL_TENSORS.values())


def fuse(signals: list[tuple[float, np.ndarray]]) -> np.ndarray:
    return sum(w * np.asarray(s, dtype=np.float64) for w, s in signals)


def _order(candidates: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per query row: every pool position, best score first (ties by catalogue order)."""
    return np.lexsort((candidates, -np.round(scores / TIE_RESOLUTION)), axis=-1)


def ranked_positions(candidates: np.ndarray, signals: list[tuple[float, np.ndarray]],
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query row: the positions in the pool of the k best candidates by fused score (ties
    by catalogue order), and their scores. `candidates` and every signal are [queries, pool]."""
    scores = fuse(signals)
    order = _order(candidates, scores)[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def rank(candidates: np.ndarray, signals: list[tuple[float, np.ndarray]],
         k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query row: the k best candidates by fused score (ties by catalogue order), and
    their scores."""
    order, scores = ranked_positions(candidates, signals, k)
    return np.take_along_axis(candidates, order, axis=1), scores
