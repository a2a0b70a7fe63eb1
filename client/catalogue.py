"""Changes to the served catalogue through the `catalogue` model (a build with
`--live-catalogue`; docs/live_catalogue.md).

    with FusionRankClient(url) as client:
        answer = client.apply_changes(Path("changes.jsonl"))   # or bytes, or a list of dicts
        print(answer.applied.added, answer.status.products)

A change set is one request: checked whole by the server, logged before it is acknowledged,
searchable when the call returns. A refused set (InvalidRequestError, naming the line and the
field) changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from fusionrank.client.errors import InvalidRequestError
from fusionrank.core.live.changes import MAX_BYTES
from fusionrank.core.search.contract import CHANGES, REPORT

Changes = bytes | str | Path | Iterable[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class AppliedChanges:
    """One applied change set (the ids in the set's order)."""

    sequence: int  # its place in the server's change log
    added: list[str]
    changed: list[str]
    deleted: list[str]
    unknown_deletes: list[str]  # deletes of ids the catalogue did not hold: reported only
    products: int  # live products after it
    segments: int
    seconds: float  # server side, receipt to searchable, embedding included
    embed_seconds: float


@dataclass(frozen=True, slots=True)
class CatalogueStatus:
    base: str  # the model version the changes apply to
    segments: int
    rows: int  # catalogue rows, replaced and deleted ones included (compaction reclaims them)
    products: int
    applied_through: int  # the last applied change set's sequence
    pending: int  # logged change sets not yet applied
    last_change_at: float | None  # Unix seconds


@dataclass(frozen=True, slots=True)
class CatalogueAnswer:
    applied: AppliedChanges | None  # None: a status call
    status: CatalogueStatus


def changes_payload(changes: Changes) -> bytes:
    """A change set as the JSON Lines the server reads: a file's bytes, the text itself, or
    one JSON object per change ({"op": "upsert", "product": {...}} / {"op": "delete",
    "product_id": ...})."""
    if isinstance(changes, Path):
        try:
            data = changes.read_bytes()
        except OSError as error:
            raise InvalidRequestError(f"change set {changes}: {error.strerror}") from error
    elif isinstance(changes, bytes):
        data = changes
    elif isinstance(changes, str):
        data = changes.encode("utf-8")
    else:
        data = "".join(json.dumps(change, ensure_ascii=False) + "\n"
                       for change in changes).encode("utf-8")
    if len(data) > MAX_BYTES:
        raise InvalidRequestError(f"change set: {len(data)} bytes, more than the "
                                  f"{MAX_BYTES} one set may hold; split it")
    return data


def catalogue_inputs(payload: bytes, transport) -> list:
    tensor = transport.InferInput(CHANGES.name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[payload]], dtype=object))
    return [tensor]


def parse_answer(result) -> CatalogueAnswer:
    answer = json.loads(result.as_numpy(REPORT.name).reshape(-1)[0])
    applied = answer["applied"]
    return CatalogueAnswer(
        None if applied is None else AppliedChanges(**_known(AppliedChanges, applied)),
        CatalogueStatus(**_known(CatalogueStatus, answer["status"])))


def _known(kind: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields `kind` has (a newer server may answer more)."""
    return {f.name: values[f.name] for f in fields(kind)}
