"""The cross-encoder reranker: its pair tokenisation (the transformers tokenizer's, truncated
rather than refused), its listwise loss, its training lists, resumable training, the ONNX
export's parity, and the rerank order both the evaluation and the server use."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from fusionrank.core import artefacts
from fusionrank.core.model_folders import bundled_model_path
from fusionrank.core.search.reranker import OnnxReranker, PairTokenizer, reranked
from fusionrank.training.losses import GradedListwiseLoss
from fusionrank.training.search.reranker import (
    RerankerConfig,
    TrainingList,
    apply_rerank,
    training_lists,
)


@pytest.fixture(scope="module")
def tokenizer() -> PairTokenizer:
    return PairTokenizer(bundled_model_path() / artefacts.TOKENIZER, 16, 48)


def test_pairs_are_tokenised_as_transformers_does(tokenizer):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(bundled_model_path(), local_files_only=True)
    queries = ["cordless drill", "1/2 in. copper elbow", "outdoor led flood lights"]
    titles = ["DEWALT 20-Volt MAX Lithium-Ion Cordless 1/2 in. Drill/Driver Kit",
              "NIBCO 1/2 in. Copper Pressure Cup x Cup 90-Degree Elbow",
              "Halo 2-Light White Outdoor LED Flood Light"]
    ours = tokenizer(queries, titles)
    theirs = reference(queries, titles, padding=True, return_tensors="np")
    assert ours.input_ids.shape == theirs["input_ids"].shape
    np.testing.assert_array_equal(ours.input_ids, theirs["input_ids"])
    np.testing.assert_array_equal(ours.attention_mask, theirs["attention_mask"])
    np.testing.assert_array_equal(ours.token_type_ids, theirs["token_type_ids"])


def test_over_long_text_is_truncated_never_refused(tokenizer):
    query = " ".join(["waterproof"] * 200)
    title = " ".join(["stainless steel"] * 300)
    batch = tokenizer([query, "drill"], [title, title])
    assert batch.input_ids.shape[1] == 48
    ids = batch.input_ids[0]
    sep = np.flatnonzero(ids == tokenizer.sep)
    assert sep[0] == 1 + 16  # [CLS] + the query's first 16 pieces, then [SEP]
    assert sep[-1] == 47 and ids[0] == tokenizer.cls
    # The title's segment is typed 1, the query's 0.
    assert batch.token_type_ids[0, : sep[0] + 1].sum() == 0
    assert batch.token_type_ids[0, sep[0] + 1 :].all()
    with pytest.raises(ValueError, match="max_query_tokens"):
        PairTokenizer(bundled_model_path() / artefacts.TOKENIZER, 46, 48)


def test_listwise_loss_prefers_the_graded_order():
    loss = GradedListwiseLoss()
    gains = torch.tensor([[2.0, 1.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True, True]])
    right = loss(torch.tensor([[3.0, 2.0, -1.0, -1.0]]), gains, valid)
    wrong = loss(torch.tensor([[-1.0, -1.0, 2.0, 3.0]]), gains, valid)
    assert right < wrong
    # Padding takes no part: a padded position's logit changes nothing.
    padded = torch.tensor([[True, True, True, False]])
    a = loss(torch.tensor([[1.0, 0.5, 0.0, 9.0]]), gains, padded)
    b = loss(torch.tensor([[1.0, 0.5, 0.0, -9.0]]), gains, padded)
    assert torch.isclose(a, b)
    # A list with nothing relevant teaches nothing: no gradient.
    logits = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    loss(logits, torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool)).backward()
    assert not logits.grad.abs().sum()


def test_training_lists_hold_judged_products_and_hard_negatives(tmp_path):
    judged = {"drill": {1: 3.0, 2: 2.0, 3: 1.0, 4: 2.67, 5: 1.33, 6: 2.33},
              "lamp": {7: 1.0, 8: 1.0},  # nothing relevant: left out
              "hose": {9: 2.0}}
    negatives = {"drill": [3, 10, 11, 12, 13], "hose": [14, 15]}
    config = RerankerConfig(run=tmp_path, list_size=6, min_negatives=2, queries_per_step=2)
    steps = training_lists(judged, negatives, config, epoch=0)
    lists = {x.query: x for step in steps for x in step}
    assert set(lists) == {"drill", "hose"} and all(len(step) <= 2 for step in steps)
    drill = lists["drill"]
    assert len(drill.rows) == 6 and 1 in drill.rows  # its best product is always there
    assert drill.rows[-2:] == [10, 11]  # the hard negatives not judged, in mined order
    assert [drill.grades[drill.rows.index(r)] for r in (10, 11)] == [1.0, 1.0]
    assert lists["hose"].rows == [9, 14, 15] and lists["hose"].grades == [2.0, 1.0, 1.0]
    again = training_lists(judged, negatives, config, epoch=0)
    assert [[x.rows for x in s] for s in again] == [[x.rows for x in s] for s in steps]
    assert isinstance(drill, TrainingList)


def test_rerank_keeps_the_fused_order_at_weight_zero_and_breaks_ties_by_it():
    scores = np.array([[3.0, 2.0, 1.0, 1.0]])
    logits = np.array([[-5.0, 0.0, 5.0, 4.0]], dtype=np.float32)
    order, final = reranked(scores, logits, 0.0)
    assert order.tolist() == [[0, 1, 2, 3]]
    order, final = reranked(scores, logits, 1.0)
    assert order.tolist() == [[2, 3, 1, 0]]
    np.testing.assert_allclose(final, [[6.0, 5.0, 2.0, -2.0]])
    tied, _ = reranked(np.array([[1.0, 1.0]]), np.zeros((1, 2), np.float32), 1.0)
    assert tied.tolist() == [[0, 1]]
    rows = np.array([[10, 11, 12, 13, 14]])
    assert apply_rerank(rows, np.array([[3.0, 2.0, 1.0, 0.5, 0.1]]),
                        np.array([[0.0, 9.0, 0.0]]), 1.0).tolist() == [[11, 10, 12, 13, 14]]


def test_train_reranker_records_dev_choice_and_resumes(trained_run, trained_reranker,
                                                       tmp_path):
    from fusionrank.app.search import train_reranker_main

    best = trained_reranker / "best"
    record = json.loads((best / "reranker.json").read_text())
    assert record["layers"] == 1 and record["max_tokens"] == 48
    history = json.loads((trained_reranker / "history.json").read_text())
    assert [d["step"] for d in history["dev"]] == [0, 2, 4]
    assert record["dev"]["ndcg@10"] == max(d["ndcg@10"] for d in history["dev"])
    assert len(history["losses"]) == 4

    # Resumed: a copy stopped at step 4 goes on to 6 from its last/ state, not from 0.
    copy = tmp_path / "reranker"
    shutil.copytree(trained_reranker, copy)
    common = ["--run", str(trained_run.run), "--out", str(copy), "--cache",
              str(trained_run.cache), "--layers", "1", "--eval-every", "2", "--dev-queries",
              "8", "--dev-depth", "5", "--queries-per-step", "2", "--list-size", "4",
              "--threads", "1"]
    assert train_reranker_main([*common, "--max-steps", "6"]) == 0
    resumed = json.loads((copy / "history.json").read_text())
    assert [step for step, _ in resumed["losses"]] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="other data or settings"):
        train_reranker_main([*common[:-2], "--learning-rate", "1e-3", "--max-steps", "8"])


def test_export_matches_pytorch_and_int8_keeps_the_order(trained_reranker, tmp_path):
    from fusionrank.export.search.reranker import export_reranker
    from fusionrank.training.cross_encoder import CrossEncoder
    from fusionrank.training.search.rerank_evaluation import RerankerCheckpoint

    checkpoint = RerankerCheckpoint.open(trained_reranker)
    model, tokenizer = CrossEncoder.load(checkpoint.folder), checkpoint.tokenizer()
    queries = ["drill", "paint", "hose", "light bulb"] * 4
    titles = ["Cordless drill 20V", "Flat white interior paint", "Garden hose 50 ft.",
              "LED light bulb 60W", "Hammer drill kit", "Exterior paint primer",
              "Hose reel cart", "Halogen bulb", "Impact driver", "Paint roller",
              "Soaker hose", "Smart bulb", "Drill bits set", "Spray paint", "Hose nozzle",
              "Bulb changer"]
    exported = export_reranker(model, tokenizer, checkpoint.folder / artefacts.TOKENIZER,
                               tmp_path, (queries, titles))
    assert exported.fp32_max_abs_diff <= 1e-3 and exported.int8_spearman >= 0.98
    batch = tokenizer(queries, titles)
    with torch.no_grad():
        expected = model.score(batch).numpy()
    np.testing.assert_allclose(OnnxReranker(exported.fp32)(batch), expected, atol=1e-3)
    # A graph that is not a reranker is refused by name.
    encoder_graph = tmp_path / "encoder.onnx"
    torch.onnx.export(torch.nn.Linear(2, 1), (torch.ones(1, 2),), str(encoder_graph),
                      input_names=["x"], dynamo=False)
    with pytest.raises(ValueError, match="not a reranker graph"):
        OnnxReranker(encoder_graph)


def test_evaluation_fits_a_weight_per_depth_and_precision(trained_reranker):
    from tests.conftest import RERANKER_DEPTHS

    fits = json.loads((trained_reranker / "best" / "fits.json").read_text())["fits"]
    assert set(fits) == {"fp32", "int8"}
    for precision in fits:
        assert sorted(map(int, fits[precision])) == list(RERANKER_DEPTHS)
        for fit in fits[precision].values():
            assert fit["dev"]["ndcg@10"] >= 0 and fit["weight"] >= 0
