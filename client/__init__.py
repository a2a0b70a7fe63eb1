"""fusionrank's Python client SDK: typed calls to the served models over gRPC (KServe v2)."""

from fusionrank.client.aio import AsyncSearchClient
from fusionrank.client.errors import (
    FusionRankError,
    InvalidRequestError,
    RequestTimeoutError,
    ServerUnavailableError,
)
from fusionrank.client.search import SearchHit
from fusionrank.client.sync import SearchClient

__all__ = [
    "AsyncSearchClient",
    "FusionRankError",
    "InvalidRequestError",
    "RequestTimeoutError",
    "SearchClient",
    "SearchHit",
    "ServerUnavailableError",
]
