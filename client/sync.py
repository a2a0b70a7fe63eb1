"""Blocking client: `with SearchClient("127.0.0.1:8001") as c: c.search("cordless drill")`."""

from __future__ import annotations

from collections.abc import Sequence

import tritonclient.grpc as grpcclient
from fusionrank.client.errors import ServerUnavailableError, from_triton
from fusionrank.client.search import SearchHit, parse_hits, search_inputs, search_outputs
from tritonclient.utils import InferenceServerException

from fusionrank.contract import DEFAULT_K, SEARCH_MODEL


class SearchClient:
    def __init__(self, url: str = "127.0.0.1:8001", timeout_s: float = 10.0):
        self.url = url
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url)

    def search(self, query: str, k: int = DEFAULT_K) -> list[SearchHit]:
        """The k best products for one query, best first."""
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[str], k: int = DEFAULT_K) -> list[list[SearchHit]]:
        """One request for several queries (up to the contract's MAX_BATCH)."""
        inputs = search_inputs(queries, k)
        try:
            result = self._client.infer(SEARCH_MODEL, inputs, outputs=search_outputs(),
                                        client_timeout=self.timeout_s)
        except InferenceServerException as error:
            raise from_triton(error, self.url) from None
        return parse_hits(result)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self._client.is_model_ready(SEARCH_MODEL):
                    return
            except InferenceServerException:
                pass
            time.sleep(0.5)
        raise ServerUnavailableError(f"model {SEARCH_MODEL!r} not ready at {self.url} "
                                     f"after {timeout_s:.0f} s")

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
