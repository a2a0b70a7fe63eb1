"""The search contract's DETAIL input: which outputs an answer carries. The Rank step answers
(and computes) only what a request's DETAIL asks for, with the same ranking at every level; a
request without DETAIL gets the whole answer, as before the input existed; a bad value is
refused naming DETAIL. The SDK sends it and parses each level's answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from fusionrank.client import InvalidRequestError
from fusionrank.client.ranked import ranked_rows
from fusionrank.client.search import SEARCH_RESPONSE, search_inputs
from fusionrank.core.contract import RequestError
from fusionrank.core.fusion import FusionWeights
from fusionrank.core.search.contract import (
    EXPLAIN_OUTPUTS,
    SEARCH_INPUTS,
    SEARCH_OUTPUTS,
    Detail,
    check_detail,
    search_request,
)
from fusionrank.model_repository.search.ensemble import (
    SEARCH_STEPS,
    SearchArtefacts,
    ServingOptions,
    search_ensemble,
)
from fusionrank.model_repository.search.steps import Rank

PRODUCT_IDS = [f"P{i:02d}" for i in range(12)]
WEIGHTS = {"similarity": 0.7, "feedback": 0.25, "lexical": 0.05}


@pytest.fixture(scope="module")
def ranker_folder(tmp_path_factory) -> Path:
    """The two files the Rank step reads: the catalogue's metadata and the fusion weights."""
    folder = tmp_path_factory.mktemp("ranker")
    (folder / "products.jsonl").write_text("".join(
        json.dumps({"product_id": pid, "title": f"Product {pid}", "description": "",
                    "category": "", "brand": "", "price": 1.5}) + "\n" for pid in PRODUCT_IDS),
        encoding="utf-8")
    FusionWeights(WEIGHTS).save(folder / "ranking.json")
    return folder


def rank_request(detail: str | None, rows: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    request = {"CANDIDATES": np.tile(np.array([3, 9, 0, 7, 11, 5]), (rows, 1)),
               "K": np.full((rows, 1), 4, dtype=np.int32),
               "SIMILARITY": rng.random((rows, 6), dtype=np.float32),
               "FEEDBACK": 1 + 2 * rng.random((rows, 6), dtype=np.float32),
               "LEXICAL": rng.random((rows, 6), dtype=np.float32),
               "CORRECTION": np.full((rows, 1), b"", dtype=object)}
    if detail is not None:
        request["DETAIL"] = np.full((rows, 1), detail.encode(), dtype=object)
    return request


def names(specs) -> set[str]:
    return {spec.name for spec in specs}


def test_each_level_adds_outputs_to_the_one_before():
    assert names(Detail.IDS.outputs) == {"PRODUCT_IDS", "SCORES"}
    assert names(Detail.PRODUCTS.outputs) == {"PRODUCT_IDS", "SCORES", "PRODUCTS"}
    assert names(Detail.EXPLAIN.outputs) == names((*SEARCH_OUTPUTS, *EXPLAIN_OUTPUTS))
    assert names(SEARCH_RESPONSE) == names(Detail.EXPLAIN.outputs)


def test_a_request_without_detail_asks_for_the_whole_answer():
    assert check_detail(None) is Detail.EXPLAIN
    assert check_detail([b"ids", b"ids"]) is Detail.IDS
    assert check_detail(["products"]) is Detail.PRODUCTS
    assert {spec.name: spec.optional for spec in SEARCH_INPUTS} == {
        "QUERY": False, "K": False, "DETAIL": True}


@pytest.mark.parametrize(("values", "message"), [
    ([b"everything"], "DETAIL = 'everything' is not one of ids, products, explain"),
    ([b"IDS"], "DETAIL = 'IDS' is not one of"),
    ([b""], "DETAIL = '' is not one of"),
    ([b"ids", b"explain"], "DETAIL must be the same for every row of a request"),
    ([], "DETAIL has no rows"),
])
def test_a_bad_detail_is_refused_naming_the_input(values, message):
    with pytest.raises(RequestError, match=message):
        check_detail(values)


def test_rank_answers_exactly_the_outputs_of_the_level_asked_for(ranker_folder):
    ranker = Rank(ranker_folder, {})
    answers = {level: ranker([rank_request(level)])[0]
               for level in (None, *(level.value for level in Detail))}
    for level, answer in answers.items():
        assert set(answer) == names(Detail(level or "explain").outputs), level
    whole = answers[None]
    for answer in answers.values():  # one ranking, whatever else the answer carries
        assert answer["PRODUCT_IDS"].tolist() == whole["PRODUCT_IDS"].tolist()
        assert answer["SCORES"].tobytes() == whole["SCORES"].tobytes()
    # The ranking itself, worked out here from the weights: the fused score's top 4.
    request = rank_request(None)
    fused = sum(w * request[n.upper()].astype(np.float64) for n, w in WEIGHTS.items())
    best = np.argsort(-fused[0], kind="stable")[:4]
    assert whole["PRODUCT_IDS"][0].tolist() == [
        PRODUCT_IDS[request["CANDIDATES"][0, i]].encode() for i in best]
    assert json.loads(answers["products"]["PRODUCTS"][0, 0])["product_id"] == \
        whole["PRODUCT_IDS"][0, 0].decode()


def test_rank_refuses_a_bad_detail_and_serves_the_rest_of_its_batch(ranker_folder):
    good, bad = rank_request("ids"), rank_request("full")
    answers = Rank(ranker_folder, {})([good, bad, rank_request(None)])
    assert set(answers[0]) == {"PRODUCT_IDS", "SCORES"}
    assert isinstance(answers[1], RequestError) and "DETAIL = 'full'" in str(answers[1])
    assert "SIGNALS" in answers[2]


def test_the_ensemble_declares_detail_optional_and_hands_it_to_the_ranking(tmp_path):
    FusionWeights(WEIGHTS).save(tmp_path / "ranking.json")
    files = SearchArtefacts(encoder=tmp_path, index=tmp_path, run=tmp_path)
    for layout, ranking_model in (("one", SEARCH_STEPS), ("two", "ranker"),
                                  ("steps", "ranker")):
        ensemble = search_ensemble(files, ServingOptions(layout=layout))
        config = ensemble.config()
        assert {i.name: i.optional for i in config.input}["DETAIL"]
        readers = [step.model_name for step in config.ensemble_scheduling.step
                   if "DETAIL" in step.input_map]
        assert readers == [ranking_model], layout
        model = next(m for m in ensemble.pipeline.steps if m.name == ranking_model)
        assert {i.name: i.optional for i in model.config().input}["DETAIL"], layout


def test_the_sdk_sends_detail_and_checks_it_first():
    inputs = search_inputs(["drill", "sink"], 5, Detail.IDS, module=grpcclient)
    assert [(t.name(), t.datatype(), t.shape()) for t in inputs] == [
        ("QUERY", "BYTES", [2, 1]), ("K", "INT32", [2, 1]), ("DETAIL", "BYTES", [2, 1])]
    with pytest.raises(InvalidRequestError, match="DETAIL = 'all' is not one of"):
        search_inputs(["drill"], 5, "all", module=grpcclient)


def test_a_light_answer_parses_to_hits_without_products():
    ids = np.array([[b"P01", b"P02", b""]], dtype=object)  # a short row is padded with b""
    scores = np.array([[0.9, 0.5, 0.0]], dtype=np.float32)
    (hits,) = ranked_rows(ids, scores)
    assert [(h.product_id, h.product) for h in hits] == [("P01", None), ("P02", None)]
    assert hits[0].to_dict() == {"product_id": "P01", "score": pytest.approx(0.9),
                                 "product": None}


def test_search_request_carries_detail_only_when_given():
    assert set(search_request(["drill"], 3)) == {"QUERY", "K"}
    request = search_request(["drill", "sink"], 3, Detail.PRODUCTS)
    assert request["DETAIL"].tolist() == [[b"products"], [b"products"]]
