"""The server's `lexical` and `feedback` steps, called directly, give exactly the candidates,
signals and feedback the offline evaluator computes; and they load without torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingRegressor

from fusionrank.catalogue import Catalogue, Product
from fusionrank.export.feedback_head import export_feedback_head
from fusionrank.model_repository.models.feedback import PredictFeedback
from fusionrank.model_repository.models.lexical import AddLexicalCandidates
from fusionrank.ranking import FusionWeights, rank
from fusionrank.training.data import Judgements, SplitConfig
from fusionrank.training.features import FEATURES, JudgementMemory, ProductPriors, TitleTerms
from fusionrank.training.feedback import AveragedHeads, FeedbackHead, FeedbackModel
from fusionrank.training.fusion import build_pools
from fusionrank.training.lexical_index import LexicalIndex, top_k
from fusionrank.training.signals import OnnxFeedbackHead, Resources, pool_feedback

DIM, DENSE, EXTRA = 16, 8, 12
WORDS = ["drill", "saw", "hammer", "cordless", "blue", "red", "steel", "pipe", "valve", "hose",
         "garden", "18v", "kit", "bit", "set"]
QUERIES = ["cordless drill", "red garden hose", "steel pipe valve"]


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    rng = np.random.default_rng(0)
    titles = [" ".join(rng.choice(WORDS, size=4, replace=False)) + f" model {i}"
              for i in range(120)]
    folder = tmp_path_factory.mktemp("version")
    Catalogue([Product(str(i), t) for i, t in enumerate(titles)]).write_jsonl(
        folder / "products.jsonl")
    embeddings = rng.normal(size=(len(titles), DIM)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    np.save(folder / "embeddings.npy", embeddings)
    lexical = LexicalIndex.build(titles)
    lexical.save(folder / "lexical.npz")
    priors = ProductPriors.fit(len(titles), rng.integers(0, 60, size=200),
                               rng.uniform(1, 3, size=200))
    priors.save(folder / "priors.npy")
    training_queries = rng.normal(size=(10, DIM)).astype(np.float32)
    training_queries /= np.linalg.norm(training_queries, axis=1, keepdims=True)
    memory = JudgementMemory.fit([f"query {i}" for i in range(10)], training_queries,
                                 [rng.integers(0, len(titles), size=5) for _ in range(10)],
                                 [rng.uniform(1, 3, size=5) for _ in range(10)], embeddings)
    memory.save(folder / "memory.npz")
    torch.manual_seed(0)
    trees = HistGradientBoostingRegressor(max_iter=5, max_leaf_nodes=4, min_samples_leaf=2)
    trees.fit(rng.normal(size=(40, len(FEATURES))), rng.uniform(1, 3, size=40))
    head = FeedbackModel(AveragedHeads([FeedbackHead(DIM)]), trees, tree_share=0.4)
    check = (embeddings[:8], embeddings[8:16], rng.normal(size=(8, len(FEATURES))))
    assert export_feedback_head(head, folder / "feedback_head.onnx", check) < 1e-4
    vectors = rng.normal(size=(len(QUERIES), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return folder, titles, embeddings, lexical, (priors, memory), vectors


def requests_for(embeddings, vectors):
    """Two requests (two queries, then one) as the retrieval model would send them."""
    dense = [top_k(embeddings @ v, DENSE) for v in vectors]
    rows = np.stack([r for r, _ in dense])
    sims = np.stack([s for _, s in dense]).astype(np.float32)
    text = np.array([q.encode() for q in QUERIES], dtype=object).reshape(-1, 1)
    return [{"QUERY": text[:2], "EMBEDDING": vectors[:2], "DENSE_CANDIDATES": rows[:2],
             "DENSE_SIMILARITY": sims[:2]},
            {"QUERY": text[2:], "EMBEDDING": vectors[2:], "DENSE_CANDIDATES": rows[2:],
             "DENSE_SIMILARITY": sims[2:]}]


def test_served_pool_signals_and_feedback_equal_the_offline_ones(artefacts):
    folder, titles, embeddings, lexical, (priors, memory), vectors = artefacts
    offline = build_pools(QUERIES, vectors, embeddings, lexical, DENSE, EXTRA)
    judgements = Judgements(frame=None, catalogue=None, source="", sha256="",
                            split_config=SplitConfig())
    resources = Resources(judgements, lexical, TitleTerms(titles), priors, memory, embeddings,
                          dict(zip(QUERIES, vectors, strict=True)))
    offline.feedback = pool_feedback(resources, offline,
                                     OnnxFeedbackHead(folder / "feedback_head.onnx"))

    requests = requests_for(embeddings, vectors)
    pools = AddLexicalCandidates(folder, {"lexical_candidates": str(EXTRA)})(requests)
    for request, pool in zip(requests, pools, strict=True):
        request.update(pool)
    feedback = PredictFeedback(folder, {"threads": "1"})(requests)

    served = {name: np.concatenate([r[name] for r in requests])
              for name in ("CANDIDATES", "SIMILARITY", "LEXICAL")}
    served["FEEDBACK"] = np.concatenate([f["FEEDBACK"] for f in feedback])
    assert served["CANDIDATES"].shape == (3, DENSE + EXTRA)
    assert served["CANDIDATES"].dtype == np.int64 and served["FEEDBACK"].dtype == np.float32
    np.testing.assert_array_equal(served["CANDIDATES"], offline.rows)
    np.testing.assert_allclose(served["SIMILARITY"], offline.similarity, atol=1e-6)
    np.testing.assert_allclose(served["LEXICAL"], offline.lexical, atol=1e-6)
    np.testing.assert_allclose(served["FEEDBACK"], offline.feedback, atol=1e-5)
    assert ((served["FEEDBACK"] >= 1) & (served["FEEDBACK"] <= 3)).all()

    weights = FusionWeights({"similarity": 0.5, "feedback": 0.3, "lexical": 0.2})
    served_order, _ = rank(served["CANDIDATES"], weights.signals(served), 10)
    offline_order, _ = rank(offline.rows, weights.signals(offline.tensors()), 10)
    np.testing.assert_array_equal(served_order, offline_order)


def test_lexical_candidates_match_the_query_terms(artefacts):
    folder, titles, embeddings, _, _, vectors = artefacts
    requests = requests_for(embeddings, vectors)
    (pool, _) = AddLexicalCandidates(folder, {"lexical_candidates": str(EXTRA)})(requests)
    added = pool["CANDIDATES"][0, DENSE:]
    assert any("drill" in titles[r] or "cordless" in titles[r] for r in added[:3])
    assert len(set(pool["CANDIDATES"][0].tolist())) == DENSE + EXTRA
    assert pool["LEXICAL"].max() <= 1.0 + 1e-6


def test_serving_steps_do_not_import_torch():
    code = ("import sys; import fusionrank.model_repository.models.lexical, "
            "fusionrank.model_repository.models.feedback; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
