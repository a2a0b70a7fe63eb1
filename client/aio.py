"""asyncio client: `async with AsyncFusionRankClient(url) as c: await c.search("drill")`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from fusionrank.client.recommend import (
    Purchase,
    Recommendations,
    history_entries,
    parse_recommendations,
    recommend_inputs,
)
from fusionrank.client.retry import DEFAULT_RETRY, Replicas, RetryPolicy
from fusionrank.client.routing import ModelNames
from fusionrank.client.search import (
    SearchAnswer,
    SearchHit,
    hits_detail,
    parse_explained,
    parse_hits,
    search_inputs,
)
from fusionrank.client.sentiment import SentimentResult, parse_results, sentiment_inputs
from fusionrank.core.contract import DEFAULT_K
from fusionrank.core.recommend.contract import RECOMMEND_OUTPUTS
from fusionrank.core.search.contract import Detail
from fusionrank.core.sentiment.contract import SENTIMENT_OUTPUTS


class AsyncFusionRankClient:
    """The asyncio twin of FusionRankClient: same methods, awaitable."""

    models = ModelNames()

    def __init__(self, url: str | Sequence[str] = "127.0.0.1:8001", timeout_s: float = 10.0,
                 retry: RetryPolicy = DEFAULT_RETRY, *, models: Mapping[str, str] | None = None):
        """The options of FusionRankClient's, `models` included."""
        self.models = ModelNames.of(models)
        self._replicas = Replicas(url, grpcaio.InferenceServerClient, retry, timeout_s)
        self.urls, self.url, self.timeout_s = self._replicas.urls, self._replicas.urls[0], timeout_s

    @property
    def active_url(self) -> str:
        """The address that answered last (where the next call goes first)."""
        return self.urls[self._replicas.current]

    async def _infer(self, model: str, inputs: list, outputs: Sequence):
        requested = [grpcaio.InferRequestedOutput(spec.name) for spec in outputs]
        attempts = self._replicas.attempts()
        while True:
            try:
                result = await self._replicas.clients[attempts.address].infer(
                    model, inputs, outputs=requested, client_timeout=attempts.remaining_s())
            except InferenceServerException as error:
                failed = error
            else:
                self._replicas.current = attempts.address
                return result
            await asyncio.sleep(self._replicas.wait_after(attempts, failed))

    async def search(self, query: str, k: int = DEFAULT_K, *,
                     products: bool = False) -> list[SearchHit]:
        return (await self.search_batch([query], k, products=products))[0]

    async def search_batch(self, queries: Sequence[str], k: int = DEFAULT_K, *,
                           products: bool = False) -> list[list[SearchHit]]:
        detail = hits_detail(products)
        inputs = search_inputs(queries, k, detail, module=grpcaio)
        return parse_hits(await self._infer(self.models.search, inputs, detail.outputs), detail)

    async def explain(self, query: str, k: int = DEFAULT_K) -> SearchAnswer:
        return (await self.explain_batch([query], k))[0]

    async def explain_batch(self, queries: Sequence[str],
                            k: int = DEFAULT_K) -> list[SearchAnswer]:
        inputs = search_inputs(queries, k, Detail.EXPLAIN, module=grpcaio)
        return parse_explained(queries, await self._infer(self.models.search, inputs,
                                                          Detail.EXPLAIN.outputs))

    async def recommend(self, history: Sequence[Purchase], k: int = DEFAULT_K,
                        exclude_purchased: bool = False) -> Recommendations:
        inputs = recommend_inputs(history, k, exclude_purchased, module=grpcaio)
        return parse_recommendations(await self._infer(self.models.recommend, inputs,
                                                       RECOMMEND_OUTPUTS), history_entries(history))

    async def sentiment(self, texts: Sequence[str]) -> list[SentimentResult]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        result = await self._infer(self.models.sentiment,
                                   sentiment_inputs(texts, module=grpcaio), SENTIMENT_OUTPUTS)
        return parse_results(texts, result)

    async def close(self) -> None:
        for client in self._replicas.clients:
            await client.close()

    async def __aenter__(self) -> AsyncFusionRankClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
