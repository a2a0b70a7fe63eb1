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


def embedding_matching_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between the student's and the teacher's embeddings of the same
    queries, [B, d] each. For unit vectors it equals 2 − 2·cos, so it is 0 exactly when the
    student puts every query where the teacher does."""
    return ((student - teacher) ** 2).sum(dim=1).mean()


class ScoreDistillationLoss(nn.Module):
    """KL divergence from the teacher's to the student's distribution over each query's
    candidates: softmax(scale · cos) of the query embedding with each candidate's (fixed)
    embedding. It teaches the student the teacher's ranking of the candidates, not only its
    vectors; candidates whose `valid` is False (padding) take no part."""

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, candidates: torch.Tensor,
                valid: torch.Tensor) -> torch.Tensor:
        """student, teacher [B, d] query embeddings; candidates [B, C, d]; valid [B, C] bool."""
        def log_probabilities(queries: torch.Tensor) -> torch.Tensor:
            logits = self.scale * torch.einsum("bd,bcd->bc", queries, candidates)
            return torch.log_softmax(logits.masked_fill(~valid, float("-inf")), dim=1)

        target = log_probabilities(teacher).detach()
        predicted = log_probabilities(student)
        # Σ p_t (log p_t − log p_s) over the valid candidates (masked terms are 0, not NaN).
        terms = target.exp() * (target - predicted)
        return terms.masked_fill(~valid, 0.0).sum(dim=1).mean()


class GradedListwiseLoss(nn.Module):
    """Listwise softmax cross-entropy for a reranker (ListNet's top-one form): each query's
    candidates' logits against the distribution of their gains, p_i = gain_i / Σ gain with
    gain = grade − 1. The candidates are the query's judged products and its hard negatives
    (gain 0), so the loss ranks the relevant above the rest and, among the relevant, gives a
    3.0 twice the share of a 2.0. A query whose candidates are all irrelevant teaches nothing
    and is left out; padding (`valid` False) takes no part."""

    def forward(self, logits: torch.Tensor, gains: torch.Tensor,
                valid: torch.Tensor) -> torch.Tensor:
        """logits, gains [Q, C]; valid [Q, C] bool."""
        gains = gains.clamp(min=0) * valid
        total = gains.sum(dim=1)
        used = total > 0
        if not bool(used.any()):
            return logits.sum() * 0.0
        log_p = torch.log_softmax(logits.masked_fill(~valid, float("-inf")), dim=1)
        target = gains[used] / total[used, None]
        return -(target * log_p[used].masked_fill(~valid[used], 0.0)).sum(dim=1).mean()
