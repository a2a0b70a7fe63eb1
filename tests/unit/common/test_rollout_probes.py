"""What a rollout's probe requires of a new ensemble version's answers before it may serve
(app/deploy/probes.py), on answers written out by hand: no server needed."""

from __future__ import annotations

import math

import pytest

from fusionrank.app.deploy.probes import PROBES, answer_problem, check_answers

SCORES = [0.9, 0.5, 0.5, -0.1]


@pytest.mark.parametrize(("ensemble", "values", "serving", "problem"), [
    ("search", SCORES, None, ""),
    ("search", SCORES, [1.0, 0.8, 0.3, 0.2], ""),
    ("recommend", SCORES, [4.0, 3.0, 2.0, 1.0], ""),
    ("search", [], None, "no result"),
    ("search", [0.9, math.nan], None, "a value that is not finite"),
    ("recommend", [math.inf, 1.0], None, "a value that is not finite"),
    ("search", SCORES[:3], [1.0, 0.8, 0.3, 0.2], "3 results where the serving version gives 4"),
    ("search", [0.5, 0.9], None, "scores out of order"),
    ("sentiment", [0.2, 0.3, 0.5], [0.6, 0.3, 0.1], ""),  # probabilities: any order
    ("sentiment", [0.2, 0.3, 0.4], None, "probabilities that do not add up to 1"),
])
def test_a_probe_answer_is_judged_on_its_own_and_against_the_serving_one(ensemble, values,
                                                                         serving, problem):
    assert answer_problem(ensemble, values, serving) == problem


def test_every_feature_ensemble_has_probe_requests():
    assert set(PROBES) == {"search", "recommend", "sentiment"}


def test_an_ensemble_without_probe_requests_passes_on_its_load_alone():
    # No request is sent: nothing listens at this address.
    check_answers("127.0.0.1:9", "search_steps_chain", "search_steps_chain_rollout_probe",
                  serving=True)
