"""What a finished run serves, ranked offline: each query's top 100 by the served path after
the encoder (pool, feedback head, the cascade `fusionrank build` serves by default), through the
run's own files and the search runtime the server runs. The reranker trains against these
lists and is evaluated on them, so it reranks exactly what it would be given."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.fusion import FusionWeights
from fusionrank.core.search.features import FeatureSources
from fusionrank.core.search.judgements import JudgementMemory, ProductPriors
from fusionrank.core.search.lexical import LexicalIndex
from fusionrank.core.search.runtime import (
    DEPTH,
    OnnxFeedbackHead,
    SearchRuntime,
    dense_candidates,
    ranked,
)
from fusionrank.training.embeddings import Embedder, catalogue_embeddings, int8_embedder
from fusionrank.training.search.cascade import cascade_weights, chosen_depth
from fusionrank.training.search.data import Judgements, SplitConfig, load_judgements
from fusionrank.training.search.pipeline import PoolConfig, load_run


@dataclass
class Ranking:
    """Queries' ranked catalogue rows [queries, DEPTH] and their fused scores S (best first)."""

    queries: list[str]
    rows: np.ndarray
    scores: np.ndarray

    def save(self, path: Path) -> None:
        np.savez(path, queries=np.array(self.queries), rows=self.rows, scores=self.scores)

    @classmethod
    def load(cls, path: Path) -> Ranking:
        with np.load(path) as saved:
            return cls([str(q) for q in saved["queries"]], saved["rows"], saved["scores"])


@dataclass
class ServedRanker:
    """A run's served ranking path, loaded once."""

    run: Path
    judgements: Judgements
    catalogue: np.ndarray  # the fine-tuned encoder's title embeddings
    embedder: Embedder  # its query encoder as served (INT8 by default)
    runtime: SearchRuntime
    weights: FusionWeights  # the served ranking's (the chosen cascade's, if tuned)
    pools: PoolConfig
    lexical: LexicalIndex

    @classmethod
    def load(cls, run: Path, cache: Path = Path("runs/cache"), threads: int | None = None,
             int8_queries: bool = True) -> ServedRanker:
        run = Path(run)
        manifest = load_run(run)
        pools = PoolConfig(**manifest["config"]["pools"])
        judgements = load_judgements(manifest["data_file"],
                                     SplitConfig(**manifest["config"]["split"]))
        titles = judgements.catalogue.titles
        catalogue, embedder = catalogue_embeddings(Path(manifest["checkpoint"]), titles,
                                                   cache / "embeddings", threads)
        if int8_queries:  # `fusionrank build` serves the INT8 query encoder on CPU
            embedder = int8_embedder(embedder, titles[:256], threads)
        sources = FeatureSources.build(titles, catalogue,
                                       ProductPriors.load(run / artefacts.PRIORS),
                                       JudgementMemory.load(run / artefacts.MEMORY))
        lexical = LexicalIndex.load(run / artefacts.LEXICAL)
        depth = chosen_depth(run)
        weights = cascade_weights(run, depth) if depth is not None else FusionWeights.load(
            run / artefacts.FUSION_WEIGHTS)
        runtime = SearchRuntime(lexical, sources,
                                OnnxFeedbackHead(run / artefacts.FEEDBACK_HEAD, threads),
                                weights, pools.lexical)
        return cls(run, judgements, catalogue, embedder, runtime, weights, pools, lexical)

    def rank(self, queries: list[str], chunk: int = 256) -> Ranking:
        rows, scores = [], []
        for start in range(0, len(queries), chunk):
            part = queries[start : start + chunk]
            vectors = self.embedder.encode_queries(part)
            pool = self.runtime.candidates(part, vectors,
                                           *dense_candidates(self.catalogue, vectors,
                                                             self.pools.dense))
            pool.feedback = self.runtime.feedback(pool, vectors,
                                                  self.weights.head(pool.rows, pool.tensors()))
            r, s = ranked(pool, self.weights, DEPTH)
            rows.append(r)
            scores.append(s)
        return Ranking(list(queries), np.concatenate(rows), np.concatenate(scores))

    def split(self, split: str, cache_dir: Path | None = None) -> Ranking:
        """The split's ranked queries' served rankings (kept in `cache_dir` once made)."""
        # Keyed by the run's manifest, which a retrained run rewrites.
        key = hashlib.sha256((self.run / artefacts.RUN_MANIFEST).read_bytes()).hexdigest()[:12]
        path = cache_dir / f"served_{split}_{key}.npz" if cache_dir is not None else None
        if path is not None and path.is_file():
            return Ranking.load(path)
        ranking = self.rank(self.judgements.ranked_queries(split))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            ranking.save(path)
        return ranking
