"""The web app's one way to the Triton server: the async SDK (`AsyncFusionRankClient`).

Each call's answer becomes the page's JSON (schemas.py); each failure an ApiError the page
shows. A shopper's call retries an unavailable server within its deadline, as every SDK call
does (so a restart under `fusionrank serve` shows as a slow answer, not an error); the health
probes try once, so the page learns at once that the server is down. After the server was
unreachable the SDK client is replaced, so a server that comes back is answered at once instead
of after gRPC's reconnection backoff; the old one is closed when the last call still on it is
over.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from fusionrank.app.web.errors import ApiError, from_sdk
from fusionrank.app.web.schemas import (
    Health,
    ModelState,
    RankedProduct,
    RecommendAnswer,
    ScorePart,
    SearchAnswer,
    SearchHit,
    SentimentAnswer,
    SentimentResult,
)
from fusionrank.client import (
    NEVER_RETRY,
    AsyncFusionRankClient,
    ExplainedHit,
    FusionRankError,
    RecommendedProduct,
)
from fusionrank.client.recommend import Purchase
from fusionrank.core.recommend.contract import RECOMMEND_MODEL
from fusionrank.core.search.contract import SEARCH_MODEL
from fusionrank.core.sentiment.contract import SENTIMENT_MODEL

T = TypeVar("T")
Call = Callable[[AsyncFusionRankClient], Awaitable[T]]

# The smallest valid request to each model: /api/health asks each whether it answers.
PROBES: dict[str, Call] = {
    SEARCH_MODEL: lambda sdk: sdk.search("health check", k=1),
    RECOMMEND_MODEL: lambda sdk: sdk.recommend([], k=1),
    SENTIMENT_MODEL: lambda sdk: sdk.sentiment(["health check"]),
}
PROBE_STATE: dict[str, ModelState] = {"model_missing": "missing",
                                      "server_unavailable": "unavailable"}


def milliseconds_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def ranked(item: RecommendedProduct) -> RankedProduct:
    return RankedProduct(product_id=item.product_id, score=float(item.score), product=item.product)


def explained_hit(hit: ExplainedHit) -> SearchHit:
    parts = [ScorePart(signal=p.signal, value=float(p.value), weight=float(p.weight),
                       contribution=float(p.contribution)) for p in hit.parts]
    return SearchHit(product_id=hit.product_id, score=float(hit.score), product=hit.product,
                     parts=parts)


class TritonGateway:
    def __init__(self, url: str | tuple[str, ...], timeout_s: float = 10.0):
        self.url = url
        self.timeout_s = timeout_s
        # The current SDK client for shoppers' calls (False) and for probes (True).
        self._sdk: dict[bool, AsyncFusionRankClient | None] = {False: None, True: None}
        self._calls: Counter[AsyncFusionRankClient] = Counter()  # calls in flight, per client

    def sdk(self, probe: bool = False) -> AsyncFusionRankClient:
        """The SDK client, made in the running event loop (gRPC's asyncio channel is bound to
        the loop that creates it)."""
        if self._sdk[probe] is None:  # (a probe is never retried: it reports the server now)
            self._sdk[probe] = AsyncFusionRankClient(
                self.url, timeout_s=self.timeout_s, **({"retry": NEVER_RETRY} if probe else {}))
        return self._sdk[probe]

    async def call(self, model: str, call: Call[T], probe: bool = False) -> tuple[T, float]:
        """(answer, milliseconds) of one SDK call; an ApiError when it fails."""
        sdk = self.sdk(probe)
        self._calls[sdk] += 1
        start = time.perf_counter()
        try:
            return await call(sdk), milliseconds_since(start)
        except FusionRankError as error:
            failure = from_sdk(error, model, self.url)
            if failure.error == "server_unavailable" and self._sdk[probe] is sdk:
                self._sdk[probe] = None  # the next call makes a new client
            raise failure from None
        finally:
            self._calls[sdk] -= 1
            if sdk not in self._sdk.values() and not self._calls[sdk]:
                del self._calls[sdk]
                await sdk.close()

    async def search(self, query: str, k: int) -> SearchAnswer:
        answer, ms = await self.call(SEARCH_MODEL, lambda sdk: sdk.explain(query, k))
        return SearchAnswer(query=answer.query, corrected=answer.corrected, k=k,
                            hits=[explained_hit(hit) for hit in answer.hits], served_ms=ms)

    async def recommend(self, history: Sequence[Purchase], k: int,
                        exclude_purchased: bool) -> RecommendAnswer:
        answer, ms = await self.call(RECOMMEND_MODEL, lambda sdk: sdk.recommend(
            history, k, exclude_purchased=exclude_purchased))
        return RecommendAnswer(items=[ranked(item) for item in answer.items],
                               unknown_ids=answer.unknown_ids,
                               popular=answer.cold_start, served_ms=ms)

    async def sentiment(self, texts: list[str]) -> SentimentAnswer:
        results, ms = await self.call(SENTIMENT_MODEL, lambda sdk: sdk.sentiment(texts))
        return SentimentAnswer(results=[SentimentResult(**r.to_dict()) for r in results],
                               served_ms=ms)

    async def probe(self, model: str) -> tuple[ModelState, str | None]:
        try:
            await self.call(model, PROBES[model], probe=True)
        except ApiError as failure:
            return PROBE_STATE.get(failure.error, "error"), failure.message
        return "ready", None

    async def health(self) -> Health:
        states = await asyncio.gather(*(self.probe(model) for model in PROBES))
        models = {model: state for model, (state, _) in zip(PROBES, states, strict=True)}
        message = next((f"{model}: {text}" for model, (_, text) in zip(PROBES, states,
                                                                       strict=True) if text),
                       None)
        return Health(ready=models[SEARCH_MODEL] == "ready", models=models,
                      message=message)

    async def close(self) -> None:
        """At shutdown: every client, in use or not."""
        clients = {*self._calls, *(sdk for sdk in self._sdk.values() if sdk)}
        self._sdk = {False: None, True: None}
        self._calls.clear()
        for sdk in clients:
            await sdk.close()
