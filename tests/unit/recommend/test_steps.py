"""The `recommend` steps, called directly on the tiny shop's analytic recommender (its head's
logit is log(1 + purchases), so every score is computed independently in tests/support/shop.py):
history handling (unknown ids, cold start, oversized histories), options, the ensemble's config,
the client's checks and the CLI's in-process path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusionrank.core.contract import MAX_K, RequestError
from fusionrank.core.recommend.contract import MAX_HISTORY, RECOMMEND_MODEL
from fusionrank.model_repository.recommend.steps import (
    EncodeHistory,
    RecommendRank,
    shoppers_from_tensors,
)
from tests.support import shop


@pytest.fixture(scope="module")
def served(recommender):
    return recommender


@pytest.fixture(scope="module")
def steps(served):
    return EncodeHistory(served, {}), RecommendRank(served, {})


def history(ids: list[str], times: list[int] | None = None) -> dict:
    return {"HISTORY": np.array([[i.encode() for i in ids]], dtype=object).reshape(1, -1),
            "HISTORY_TIMES": np.array([times or [0] * len(ids)], dtype=np.int64).reshape(1, -1)}


def options(k: int = 5, exclude: int = 0) -> dict:
    return {"K": np.array([[k]], np.int32), "EXCLUDE_PURCHASED": np.array([[exclude]], np.int32)}


def recommend(steps, ids, times=None, k=5, exclude=0):
    encode, rank = steps
    (shopper,) = encode([history(ids, times)])
    assert not isinstance(shopper, RequestError), shopper
    (ranked,) = rank([shopper | options(k, exclude)])
    return shopper, ranked


THEME_1 = [pid for pid in shop.product_ids() if shop.theme_of(pid) == 1]


def reference_time(served) -> int:
    return json.loads((served / "recommender.json").read_text())["reference_time"]


@pytest.mark.parametrize("exclude", [0, 1])
def test_the_ranking_is_the_independently_computed_one(steps, served, exclude):
    now = reference_time(served)
    times = [now - 86_400 * d for d in (50, 20, 3)]
    ids = [THEME_1[0], THEME_1[1], THEME_1[0]]
    _, ranked = recommend(steps, ids, times, k=8, exclude=exclude)
    expected = shop.expected_ranking(served, list(zip(ids, times, strict=True)), 8,
                                     bool(exclude))
    assert [p.decode() for p in ranked["PRODUCT_IDS"][0]] == [pid for pid, _ in expected]
    np.testing.assert_allclose(ranked["SCORES"][0], [s for _, s in expected], rtol=0, atol=1e-5)
    assert json.loads(ranked["PRODUCTS"][0][0])["product_id"] == expected[0][0]
    if not exclude:  # bought twice, recently: log(3) + 0.5 cos beats everything else
        assert expected[0][0] == THEME_1[0]


def test_unknown_ids_are_ignored_and_counted(steps):
    shopper, ranked = recommend(steps, [THEME_1[0], "POST", "NOPE", THEME_1[1]])
    assert shopper["UNKNOWN_IDS"].tolist() == [[2]]
    _, same = recommend(steps, [THEME_1[0], THEME_1[1]])
    assert ranked["PRODUCT_IDS"].tolist() == same["PRODUCT_IDS"].tolist()


@pytest.mark.parametrize("ids", [[], ["NOPE", "POST"]])
def test_a_history_with_nothing_known_gets_the_popular_products(steps, served, ids):
    shopper, ranked = recommend(steps, ids, k=4)
    popular = shop.expected_popular(served, 4)
    assert [p.decode() for p in ranked["PRODUCT_IDS"][0]] == [pid for pid, _ in popular]
    np.testing.assert_allclose(ranked["SCORES"][0], [s for _, s in popular], atol=1e-6)
    assert shopper["UNKNOWN_IDS"].tolist() == [[len(ids)]]


def test_exclude_purchased_leaves_out_the_history(steps):
    _, ranked = recommend(steps, THEME_1[:3], k=10, exclude=1)
    ids = [p.decode() for p in ranked["PRODUCT_IDS"][0]]
    assert len(ids) == 10 and not set(ids) & set(THEME_1[:3])
    _, kept = recommend(steps, THEME_1[:3], k=10, exclude=0)
    assert set(THEME_1[:3]) & {p.decode() for p in kept["PRODUCT_IDS"][0]}


def test_an_oversized_history_is_rejected(steps):
    encode, _ = steps
    (result,) = encode([history([THEME_1[0]] * (MAX_HISTORY + 1))])
    assert isinstance(result, RequestError) and str(MAX_HISTORY) in str(result)


def test_history_times_are_optional_and_default_to_unknown(steps):
    encode, _ = steps
    request = history(THEME_1[:2])
    del request["HISTORY_TIMES"]
    (without,) = encode([request])
    (zeros,) = encode([history(THEME_1[:2], [0, 0])])
    for name, value in zeros.items():
        np.testing.assert_array_equal(without[name], value)


def test_times_must_match_the_history(steps):
    encode, _ = steps
    request = history(THEME_1[:2])
    request["HISTORY_TIMES"] = np.zeros((1, 3), np.int64)
    (result,) = encode([request])
    assert isinstance(result, RequestError) and "HISTORY_TIMES" in str(result)


def test_padding_rows_share_one_request(steps):
    encode, rank = steps
    ids = np.array([[THEME_1[0].encode(), THEME_1[1].encode()], [THEME_1[2].encode(), b""]],
                   dtype=object)
    (shoppers,) = encode([{"HISTORY": ids, "HISTORY_TIMES": np.zeros((2, 2), np.int64)}])
    assert shoppers["BOUGHT_ROWS"].shape == (2, 2) and shoppers["BOUGHT_ROWS"][1, 1] == -1
    assert [len(s.rows) for s in shoppers_from_tensors(shoppers)] == [2, 1]
    (ranked,) = rank([shoppers | {"K": np.full((2, 1), 3, np.int32),
                                  "EXCLUDE_PURCHASED": np.zeros((2, 1), np.int32)}])
    assert ranked["PRODUCT_IDS"].shape == (2, 3)


@pytest.mark.parametrize(("k", "exclude", "message"), [
    (0, 0, "K = 0"), (MAX_K + 1, 0, "out of range"), (5, 2, "EXCLUDE_PURCHASED")])
def test_bad_options_are_request_errors_and_other_requests_still_succeed(steps, k, exclude,
                                                                         message):
    encode, rank = steps
    (shopper,) = encode([history(THEME_1[:2])])
    bad, good = rank([shopper | options(k, exclude), shopper | options(3, 0)])
    assert isinstance(bad, RequestError) and message in str(bad)
    assert good["PRODUCT_IDS"].shape == (1, 3)


def test_the_ensemble_chains_history_and_ranker(served, tmp_path):
    from fusionrank.model_repository.recommend.ensemble import recommend_ensemble

    ensemble = recommend_ensemble(served)
    config = ensemble.config()
    assert config.name == RECOMMEND_MODEL
    assert [s.model_name for s in config.ensemble_scheduling.step] == ["recommend_history",
                                                                       "recommend_ranker"]
    assert {o.name for o in config.output} == {"PRODUCT_IDS", "SCORES", "PRODUCTS",
                                               "UNKNOWN_IDS"}
    # Loose at the ensemble (Triton would deadlock on a missing required input), strict in
    # the steps, which name what is missing.
    assert all(i.optional for i in config.input) and len(config.input) == 4
    step = ensemble.pipeline.steps[0].config()
    assert {i.name for i in step.input if i.optional} == {"HISTORY_TIMES"}
    assert not any(i.optional for i in ensemble.pipeline.steps[1].config().input)
    ensemble.export(tmp_path)
    for model in ("recommend", "recommend_history", "recommend_ranker"):
        assert (tmp_path / model / "config.pbtxt").is_file()
    assert (tmp_path / "recommend_ranker" / "1" / "recommend_head.onnx").is_file()


def test_the_ensemble_refuses_an_incomplete_artefact_folder(tmp_path):
    from fusionrank.model_repository.recommend.ensemble import recommend_ensemble

    with pytest.raises(FileNotFoundError, match="train-recommender"):
        recommend_ensemble(tmp_path)


def test_client_checks_before_sending():
    from fusionrank.client.errors import InvalidRequestError
    from fusionrank.client.recommend import history_tensors, recommend_inputs

    ids, times = history_tensors(["85123A", ("71053", 1_300_000_000)])
    assert ids.tolist() == [[b"85123A", b"71053"]] and times.tolist() == [[0, 1_300_000_000]]
    with pytest.raises(InvalidRequestError, match="limit"):
        history_tensors(["85123A"] * (MAX_HISTORY + 1))
    with pytest.raises(InvalidRequestError, match="not one string"):
        history_tensors("85123A")
    with pytest.raises(InvalidRequestError, match="K = 0"):
        recommend_inputs(["85123A"], 0, False)
    sent = {t.name() for t in recommend_inputs(["85123A"], 3, False)}
    assert sent == {"HISTORY", "K", "EXCLUDE_PURCHASED"}  # no times known: tensor left out
    assert "HISTORY_TIMES" in {t.name() for t in recommend_inputs([("85123A", 5)], 3, False)}


def test_client_reports_an_absent_server_clearly():
    from fusionrank.app.serve import free_port
    from fusionrank.client import FusionRankClient
    from fusionrank.client.errors import FusionRankError

    with FusionRankClient(f"127.0.0.1:{free_port()}", timeout_s=2.0) as client, \
            pytest.raises(FusionRankError, match=r"127\.0\.0\.1"):
        client.recommend(["85123A"], k=3)


def test_cli_recommends_in_process(served, tmp_path, capsys):
    import argparse

    from fusionrank.app.recommend import add_recommend, add_train_recommender
    from fusionrank.model_repository.recommend.ensemble import recommend_ensemble

    repository = tmp_path / "model_repository"
    recommend_ensemble(served).export(repository)

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    add_recommend(commands)
    add_train_recommender(commands)
    args = parser.parse_args(["recommend", "--history", f"{THEME_1[0]},{THEME_1[1]}@1300000000,X",
                              "-k", "3", "--repository", str(repository), "--json"])
    assert args.run(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["unknown_ids"] == 1 and len(printed["results"]) == 3
    assert printed["cold_start"] is False
    expected = shop.expected_ranking(served, [THEME_1[0], (THEME_1[1], 1_300_000_000), "X"], 3)
    assert [r["product_id"] for r in printed["results"]] == [pid for pid, _ in expected]
    assert parser.parse_args(["train-recommender", "--out", "x"]).run is not None


def test_a_product_a_live_catalogue_deleted_is_never_recommended(served, tmp_path):
    """The recommend model of a live build reads the deletes of the live folder beside its
    repository (docs/live_catalogue.md): a deleted product leaves both the warm ranking and
    the cold start's popular list, and comes back when upserted again."""
    from fusionrank.core.live.changes import parse_changes
    from fusionrank.core.live.segments import LiveFolder, LiveState

    folder = tmp_path / "out" / "model_repository" / "recommend_rank" / "7"
    folder.mkdir(parents=True)
    for path in served.iterdir():
        (folder / path.name).symlink_to(path)
    steps = (EncodeHistory(folder, {}), RecommendRank(folder, {}))
    now = reference_time(served)
    warm = (THEME_1[:2], [now - 86_400, now - 3 * 86_400])
    before = {False: recommend(steps, [], k=5)[1], True: recommend(steps, *warm, k=5)[1]}
    gone = [before[False]["PRODUCT_IDS"][0][0].decode(), before[True]["PRODUCT_IDS"][0][0].decode()]
    live = LiveFolder(tmp_path / "out" / "live")

    def publish(sequence: int, lines: list[dict]) -> None:
        changes = parse_changes("\n".join(json.dumps(line) for line in lines))
        live.write_segment(sequence, changes, np.zeros((len(changes.upserts), 4), np.float32))
        live.publish(LiveState("7", tuple(range(1, sequence + 1))))

    publish(1, [{"op": "delete", "product_id": i} for i in dict.fromkeys(gone)])
    for warm_shopper in (False, True):
        ranked = recommend(steps, *warm, k=5)[1] if warm_shopper else recommend(steps, [], k=5)[1]
        ids = [i.decode() for i in ranked["PRODUCT_IDS"][0]]
        assert not set(gone) & set(ids) and len(ids) == 5, ids
    publish(2, [{"op": "upsert", "product": {"product_id": gone[0], "title": "back again"}}])
    assert recommend(steps, [], k=5)[1]["PRODUCT_IDS"][0][0].decode() == gone[0]


def test_cold_start_counts_the_entries_the_server_reads(served, tmp_path):
    """A blank id is read and counted unknown (padding, the empty id, is not read): a history
    with a known product beside it is not a cold start; one of blanks only is."""
    from fusionrank.app.clients import LocalClient
    from fusionrank.model_repository.recommend.ensemble import recommend_ensemble

    repository = tmp_path / "model_repository"
    recommend_ensemble(served).export(repository)
    with LocalClient(repository) as client:
        mixed = client.recommend([THEME_1[0], " "], k=3)
        blank = client.recommend([" ", ""], k=3)
    assert mixed.unknown_ids == 1 and not mixed.cold_start
    assert blank.unknown_ids == 1 and blank.cold_start
