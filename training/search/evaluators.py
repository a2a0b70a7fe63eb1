"""Dev evaluation during fine-tuning: retrieval over a fixed dev sub-corpus.

Embedding the whole catalogue with PyTorch after every epoch would cost more than the epoch on
2 CPU cores, so (as sentence-transformers' InformationRetrievalEvaluator does) the evaluator
ranks a fixed sub-corpus: every product judged for a sample of dev queries plus their BM25
distractors. The number is for model selection; `fusionrank evaluate` measures the full
catalogue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fusionrank.core.search.lexical import LexicalIndex, top_k
from fusionrank.training.encoder import EncoderWithTokenizer
from fusionrank.training.metrics import evaluate_ranking

DEV_METRIC = "ndcg@10"


@dataclass
class DevRetrievalEvaluator:
    queries: list[str]
    judged: dict[str, dict[int, float]]
    corpus_rows: np.ndarray  # catalogue rows of the sub-corpus
    corpus_titles: list[str]
    max_query_tokens: int
    max_title_tokens: int

    @classmethod
    def build(cls, judged: Mapping[str, Mapping[int, float]], titles: Sequence[str],
              lexical: LexicalIndex, max_queries: int, distractors: int,
              max_query_tokens: int, max_title_tokens: int) -> DevRetrievalEvaluator:
        # Only queries with something relevant can move NDCG; take them in sorted order.
        queries = [q for q in sorted(judged) if any(g > 1.0 for g in judged[q].values())]
        queries = queries[:max_queries]
        rows: set[int] = set()
        for query in queries:
            rows.update(judged[query])
            scores = lexical.scores(lexical.query_terms(query))
            rows.update(int(r) for r in top_k(scores, distractors)[0])
        corpus = np.array(sorted(rows), dtype=np.int64)
        return cls(queries, {q: dict(judged[q]) for q in queries}, corpus,
                   [titles[r] for r in corpus], max_query_tokens, max_title_tokens)

    def __call__(self, encoder: EncoderWithTokenizer) -> dict[str, float]:
        docs = encoder.embed_eval(self.corpus_titles, self.max_title_tokens).numpy()
        queries = encoder.embed_eval(self.queries, self.max_query_tokens).numpy()
        scores = queries @ docs.T
        depth = min(100, len(self.corpus_rows))
        ranked = np.stack([top_k(row, depth)[0] for row in scores])
        return evaluate_ranking(self.judged, self.queries, self.corpus_rows[ranked],
                                np.take_along_axis(scores, ranked, axis=1),
                                metrics=("ndcg@10", "mrr@10"))
