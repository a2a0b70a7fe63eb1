"""The `catalogue` model: change sets applied to the served catalogue while it serves.

    CHANGES [1] (a change set, JSON Lines) → REPORT [1] (JSON: what was applied, and the state)

One copy (its requests are applied one after the other), beside the search models it changes:
`CatalogueWriter` logs the set, embeds its upserted titles with the encoder that embedded the
base and publishes the segment; the search processes read the new state before their next
batch (`LiveSource`). A set that fails its checks is refused whole, INVALID_ARGUMENT naming the
line and the field, and changes nothing. An empty CHANGES applies nothing and answers the
state (`fusionrank status`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.contract import RequestError
from fusionrank.core.encoding import MAX_TITLE_TOKENS, TextEncoder
from fusionrank.core.live.changes import ChangeSetError, parse_changes
from fusionrank.core.live.segments import LiveBase, live_folder
from fusionrank.core.product_table import ProductTable
from fusionrank.core.search.contract import CHANGES, REPORT
from fusionrank.core.search.live_catalogue import CatalogueWriter
from fusionrank.model_repository.step import StepContract, Tensors


class ApplyChanges:
    CONTRACT = StepContract(inputs=(CHANGES,), outputs=(REPORT,))

    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        # Every core by default, as the build embeds: a set is searchable only once embedded,
        # and sets come one at a time; the searches share the cores meanwhile.
        threads = int(parameters.get("threads", "0")) or os.cpu_count()
        encoder = TextEncoder.titles_of(folder, threads)
        # One full batch of the longest titles at load: ONNX Runtime's memory for the largest
        # batch is taken now, as part of the ready model, not by the first change set (whose
        # apply it slowed and whose memory it grew by ~60 MiB).
        encoder.encode(["warm up " * MAX_TITLE_TOKENS] * encoder.batch_size)
        table = ProductTable.open(folder / artefacts.PRODUCTS)
        vectors = artefacts.load_array(folder / artefacts.EMBEDDINGS, shape=(len(table), None),
                                       mmap=True)
        # Applies what the log holds beyond the published state (a crash, a restart).
        self.writer = CatalogueWriter(live_folder(folder), folder.name,
                                      LiveBase.read(folder / artefacts.LIVE_BASE), table,
                                      vectors.shape[1], encoder.encode)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        return [self.answer(request) for request in requests]

    def answer(self, request: Tensors) -> Tensors | RequestError:
        values = request[CHANGES.name].reshape(-1)
        if len(values) != 1:
            return RequestError(f"{CHANGES.name}: one change set per request, not "
                                f"{len(values)}")
        data = values[0]
        applied = None
        if len(data):  # empty: a status call
            try:
                changes = parse_changes(data if isinstance(data, bytes) else str(data))
            except ChangeSetError as error:
                return RequestError(f"{CHANGES.name}: {error}")
            applied = self.writer.apply(changes).to_dict()
        answer = {"applied": applied, "status": self.writer.status().to_dict()}
        return {REPORT.name: np.array([[json.dumps(answer).encode("utf-8")]], dtype=object)}
