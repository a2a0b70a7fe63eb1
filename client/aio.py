"""asyncio client: `async with AsyncSearchClient(url) as c: await c.search("drill")`."""

from __future__ import annotations

from collections.abc import Sequence

import tritonclient.grpc.aio as grpcaio
from fusionrank.client.errors import from_triton
from fusionrank.client.search import SearchHit, parse_hits, search_inputs, search_outputs
from tritonclient.utils import InferenceServerException

from fusionrank.contract import DEFAULT_K, SEARCH_MODEL


class AsyncSearchClient:
    def __init__(self, url: str = "127.0.0.1:8001", timeout_s: float = 10.0):
        self.url = url
        self.timeout_s = timeout_s
        self._client = grpcaio.InferenceServerClient(url)

    async def search(self, query: str, k: int = DEFAULT_K) -> list[SearchHit]:
        return (await self.search_batch([query], k))[0]

    async def search_batch(self, queries: Sequence[str],
                           k: int = DEFAULT_K) -> list[list[SearchHit]]:
        inputs = search_inputs(queries, k, module=grpcaio)
        try:
            result = await self._client.infer(SEARCH_MODEL, inputs,
                                              outputs=search_outputs(grpcaio),
                                              client_timeout=self.timeout_s)
        except InferenceServerException as error:
            raise from_triton(error, self.url) from None
        return parse_hits(result)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncSearchClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
