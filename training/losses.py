"""Contrastive loss with in-batch and hard negatives that respects graded labels.

For query i, the candidates are every positive in the batch and every hard negative; the
target is its own positive. Two things make it grade-aware:
- each pair's loss is weighted by its positive's grade, (grade − 1) / 2, so a 3.0 pair counts
  fully and a 2.33 pair two thirds;
- in-batch candidates that are judged relevant for query i (other than its own positive) are
  masked out: they are not negatives, and pushing them away would teach the wrong thing.
"""

from __future__ import annotations

import torch
from torch import nn


class GradedMultipleNegativesLoss(nn.Module):
    def __init__(self, scale: float = 20.0):
        super().__init__()
        # Inverse temperature on cosine similarities (sentence-transformers' default).
        self.scale = scale

    def forward(self, queries: torch.Tensor, documents: torch.Tensor, weights: torch.Tensor,
                excluded: torch.Tensor) -> torch.Tensor:
        """queries [B, d] and documents [B + H, d] are unit vectors, documents[i] is query i's
        positive; weights [B]; excluded [B, B + H] bool, True where a candidate is not a
        negative for that query."""
        logits = self.scale * queries @ documents.T
        logits = logits.masked_fill(excluded, float("-inf"))
        targets = torch.arange(len(queries), device=queries.device)
        losses = nn.functional.cross_entropy(logits, targets, reduction="none")
        return (losses * weights).sum() / weights.sum().clamp(min=1e-9)
