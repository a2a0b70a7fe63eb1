"""fusionrank's Python client SDK: typed calls to the served models over gRPC (KServe v2)."""

from fusionrank.client.aio import AsyncFusionRankClient
from fusionrank.client.catalogue import AppliedChanges, CatalogueAnswer, CatalogueStatus
from fusionrank.client.errors import (
    FusionRankError,
    InvalidRequestError,
    ModelNotServedError,
    ModelProcessError,
    RequestTimeoutError,
    ServerOverloadedError,
    ServerUnavailableError,
)
from fusionrank.client.recommend import Recommendations, RecommendedProduct
from fusionrank.client.retry import NEVER_RETRY, RetryPolicy
from fusionrank.client.routing import ModelNames
from fusionrank.client.search import ExplainedHit, ScorePart, SearchAnswer, SearchHit
from fusionrank.client.sentiment import SentimentResult
from fusionrank.client.sync import FusionRankClient

__all__ = [
    "NEVER_RETRY",
    "AppliedChanges",
    "AsyncFusionRankClient",
    "CatalogueAnswer",
    "CatalogueStatus",
    "ExplainedHit",
    "FusionRankClient",
    "FusionRankError",
    "InvalidRequestError",
    "ModelNames",
    "ModelNotServedError",
    "ModelProcessError",
    "Recommendations",
    "RecommendedProduct",
    "RequestTimeoutError",
    "RetryPolicy",
    "ScorePart",
    "SearchAnswer",
    "SearchHit",
    "SentimentResult",
    "ServerOverloadedError",
    "ServerUnavailableError",
]
