"""The probe requests a new ensemble version answers before it serves, and their checks.

A probe goes through the SDK's own typed calls, sent to the probe ensemble by the client's
`models` option (client/routing.py): the new version is asked exactly what a caller asks."""

from __future__ import annotations

import math
from collections.abc import Callable

from fusionrank.app.deploy.errors import RolloutRefused, first_line
from fusionrank.client import NEVER_RETRY, FusionRankClient, FusionRankError
from fusionrank.core.recommend.contract import RECOMMEND_MODEL
from fusionrank.core.search.contract import SEARCH_MODEL
from fusionrank.core.sentiment.contract import SENTIMENT_MODEL

PROBE_K = 5
PROBE_QUERIES = ("gift", "red heart lantern", "cordless drill")
PROBE_REVIEWS = ("Love it, works perfectly", "Broke after one day, very disappointed")


def search_scores(client: FusionRankClient) -> list[list[float]]:
    return [[hit.score for hit in hits] for hits in client.search_batch(PROBE_QUERIES, PROBE_K)]


def recommend_scores(client: FusionRankClient) -> list[list[float]]:
    return [[item.score for item in client.recommend([], PROBE_K).items]]


def sentiment_probabilities(client: FusionRankClient) -> list[list[float]]:
    return [list(result.probabilities.values()) for result in client.sentiment(PROBE_REVIEWS)]


# Each probed ensemble → its probe requests' answers, one row a request. An ensemble is named
# after the feature whose calls it serves, which is also the key of the client's `models`.
PROBES: dict[str, Callable[[FusionRankClient], list[list[float]]]] = {
    SEARCH_MODEL: search_scores,
    RECOMMEND_MODEL: recommend_scores,
    SENTIMENT_MODEL: sentiment_probabilities,
}


def answer_problem(ensemble: str, values: list[float], serving: list[float] | None) -> str:
    """What is wrong with one probe answer, '' if nothing: it must hold finite values, as many
    as the serving version's answer (`serving`; None where no version serves yet), and be
    scores best first, or for sentiment probabilities adding up to 1."""
    if not values:
        return "no result"
    if not all(map(math.isfinite, values)):
        return "a value that is not finite"
    if serving is not None and len(values) != len(serving):
        return f"{len(values)} results where the serving version gives {len(serving)}"
    if ensemble == SENTIMENT_MODEL:
        return "probabilities that do not add up to 1" if abs(sum(values) - 1) > 1e-3 else ""
    return "scores out of order" if values != sorted(values, reverse=True) else ""


def check_answers(url: str, ensemble: str, probe: str, serving: bool) -> None:
    """The probe ensemble's answers are well formed, and as many as the serving one gives
    (`serving`: whether a version of `ensemble` serves); an ensemble with no probe requests
    passes (its load was the check)."""
    ask = PROBES.get(ensemble)
    if ask is None:
        return
    try:
        with FusionRankClient(url, retry=NEVER_RETRY,
                              models={ensemble: probe}) as client:
            new = ask(client)
        old = None
        if serving:
            with FusionRankClient(url) as client:
                old = ask(client)
    except FusionRankError as error:
        raise RolloutRefused(f"the new {ensemble} ensemble failed a probe request: "
                             f"{first_line(error)}") from None
    for row, values in enumerate(new):
        problem = answer_problem(ensemble, values, old[row] if old is not None else None)
        if problem:
            raise RolloutRefused(f"the new {ensemble} ensemble answered probe {row + 1} with "
                                 f"{problem}")
