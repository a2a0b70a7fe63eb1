"""Blocking client: `with FusionRankClient("127.0.0.1:8001") as c: c.search("cordless drill")`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fusionrank.client.catalogue import (
    CatalogueAnswer,
    CatalogueStatus,
    Changes,
    catalogue_inputs,
    changes_payload,
    parse_answer,
)
from fusionrank.client.errors import ServerUnavailableError
from fusionrank.client.recommend import (
    Purchase,
    Recommendations,
    history_entries,
    parse_recommendations,
    recommend_inputs,
)
from fusionrank.client.retry import DEFAULT_RETRY, NEVER_RETRY, Replicas, RetryPolicy
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
from fusionrank.core.search.contract import REPORT, Detail
from fusionrank.core.sentiment.contract import SENTIMENT_OUTPUTS


class FusionRankClient:
    """Typed calls to the served ensembles over gRPC; errors are FusionRankError subclasses."""

    # Where request tensors are built: tritonclient's gRPC module (an in-process twin swaps it).
    transport = grpcclient
    # The model each feature's calls name (an instance's `models` option replaces it).
    models = ModelNames()

    def __init__(self, url: str | Sequence[str] = "127.0.0.1:8001", timeout_s: float = 10.0,
                 retry: RetryPolicy = DEFAULT_RETRY, *, models: Mapping[str, str] | None = None):
        """`url`: one server address, or several (replicas: the calls take turns among them,
        and a call fails over to the next; client/retry.py).
        `timeout_s`: each call's deadline, retries included. `retry`: see client/retry.py.
        `models`: {feature: served model name} for calls that go to a model other than the
        feature's own, e.g. {"search": "search_rollout_probe"} (see client/routing.py)."""
        self.models = ModelNames.of(models)
        self._replicas = Replicas(url, grpcclient.InferenceServerClient, retry, timeout_s)
        self.urls, self.url, self.timeout_s = self._replicas.urls, self._replicas.urls[0], timeout_s

    @property
    def active_url(self) -> str:
        """The address that answered last (where the next call goes first)."""
        return self.urls[self._replicas.current]

    def _infer(self, model: str, inputs: list, outputs: Sequence,
               retry: RetryPolicy | None = None, timeout_s: float | None = None):
        requested = [grpcclient.InferRequestedOutput(spec.name) for spec in outputs]
        attempts = self._replicas.attempts(retry, timeout_s)
        while True:
            try:
                result = self._replicas.clients[attempts.address].infer(
                    model, inputs, outputs=requested, client_timeout=attempts.remaining_s())
            except InferenceServerException as error:
                failed = error
            else:
                self._replicas.current = attempts.address
                return result
            time.sleep(self._replicas.wait_after(attempts, failed))

    def search(self, query: str, k: int = DEFAULT_K, *,
               products: bool = False) -> list[SearchHit]:
        """The k best products for one query, best first: ids and scores, and with
        `products=True` each product's metadata (`hit.product`; None without)."""
        return self.search_batch([query], k, products=products)[0]

    def search_batch(self, queries: Sequence[str], k: int = DEFAULT_K, *,
                     products: bool = False) -> list[list[SearchHit]]:
        """One request for several queries (up to the contract's MAX_BATCH)."""
        detail = hits_detail(products)
        inputs = search_inputs(queries, k, detail, self.transport)
        return parse_hits(self._infer(self.models.search, inputs, detail.outputs), detail)

    def explain(self, query: str, k: int = DEFAULT_K) -> SearchAnswer:
        """`search` with the products' metadata, each result's score broken into its fused
        signals and the query's spelling correction (DETAIL explain: the whole answer)."""
        return self.explain_batch([query], k)[0]

    def explain_batch(self, queries: Sequence[str], k: int = DEFAULT_K) -> list[SearchAnswer]:
        inputs = search_inputs(queries, k, Detail.EXPLAIN, self.transport)
        return parse_explained(queries, self._infer(self.models.search, inputs,
                                                    Detail.EXPLAIN.outputs))

    def recommend(self, history: Sequence[Purchase], k: int = DEFAULT_K,
                  exclude_purchased: bool = False) -> Recommendations:
        """The k products to recommend to a shopper with this purchase history, best first.
        Unknown ids are ignored and counted; an empty history gets the popular products."""
        inputs = recommend_inputs(history, k, exclude_purchased, self.transport)
        return parse_recommendations(self._infer(self.models.recommend, inputs,
                                                 RECOMMEND_OUTPUTS), history_entries(history))

    def sentiment(self, texts: Sequence[str]) -> list[SentimentResult]:
        """Each review's class (negative, neutral, positive) and probabilities, in order."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        result = self._infer(self.models.sentiment, sentiment_inputs(texts, self.transport),
                             SENTIMENT_OUTPUTS)
        return parse_results(texts, result)

    def apply_changes(self, changes: Changes, timeout_s: float = 600.0) -> CatalogueAnswer:
        """Apply a change set to the served catalogue (`client/catalogue.py`); searchable when
        this returns. Sent once, to the address that answered last, never retried: a set
        whose answer was lost may have been applied (applying it again is harmless: upserts
        carry whole rows and deletes are idempotent, but that is the caller's call)."""
        payload = changes_payload(changes)
        return parse_answer(self._infer(self.models.catalogue,
                                        catalogue_inputs(payload, self.transport), (REPORT,),
                                        NEVER_RETRY, timeout_s))

    def catalogue_status(self) -> CatalogueStatus:
        """The live catalogue's base version, segments, pending log and last change."""
        return parse_answer(self._infer(self.models.catalogue,
                                        catalogue_inputs(b"", self.transport), (REPORT,),
                                        NEVER_RETRY)).status

    def wait_ready(self, model: str | None = None, timeout_s: float = 60.0) -> None:
        """Until `model` (default: the one search calls go to) is ready, bounded."""
        model = model or self.models.search
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self._replicas.clients[self._replicas.current].is_model_ready(model):
                    return
            except InferenceServerException:
                pass
            time.sleep(0.5)
        raise ServerUnavailableError(f"model {model!r} not ready at {self.url} "
                                     f"after {timeout_s:.0f} s")

    def close(self) -> None:
        for client in self._replicas.clients:
            client.close()

    def __enter__(self) -> FusionRankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
