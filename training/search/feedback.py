"""The feedback head: predicts the relevance grade (1..3) a shopper would give a product for a
query, from the two embeddings and the cheap interaction features of
fusionrank.core.search.features.

Two learners of one target, blended:

    network  [q, p, q ⊙ p, |q − p|] → Linear → ReLU ─┐
                                        features ────┴→ Linear → ReLU → Linear → 1 + 2·sigmoid
             (a few seeds averaged)
    trees    gradient-boosted regression trees over the features
    grade    (1 − w)·network + w·trees,  w fitted on dev

Both are trained by squared error on the training split's judgements and stopped where dev
RMSE is lowest. Why two: on dev each alone reaches about the same RMSE, but their errors differ
(the trees cut the features into regions, the network reads the embeddings), so their mean is
better than either (the ablation in benchmarks/reports/relevance.md). Exported to ONNX, as one
graph, by fusionrank.export.search.feedback_head.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingRegressor
from torch import nn

from fusionrank.core.search.features import FEATURES

RELEVANT_GRADE = 2.5  # "relevant" for precision / recall / F1


@dataclass
class FeedbackConfig:
    hidden: int = 64
    dropout: float = 0.1
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 40
    patience: int = 4
    seed: int = 13
    ensemble: int = 3  # heads averaged (seeds seed, seed + 1, ...)
    tree_rounds: int = 800  # boosting rounds at most; the count with the best dev RMSE is kept
    tree_learning_rate: float = 0.05
    tree_leaves: int = 31
    tree_min_leaf: int = 40
    blend_step: float = 0.05  # grid of the trees' share w, fitted on dev


@dataclass
class PairSet:
    """Judged (query, product) pairs as arrays: embeddings, features and grades."""

    query: np.ndarray  # float32 [n, d]
    product: np.ndarray  # float32 [n, d]
    features: np.ndarray  # float32 [n, len(FEATURES)]
    grade: np.ndarray  # float32 [n]


class FeedbackNetwork(nn.Module):
    def __init__(self, dim: int, hidden: int = 64, dropout: float = 0.1,
                 features: int = len(FEATURES)):
        super().__init__()
        self.interaction = nn.Sequential(nn.Linear(4 * dim, hidden), nn.ReLU(),
                                         nn.Dropout(dropout))
        self.out = nn.Sequential(nn.Linear(hidden + features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, query: torch.Tensor, product: torch.Tensor,
                features: torch.Tensor) -> torch.Tensor:
        # The raw embeddings let the head learn kinds of query and of product that tend to be
        # rated low or high; the products and differences, how well the two match.
        pair = torch.cat([query, product, query * product, (query - product).abs()], dim=1)
        hidden = torch.cat([self.interaction(pair), features], dim=1)
        return 1.0 + 2.0 * torch.sigmoid(self.out(hidden).squeeze(-1))


class AveragedHeads(nn.Module):
    """The mean of several heads trained from different seeds (one ONNX graph)."""

    def __init__(self, heads: list[FeedbackNetwork]):
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, query: torch.Tensor, product: torch.Tensor,
                features: torch.Tensor) -> torch.Tensor:
        return torch.stack([h(query, product, features) for h in self.heads]).mean(dim=0)


@dataclass
class FeedbackModel:
    """The feedback head as served: the networks and the trees, blended."""

    network: AveragedHeads
    trees: HistGradientBoostingRegressor
    tree_share: float  # w in (1 − w)·network + w·trees

    def predict_parts(self, query: np.ndarray, product: np.ndarray,
                      features: np.ndarray) -> dict[str, np.ndarray]:
        """{"grade": the blend, "network": ..., "trees": ...}, float32 [pairs] each."""
        network = predict(self.network, PairSet(query, product, features,
                                                np.zeros(len(features), np.float32)))
        trees = self.trees.predict(features).astype(np.float32)
        return {"grade": blend(network, trees, self.tree_share), "network": network,
                "trees": trees}

    def predict(self, pairs: PairSet) -> np.ndarray:
        return self.predict_parts(pairs.query, pairs.product, pairs.features)["grade"]


def blend(network: np.ndarray, trees: np.ndarray, tree_share: float) -> np.ndarray:
    return ((1.0 - tree_share) * network + tree_share * trees).astype(np.float32)


def train_feedback_model(train: PairSet, dev: PairSet, config: FeedbackConfig
                         ) -> tuple[FeedbackModel, dict]:
    """Networks and trees trained on `train`, each stopped on `dev`; the blend fitted on dev.
    Also returns what training saw: histories, rounds and each part's dev RMSE."""
    network, histories = train_feedback_heads(train, dev, config)
    trees, rounds = train_boosted_trees(train, dev, config)
    network_dev, trees_dev = predict(network, dev), trees.predict(dev.features)
    shares = np.round(np.arange(0.0, 1.0 + 1e-9, config.blend_step), 4)
    errors = [rmse(blend(network_dev, trees_dev, w), dev.grade) for w in shares]
    share = float(shares[int(np.argmin(errors))])
    report = {"network_histories": histories, "tree_rounds": rounds, "tree_share": share,
              "dev_rmse": {"grade": min(errors), "network": rmse(network_dev, dev.grade),
                           "trees": rmse(trees_dev, dev.grade)}}
    return FeedbackModel(network, trees, share), report


def train_boosted_trees(train: PairSet, dev: PairSet, config: FeedbackConfig
                        ) -> tuple[HistGradientBoostingRegressor, int]:
    """Trees over the features, refitted with the number of rounds that had the lowest dev
    RMSE (the fit is deterministic, so the refit grows the same first trees)."""
    def trees(rounds: int) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            max_iter=rounds, learning_rate=config.tree_learning_rate,
            max_leaf_nodes=config.tree_leaves, min_samples_leaf=config.tree_min_leaf,
            early_stopping=False, random_state=config.seed)

    grown = trees(config.tree_rounds).fit(train.features, train.grade)
    errors = [rmse(p, dev.grade) for p in grown.staged_predict(dev.features)]
    best = int(np.argmin(errors)) + 1
    print(f"feedback trees: best dev RMSE {errors[best - 1]:.4f} after {best} rounds",
          file=sys.stderr)
    return float32_thresholds(trees(best).fit(train.features, train.grade)), best


def float32_thresholds(trees: HistGradientBoostingRegressor) -> HistGradientBoostingRegressor:
    """Each split threshold t (float64) replaced by the largest float32 ≤ t. For float32
    features (all of ours) every split goes the same way, so predictions do not change; but
    the ONNX export, whose thresholds are float32, then splits exactly alike (rounded to the
    nearest float32 instead, t could land above a value scikit-learn sends right)."""
    for stage in trees._predictors:  # scikit-learn keeps the fitted trees here, one per round
        for predictor in stage:
            threshold = predictor.nodes["num_threshold"]
            rounded = threshold.astype(np.float32)
            above = rounded.astype(np.float64) > threshold
            rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
            predictor.nodes["num_threshold"] = rounded
    return trees


def _tensors(pairs: PairSet) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
                 for a in (pairs.query, pairs.product, pairs.features, pairs.grade))


@torch.no_grad()
def predict(head: nn.Module, pairs: PairSet, batch: int = 4096) -> np.ndarray:
    head.eval()
    q, p, f, _ = _tensors(pairs)
    return torch.cat([head(q[i:i + batch], p[i:i + batch], f[i:i + batch])
                      for i in range(0, len(q), batch)]).numpy()


def rmse(predicted: np.ndarray, grade: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predicted - grade) ** 2)))


def train_feedback_heads(train: PairSet, dev: PairSet, config: FeedbackConfig
                         ) -> tuple[AveragedHeads, list[list[dict]]]:
    """`config.ensemble` heads from consecutive seeds, averaged; and each one's history."""
    heads, histories = [], []
    threads = torch.get_num_threads()
    # The head's matrices are small: a second thread only adds synchronisation, and on a busy
    # machine its barriers stall (benchmarks/reports/relevance.md, "Feedback head").
    torch.set_num_threads(1)
    try:
        for i in range(config.ensemble):
            head, history = train_feedback_head(train, dev, config, config.seed + i)
            heads.append(head)
            histories.append(history)
    finally:
        torch.set_num_threads(threads)
    return AveragedHeads(heads).eval(), histories


def train_feedback_head(train: PairSet, dev: PairSet, config: FeedbackConfig,
                        seed: int | None = None) -> tuple[FeedbackNetwork, list[dict]]:
    """The head with the lowest dev RMSE, and the per-epoch history."""
    if len(train.grade) == 0 or len(dev.grade) == 0:
        raise ValueError("the feedback head needs judged pairs in both train and dev")
    seed = config.seed if seed is None else seed
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    head = FeedbackNetwork(train.query.shape[1], config.hidden, config.dropout,
                        train.features.shape[1])
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    q, p, f, y = _tensors(train)
    best, best_rmse, history, stale = None, float("inf"), [], 0
    for epoch in range(1, config.max_epochs + 1):
        head.train()
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for start in range(0, len(y), config.batch_size):
            idx = order[start:start + config.batch_size]
            loss = nn.functional.mse_loss(head(q[idx], p[idx], f[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        dev_rmse = rmse(predict(head, dev), dev.grade)
        history.append({"epoch": epoch, "train_rmse": (total / len(y)) ** 0.5,
                        "dev_rmse": dev_rmse})
        if dev_rmse < best_rmse - 1e-5:
            best, best_rmse, stale = copy.deepcopy(head.state_dict()), dev_rmse, 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    print(f"feedback head: best dev RMSE {best_rmse:.4f} after {len(history)} epochs",
          file=sys.stderr)
    head.load_state_dict(best)
    return head.eval(), history


@dataclass
class Classification:
    threshold: float
    precision: float
    recall: float
    f1: float
    accuracy: float


def choose_threshold(predicted: np.ndarray, grade: np.ndarray) -> float:
    """The prediction cut-off that maximises F1 of "relevant" (grade ≥ 2.5) — fitted on dev."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(grade >= RELEVANT_GRADE, predicted)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def classify(predicted: np.ndarray, grade: np.ndarray, threshold: float) -> Classification:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    truth, guess = grade >= RELEVANT_GRADE, predicted >= threshold
    p, r, f, _ = precision_recall_fscore_support(truth, guess, average="binary", zero_division=0)
    return Classification(threshold, float(p), float(r), float(f),
                          float(accuracy_score(truth, guess)))
