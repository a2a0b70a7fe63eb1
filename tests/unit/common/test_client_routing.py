"""The SDK's `models` option (client/routing.py): which served model each feature's calls
name, checked when the client is made, the same for the blocking and the asyncio client."""

from __future__ import annotations

import asyncio

import pytest

from fusionrank.client import AsyncFusionRankClient, FusionRankClient, ModelNames

UNREACHABLE = "127.0.0.1:9"  # nothing is sent: making a client does not connect


def test_by_default_each_feature_calls_the_ensemble_named_after_it():
    assert ModelNames() == ModelNames.of(None) == ModelNames.of({})
    assert (ModelNames().search, ModelNames().recommend, ModelNames().sentiment) == (
        "search", "recommend", "sentiment")
    with FusionRankClient(UNREACHABLE) as client:
        assert client.models == ModelNames()


def test_models_renames_only_the_features_it_names():
    with FusionRankClient(UNREACHABLE, models={"search": "search_rollout_probe"}) as client:
        assert client.models == ModelNames(search="search_rollout_probe")
        assert client.models.recommend == "recommend"
    assert FusionRankClient.models == ModelNames()  # the class default is left alone

    async def made() -> ModelNames:
        async with AsyncFusionRankClient(UNREACHABLE, models={"sentiment": "reviews_v2"}) as c:
            return c.models

    assert asyncio.run(made()) == ModelNames(sentiment="reviews_v2")


@pytest.mark.parametrize("client_class", [FusionRankClient, AsyncFusionRankClient])
@pytest.mark.parametrize(("models", "message"), [
    ({"serch": "x"}, "models: 'serch' is not a feature; the features are search, recommend, "
                     "sentiment"),
    ({"search": ""}, "models['search'] must be a model name (a non-empty string), not ''"),
    ({"recommend": "  "}, "models['recommend'] must be a model name"),
    ({"sentiment": 3}, "models['sentiment'] must be a model name (a non-empty string), not 3"),
])
def test_a_bad_models_entry_is_refused_naming_it(client_class, models, message):
    with pytest.raises(ValueError) as caught:
        client_class(UNREACHABLE, models=models)
    assert str(caught.value).startswith(message)
