"""Which served model each feature's calls go to: by default the ensemble named after the
feature (`search`, `recommend`, `sentiment`); the `models` option of both clients names another
one, for a second deployment on the same server or a model checked before it serves:

    FusionRankClient(url, models={"search": "search_rollout_probe"}).search("drill")

The request and the answer keep the feature's contract: the model named must serve it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from fusionrank.core.recommend.contract import RECOMMEND_MODEL
from fusionrank.core.search.contract import CATALOGUE_MODEL, SEARCH_MODEL
from fusionrank.core.sentiment.contract import SENTIMENT_MODEL


@dataclass(frozen=True, slots=True)
class ModelNames:
    """The served model each feature's calls name; `ModelNames()` is the default routing."""

    search: str = SEARCH_MODEL  # search, search_batch, explain, explain_batch
    recommend: str = RECOMMEND_MODEL
    sentiment: str = SENTIMENT_MODEL
    catalogue: str = CATALOGUE_MODEL  # apply_changes, catalogue_status

    @classmethod
    def of(cls, models: Mapping[str, str] | None) -> ModelNames:
        """The routing `models` asks for ({feature: model name}; features left out keep their
        default); a ValueError names the entry that is not a feature or not a model name."""
        if models is None:
            return cls()
        features = [f.name for f in fields(cls)]
        for feature, name in models.items():
            if feature not in features:
                raise ValueError(f"models: {feature!r} is not a feature; the features are "
                                 f"{', '.join(features)}")
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"models[{feature!r}] must be a model name (a non-empty "
                                 f"string), not {name!r}")
        return replace(cls(), **models)
