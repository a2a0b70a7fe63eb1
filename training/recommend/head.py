"""The recommendation feedback head: will this shopper buy this product in the next weeks?

Input per (shopper, candidate): the behavioural features of `fusionrank.core.recommend.runtime`
(standardised inside the model), and the element-wise product of the shopper vector and the
product embedding (which directions of the embedding space this shopper's taste and this product
share). Output: a purchase logit. A small MLP trained on the candidate pools of past windows
(label 1 when the shopper bought the candidate in the window after the cut) with a listwise loss:
softmax over each shopper's own pool, so it learns to order one shopper's candidates, which is
what Recall@K measures (pointwise binary cross-entropy is kept as an option; it scored lower).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from fusionrank.core.recommend.runtime import FEATURE_NAMES, Recommender, Shopper
from fusionrank.training.recommend.purchases import histories, returning_targets, split

HIDDEN = 64


class FeedbackMLP(nn.Module):
    def __init__(self, n_features: int, dim: int, mean: np.ndarray, std: np.ndarray,
                 hidden: int = HIDDEN):
        super().__init__()
        # Stored in the module (and so in the ONNX graph) so the served head standardises alike.
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.net = nn.Sequential(nn.Linear(n_features + dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor, shopper: torch.Tensor,
                product: torch.Tensor) -> torch.Tensor:
        x = torch.cat([(features - self.mean) / self.std, shopper * product], dim=1)
        return self.net(x).squeeze(-1)


@dataclass
class Examples:
    """Candidate rows of many shoppers, flattened: example i is (shoppers[shopper[i]], row[i])."""

    features: np.ndarray  # float32 [n, F]
    shopper: np.ndarray  # int64 [n] → index into `shoppers`
    row: np.ndarray  # int64 [n] → catalogue row
    label: np.ndarray  # float32 [n]
    shoppers: np.ndarray  # float32 [customers, dim]
    customers: list[str] = field(default_factory=list)
    cold: np.ndarray | None = None  # bool [n]: a cold product (see Recommender.cold)
    base: np.ndarray | None = None  # bool [n]: in the pool without the cold products added

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, keep: np.ndarray) -> Examples:
        """The examples `keep` marks (shopper vectors kept whole: indices stay valid)."""
        return Examples(self.features[keep], self.shopper[keep], self.row[keep],
                        self.label[keep], self.shoppers, self.customers,
                        None if self.cold is None else self.cold[keep],
                        None if self.base is None else self.base[keep])

    @staticmethod
    def concat(parts: list[Examples]) -> Examples:
        offsets = np.cumsum([0] + [len(p.shoppers) for p in parts[:-1]])
        owners = [p.shopper + o for p, o in zip(parts, offsets, strict=True)]
        return Examples(np.concatenate([p.features for p in parts]), np.concatenate(owners),
                        np.concatenate([p.row for p in parts]),
                        np.concatenate([p.label for p in parts]),
                        np.concatenate([p.shoppers for p in parts]),
                        [c for p in parts for c in p.customers],
                        *(None if any(getattr(p, name) is None for p in parts)
                          else np.concatenate([getattr(p, name) for p in parts])
                          for name in ("cold", "base")))


def window_shoppers(recommender: Recommender, before: pd.DataFrame,
                    customers: list[str]) -> dict[str, Shopper]:
    """Each customer's Shopper from their purchases before the cut (as a client would send)."""
    return {c: recommender.shopper(h.products, h.times)
            for c, h in histories(before, customers).items()}


def window_examples(recommender: Recommender, purchases: pd.DataFrame, window) -> Examples:
    """The candidate pools of the window's returning customers (with the cold products nearest
    each, marked `cold`), labelled by what they bought after the cut. `recommender` must hold
    the statistics as of `window.cut`."""
    before, after = split(purchases, window)
    targets = returning_targets(before, after)
    shoppers = window_shoppers(recommender, before, sorted(targets))
    features, owner, rows, labels, vectors, base = [], [], [], [], [], []
    for index, (customer, shopper) in enumerate(shoppers.items()):
        pool, pool_features, _, in_base = recommender.pool(shopper, with_cold=True)
        base.append(in_base)
        bought = {recommender.row_of[p] for p in targets[customer] if p in recommender.row_of}
        features.append(pool_features)
        owner.append(np.full(len(pool), index))
        rows.append(pool)
        labels.append(np.isin(pool, list(bought)).astype(np.float32))
        vectors.append(shopper.vector)
    rows = np.concatenate(rows)
    return Examples(np.concatenate(features), np.concatenate(owner), rows,
                    np.concatenate(labels), np.stack(vectors), list(shoppers),
                    recommender.cold[rows], np.concatenate(base))


@dataclass
class TrainingLog:
    examples: int
    positives: int
    epochs: int
    seconds: float
    losses: list[float]


def listwise_loss(logits: torch.Tensor, group: torch.Tensor, labels: torch.Tensor,
                  groups: int) -> torch.Tensor:
    """Mean over shoppers of −log softmax(their pool) at what they bought: it rewards ranking
    each shopper's purchases above their own other candidates, which is what Recall@K counts."""
    top = torch.full((groups,), -torch.inf).scatter_reduce(0, group, logits.detach(), "amax")
    total = torch.zeros(groups).index_add(0, group, torch.exp(logits - top[group]))
    log_softmax = logits - (top + torch.log(total))[group]
    bought = torch.zeros(groups).index_add(0, group, labels)
    gained = torch.zeros(groups).index_add(0, group, labels * log_softmax)
    has = bought > 0
    if not has.any():  # no purchase in this batch's pools: nothing to learn, no NaN
        return logits.sum() * 0.0
    return -(gained[has] / bought[has]).mean()


def shopper_batches(examples: Examples, batch_size: int,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """Example indices, whole shoppers at a time, about `batch_size` examples per batch."""
    order = np.argsort(examples.shopper, kind="stable")
    starts = np.searchsorted(examples.shopper[order], np.arange(len(examples.shoppers) + 1))
    batches, current, size = [], [], 0
    for shopper in rng.permutation(len(examples.shoppers)):
        current.append(order[starts[shopper]:starts[shopper + 1]])
        size += len(current[-1])
        if size >= batch_size:
            batches.append(np.concatenate(current))
            current, size = [], 0
    if size:
        batches.append(np.concatenate(current))
    return batches


def train_head(examples: Examples, embeddings: np.ndarray, epochs: int = 4,
               batch_size: int = 2048, learning_rate: float = 2e-3, hidden: int = HIDDEN,
               listwise: bool = True, seed: int = 0) -> tuple[FeedbackMLP, TrainingLog]:
    """Listwise (softmax over each shopper's pool) or pointwise (binary cross-entropy)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean = examples.features.mean(axis=0)
    std = examples.features.std(axis=0) + 1e-6  # a constant feature must not divide by zero
    model = FeedbackMLP(len(FEATURE_NAMES), embeddings.shape[1], mean, std, hidden)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    features = torch.from_numpy(examples.features)
    shoppers = torch.from_numpy(examples.shoppers)
    products = torch.from_numpy(np.asarray(embeddings, np.float32))
    owner = torch.from_numpy(examples.shopper)
    rows = torch.from_numpy(examples.row)
    labels = torch.from_numpy(examples.label)
    pointwise = nn.BCEWithLogitsLoss()
    started, losses = time.perf_counter(), []
    model.train()
    for _ in range(epochs):
        if listwise:
            batches = [torch.from_numpy(b) for b in shopper_batches(examples, batch_size, rng)]
        else:
            batches = torch.from_numpy(rng.permutation(len(examples))).split(batch_size)
        total = 0.0
        for batch in batches:
            logits = model(features[batch], shoppers[owner[batch]], products[rows[batch]])
            if listwise:
                group = torch.unique(owner[batch], return_inverse=True)[1]
                loss = listwise_loss(logits, group, labels[batch], int(group.max()) + 1)
            else:
                loss = pointwise(logits, labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(examples))
    model.eval()
    log = TrainingLog(len(examples), int(examples.label.sum()), epochs,
                      round(time.perf_counter() - started, 1), [round(x, 5) for x in losses])
    return model, log
