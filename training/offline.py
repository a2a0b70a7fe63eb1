"""The served search, computed in process from the same artefacts: for checking that the
Triton ensemble (tokenizer → query_encoder → retrieval → lexical → feedback → ranker) returns
exactly the ranking `fusionrank evaluate` measures.

    ranker = OfflineRanker.from_folder(artefacts)     # the files the model repository serves
    rows, scores = ranker.search(["cordless drill"], k=10)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrank.ranking import FusionWeights
from fusionrank.training.embeddings import Embedder
from fusionrank.training.features import (
    JudgementMemory,
    ProductPriors,
    TermVectors,
    TitleTerms,
)
from fusionrank.training.fusion import build_pools, ranked
from fusionrank.training.lexical_index import LexicalIndex
from fusionrank.training.signals import OnnxFeedbackHead, Resources, pool_feedback


@dataclass
class ServedFiles:
    encoder_dir: Path  # encoder.onnx + tokenizer.json
    embeddings: Path  # embeddings.npy
    products: Path  # products.jsonl
    lexical: Path  # lexical.npz
    priors: Path  # priors.npy
    memory: Path  # memory.npz
    feedback_head: Path  # feedback_head.onnx
    weights: Path  # ranking.json


class OfflineRanker:
    def __init__(self, files: ServedFiles, dense: int = 100, extra: int = 100,
                 threads: int | None = None):
        lines = files.products.read_text(encoding="utf-8").splitlines()
        titles = [json.loads(line)["title"] for line in lines]
        self.embedder = Embedder(files.encoder_dir, threads)
        self.catalogue = np.load(files.embeddings)
        self.lexical = LexicalIndex.load(files.lexical)
        self.terms = TitleTerms(titles)
        self.term_vectors = TermVectors.fit(self.terms, self.catalogue)
        self.priors = ProductPriors.load(files.priors)
        self.memory = JudgementMemory.load(files.memory)
        self.head = OnnxFeedbackHead(files.feedback_head, threads)
        self.weights = FusionWeights.load(files.weights)
        self.dense, self.extra = dense, extra

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Catalogue rows [queries, k], best first, and their fused scores."""
        vectors = self.embedder.encode_queries(queries)
        pool = build_pools(queries, vectors, self.catalogue, self.lexical, self.dense,
                           self.extra)
        resources = Resources(None, self.lexical, self.terms, self.priors, self.memory,
                              self.catalogue,
                              dict(zip(queries, vectors, strict=True)),
                              term_vectors=self.term_vectors)
        pool.feedback = pool_feedback(resources, pool, self.head)
        return ranked(pool, self.weights, depth=k)
