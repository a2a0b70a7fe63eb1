"""Every step answers what it declares. Each step of the three ensembles of the served
repository (the tiny fixtures: search over the tiny catalogue, fused with the tiny run where
the shared datasets exist; the analytic recommender; the tiny review classifier) runs in
process as its config wires it, fed ONLY the inputs its class declares (`CONTRACT`), and each
answer carries every declared output that is not optional, nothing undeclared, each of the
declared dtype, rank and fixed dims."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import triton_to_np_dtype

from fusionrank.core.contract import RequestError, TensorSpec
from fusionrank.core.recommend.contract import RECOMMEND_MODEL
from fusionrank.core.search.contract import SEARCH_MODEL, Detail, search_request
from fusionrank.core.sentiment.contract import SENTIMENT_MODEL
from fusionrank.model_repository.config import model_of_step
from fusionrank.model_repository.runner import InProcessEnsemble
from fusionrank.model_repository.search.steps import Rank
from fusionrank.model_repository.step import (
    Chain,
    Step,
    StepContract,
    Tensors,
    declared_contract,
)
from tests.support import shop

# Every step class of the three ensembles (ScoreCandidates: a fused search only).
STEPS = {SEARCH_MODEL: {"Tokenize", "EncodeQueries", "Retrieve", "Rank"},
         RECOMMEND_MODEL: {"EncodeHistory", "RecommendRank"},
         SENTIMENT_MODEL: {"TokenizeReviews", "ClassifyReviews"}}


class Recorder:
    """A step fed only the inputs its class declares (a KeyError if it reads another), its
    answers kept."""

    def __init__(self, step: Step):
        self.step = step
        self.contract = declared_contract(type(step))
        self.answers: list[Tensors] = []

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        declared = {spec.name for spec in self.contract.inputs}
        answers = self.step([{name: value for name, value in request.items() if name in declared}
                             for request in requests])
        self.answers += [answer for answer in answers if not isinstance(answer, RequestError)]
        return answers


def recorded(repository, ensemble: str) -> tuple[InProcessEnsemble, dict[str, Recorder]]:
    """The ensemble, run in process, each of its steps (a merged model's each on its own)
    wrapped in a Recorder; the recorders by step class name."""
    runner = InProcessEnsemble(repository, ensemble)
    recorders: dict[str, Recorder] = {}

    def wrap(step: Step) -> Recorder:
        recorders[type(step).__name__] = Recorder(step)
        return recorders[type(step).__name__]

    for position, (step, input_map, output_map) in enumerate(runner.steps):
        if isinstance(step, Chain):
            step.steps = [(wrap(link), names) for link, names in step.steps]
        else:
            runner.steps[position] = (wrap(step), input_map, output_map)
    return runner, recorders


def problems(contract: StepContract, answer: Tensors) -> list[str]:
    """How an answer departs from the outputs its step declares; [] where it does not."""
    declared = {spec.name: spec for spec in contract.outputs}
    found = [f"{name} is answered but not declared" for name in answer if name not in declared]
    found += [f"{spec.name} is declared but missing" for spec in contract.outputs
              if not spec.optional and spec.name not in answer]
    for name in declared.keys() & answer.keys():
        found += tensor_problems(declared[name], np.asarray(answer[name]))
    return found


def tensor_problems(spec: TensorSpec, value: np.ndarray) -> list[str]:
    """A tensor (batch dimension first) against its spec's dtype, rank and fixed dims."""
    found = []
    if value.dtype != triton_to_np_dtype(spec.dtype):
        found.append(f"{spec.name} is {value.dtype}, declared {spec.dtype}")
    if value.ndim != 1 + len(spec.dims) or any(  # the dims only where the rank matches
            dim not in (-1, size) for dim, size in zip(spec.dims, value.shape[1:], strict=True)):
        found.append(f"{spec.name} has shape {value.shape}, declared [batch, *{spec.dims}]")
    return found


def fused(repository) -> bool:
    """Whether the repository's search is fused with a trained run (runs ScoreCandidates)."""
    try:
        model_of_step(repository, SEARCH_MODEL, "ScoreCandidates")
    except ValueError:
        return False
    return True


def assert_answers_match(recorders: dict[str, Recorder]) -> None:
    for name, recorder in recorders.items():
        assert recorder.answers, f"{name} answered nothing"
        for answer in recorder.answers:
            assert problems(recorder.contract, answer) == [], name


def test_the_check_finds_each_kind_of_departure():
    ids, scores = (np.array([[b"A", b"B"]], dtype=object), np.array([[0.5, 0.25]], np.float32))
    assert problems(Rank.CONTRACT, {"PRODUCT_IDS": ids, "SCORES": scores}) == []
    assert problems(Rank.CONTRACT, {"PRODUCT_IDS": ids, "SCORES": scores, "SCORE": scores}) == [
        "SCORE is answered but not declared"]
    assert problems(Rank.CONTRACT, {"PRODUCT_IDS": ids}) == ["SCORES is declared but missing"]
    assert problems(Rank.CONTRACT, {"PRODUCT_IDS": ids, "SCORES": scores.astype(np.float64)}
                    ) == ["SCORES is float64, declared FP32"]
    assert problems(Rank.CONTRACT, {"PRODUCT_IDS": ids, "SCORES": scores[0]}) == [
        "SCORES has shape (2,), declared [batch, *(-1,)]"]
    probabilities = TensorSpec("PROBABILITIES", "FP32", (3,))
    assert tensor_problems(probabilities, np.zeros((2, 4), np.float32)) == [
        "PROBABILITIES has shape (2, 4), declared [batch, *(3,)]"]


@pytest.mark.slow
def test_search_steps_answer_their_declared_outputs(served_repository):
    search, recorders = recorded(served_repository, SEARCH_MODEL)
    queries = ["ceiling fan", "cordles drill", "teapot"]
    for detail in (None, *Detail):
        answer = search(search_request(queries, 5, detail))
        # Rank answers exactly what DETAIL asks for (its optional outputs), and so does the
        # ensemble.
        wanted = {spec.name for spec in (detail or Detail.EXPLAIN).outputs}
        assert set(recorders["Rank"].answers[-1]) == wanted == set(answer)
    assert set(recorders) == STEPS[SEARCH_MODEL] | ({"ScoreCandidates"} if fused(
        served_repository) else set())
    assert_answers_match(recorders)


@pytest.mark.slow
def test_recommend_steps_answer_their_declared_outputs(served_repository):
    recommend, recorders = recorded(served_repository, RECOMMEND_MODEL)
    bought = shop.product_ids()[:3]
    history = np.array([[pid.encode() for pid in [*bought, "NOPE"]]], dtype=object)
    options = {"K": np.array([[4]], np.int32), "EXCLUDE_PURCHASED": np.array([[1]], np.int32)}
    recommend({"HISTORY": history, **options})  # without the optional HISTORY_TIMES
    recommend({"HISTORY": history, "HISTORY_TIMES": np.zeros(history.shape, np.int64),
               **options})
    assert set(recorders) == STEPS[RECOMMEND_MODEL]
    assert_answers_match(recorders)


@pytest.mark.slow
def test_sentiment_steps_answer_their_declared_outputs(served_repository):
    sentiment, recorders = recorded(served_repository, SENTIMENT_MODEL)
    sentiment({"TEXT": np.array([[b"Lovely mug, arrived quickly"], [b"Broke in a week"]],
                                dtype=object)})
    assert set(recorders) == STEPS[SENTIMENT_MODEL]
    assert_answers_match(recorders)
