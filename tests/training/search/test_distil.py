"""The student query encoder (`fusionrank distil`): its initialisation copies the chosen
teacher layers exactly and keeps the teacher's embedding size; the distillation losses measure
what they claim on real tensors; a tiny distillation writes a checkpoint the export accepts;
`fusionrank evaluate --student` puts teacher and student side by side and records whether
`fusionrank build --student auto` serves the student, which the build follows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fusionrank.core.model_folders import bundled_model_path
from fusionrank.training.encoder import load_pooled_encoder
from fusionrank.training.losses import ScoreDistillationLoss, embedding_matching_loss
from fusionrank.training.search.distil import candidate_rows, init_student, student_layers

QUERIES = ["cordless drill", "8 ft garden hose", "white kitchen faucet with sprayer",
           "2x4 pressure treated lumber"]


def encode(model_dir, texts: list[str]) -> torch.Tensor:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return load_pooled_encoder(model_dir)(batch["input_ids"], batch["attention_mask"])


def test_student_layers_are_evenly_spaced_with_the_first_and_the_last():
    assert student_layers(6, 3) == [0, 2, 5]
    assert student_layers(6, 2) == [0, 5]
    assert student_layers(6, 6) == [0, 1, 2, 3, 4, 5]
    assert student_layers(6, 1) == [5]
    for bad in (0, 7):
        with pytest.raises(ValueError, match="layers must be between 1 and the teacher's 6"):
            student_layers(6, bad)


@pytest.fixture(scope="module")
def teacher():
    from transformers import AutoModel

    return AutoModel.from_pretrained(bundled_model_path(), local_files_only=True)


def test_student_copies_the_chosen_teacher_layers_and_keeps_the_embedding_size(teacher,
                                                                                tmp_path):
    from transformers import AutoModel

    folder = init_student(bundled_model_path(), [0, 2, 5], tmp_path / "student")
    student = AutoModel.from_pretrained(folder, local_files_only=True)
    assert student.config.num_hidden_layers == 3
    assert student.config.hidden_size == teacher.config.hidden_size == 384
    for name, value in teacher.embeddings.state_dict().items():
        assert torch.equal(student.embeddings.state_dict()[name], value), name
    for position, layer in enumerate([0, 2, 5]):
        copied = student.encoder.layer[position].state_dict()
        for name, value in teacher.encoder.layer[layer].state_dict().items():
            assert torch.equal(copied[name], value), (position, name)
    # Position 1 holds the teacher's layer 2, not its layer 1: the choice of layers mattered.
    q = "attention.self.query.weight"
    assert not torch.equal(student.encoder.layer[1].state_dict()[q],
                           teacher.encoder.layer[1].state_dict()[q])
    for name in ("tokenizer.json", "vocab.txt"):
        assert (folder / name).read_bytes() == (bundled_model_path() / name).read_bytes()
    embeddings = encode(folder, QUERIES)
    assert embeddings.shape == (len(QUERIES), 384)
    np.testing.assert_allclose(embeddings.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_a_student_keeping_every_layer_embeds_exactly_as_the_teacher(tmp_path):
    folder = init_student(bundled_model_path(), list(range(6)), tmp_path / "all")
    np.testing.assert_allclose(encode(folder, QUERIES).numpy(),
                               encode(bundled_model_path(), QUERIES).numpy(), atol=1e-6)
    fewer = encode(init_student(bundled_model_path(), [0, 2, 5], tmp_path / "three"), QUERIES)
    cosines = (fewer * encode(bundled_model_path(), QUERIES)).sum(dim=1)
    assert float(cosines.max()) < 0.999  # three layers do change the embedding


def test_bad_layer_choices_are_refused(tmp_path):
    for keep, what in (([0, 6], "0..5"), ([1, 1], "distinct"), ([], "distinct")):
        with pytest.raises(ValueError, match=what):
            init_student(bundled_model_path(), keep, tmp_path / "bad")


def unit(*rows: list[float]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_embedding_matching_is_the_squared_distance_of_unit_vectors():
    e1, e2 = unit([1.0, 0.0, 0.0]), unit([0.0, 1.0, 0.0])
    assert float(embedding_matching_loss(e1, e1)) == 0.0
    assert float(embedding_matching_loss(e1, e2)) == pytest.approx(2.0)  # 2 − 2·cos 90°
    assert float(embedding_matching_loss(e1, -e1)) == pytest.approx(4.0)
    both = embedding_matching_loss(torch.cat([e1, e1]), torch.cat([e1, e2]))
    assert float(both) == pytest.approx(1.0)  # the batch's mean


def test_score_distillation_is_the_kl_divergence_of_the_two_score_distributions():
    loss = ScoreDistillationLoss(scale=1.0)
    candidates = unit([1.0, 0.0], [0.0, 1.0]).unsqueeze(0)  # [1, 2, 2]
    valid = torch.ones(1, 2, dtype=torch.bool)
    teacher, student = unit([1.0, 0.0]), unit([0.0, 1.0])
    # p_t = softmax(1, 0) = (a, 1 − a), p_s = (1 − a, a): KL = (2a − 1)·log(a / (1 − a)) = 2a − 1
    a = math.e / (math.e + 1)
    assert float(loss(student, teacher, candidates, valid)) == pytest.approx(2 * a - 1, rel=1e-5)
    assert float(loss(teacher, teacher, candidates, valid)) == pytest.approx(0.0, abs=1e-7)


def test_padding_candidates_take_no_part_in_score_distillation():
    loss = ScoreDistillationLoss(scale=20.0)
    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(2, 3, 8, generator=generator), dim=2)
    student, teacher = queries[0], queries[1]
    candidates = torch.nn.functional.normalize(torch.randn(3, 5, 8, generator=generator), dim=2)
    valid = torch.ones(3, 5, dtype=torch.bool)
    plain = loss(student, teacher, candidates, valid)
    padded = torch.cat([candidates, torch.randn(3, 4, 8, generator=generator)], dim=1)
    padded_valid = torch.cat([valid, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    assert float(loss(student, teacher, padded, padded_valid)) == pytest.approx(float(plain),
                                                                               rel=1e-6)
    assert float(plain) > 0


def test_minimising_score_distillation_gives_the_student_the_teachers_ranking():
    generator = torch.Generator().manual_seed(1)
    candidates = torch.nn.functional.normalize(torch.randn(1, 12, 16, generator=generator), dim=2)
    teacher = torch.nn.functional.normalize(torch.randn(1, 16, generator=generator), dim=1)
    raw = torch.randn(1, 16, generator=generator, requires_grad=True)
    loss = ScoreDistillationLoss(scale=20.0)
    valid = torch.ones(1, 12, dtype=torch.bool)

    def ranking(vector: torch.Tensor) -> list[int]:
        return torch.argsort((candidates[0] @ vector[0]), descending=True).tolist()

    assert ranking(torch.nn.functional.normalize(raw.detach(), dim=1))[:3] != ranking(teacher)[:3]
    optimiser = torch.optim.Adam([raw], lr=0.05)
    values = []
    for _ in range(500):
        value = loss(torch.nn.functional.normalize(raw, dim=1), teacher, candidates, valid)
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        values.append(float(value.detach()))
    assert values[-1] < 0.01 * values[0]
    # The head of the ranking, where the teacher's probability mass is, is the teacher's.
    assert ranking(torch.nn.functional.normalize(raw.detach(), dim=1))[:3] == ranking(teacher)[:3]


def test_candidate_rows_put_judged_first_without_repeats_and_cap_the_pool():
    assert candidate_rows([7, 3], [3, 9, 1], [1, 4, 7, 5], size=10) == [7, 3, 9, 1, 4, 5]
    assert candidate_rows([7, 3], [3, 9, 1], [1, 4], size=4) == [7, 3, 9, 1]


# ---- the command on a tiny run ---------------------------------------------------------------

def test_distil_writes_a_student_checkpoint_that_exports_and_records_its_training(
        trained_run, trained_student, tmp_path):
    from fusionrank.training.embeddings import weights_digest
    from fusionrank.training.encoder import export_model_folder

    manifest = json.loads((trained_student / "checkpoint.json").read_text())
    assert manifest["kept_layers"] == [0, 2, 5] and manifest["teacher_layers"] == 6
    assert manifest["teacher_weights"] == weights_digest(trained_run.run / "encoder" / "best")
    assert manifest["trained_on"] == "train split queries"
    record = json.loads((trained_student.parent / "distil.json").read_text())
    assert record["steps"] == 3 and len(record["dev"]) == 2  # before training, after
    assert record["train_queries"] > record["dev_queries"] > 0
    exported = export_model_folder(trained_student, tmp_path / "onnx", trained_run.queries[:8])
    assert exported.min_cosine >= 0.9999
    config = json.loads((trained_student / "config.json").read_text())
    assert config["num_hidden_layers"] == 3 and config["hidden_size"] == 384


def test_evaluate_puts_teacher_and_student_side_by_side(trained_run, trained_student, tmp_path):
    from fusionrank.training.search.evaluate import EvaluateConfig, markdown_table, run_evaluation

    report = run_evaluation(EvaluateConfig(run=trained_run.run, out=tmp_path / "evaluation",
                                           data=trained_run.data, cache=trained_run.cache,
                                           threads=1, student=trained_student))
    student = report["student"]
    for split in ("dev", "test"):
        rows = report["retrieval"][split]
        assert {"student", "fused, student query encoder",
                "fused, student int8 query encoder"} <= set(rows)
        assert student["quality"][split]["student fp32"]["ndcg@10"] \
            == rows["fused, student query encoder"]["ndcg@10"]
    names = {"teacher fp32", "teacher int8", "student fp32", "student int8"}
    assert set(student["latency"]) == names
    for timings in student["latency"].values():
        assert set(timings) == {1, 8} and all(t["median_ms"] > 0 for t in timings.values())
    assert set(student["speedup"]) == {"fp32", "int8"}  # figures only: no timing is asserted
    assert "teacher vs student query encoder" in markdown_table(report)
    saved = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert saved["student"]["checkpoint"] == str(trained_student)
    # The choice beside the checkpoints: the rule on dev, with the run's cascade if it has one,
    # both encoders INT8 as served.
    choice = json.loads((trained_student.parent / "choice.json").read_text())
    cascade = next((name.split(", ")[1] + ", " for name in report["retrieval"]["dev"]
                    if name.startswith("fused, cascade ")), "")
    dev = report["retrieval"]["dev"]
    loss = dev[f"fused, {cascade}int8 query encoder"]["ndcg@10"] \
        - dev[f"fused, {cascade}student int8 query encoder"]["ndcg@10"]
    assert choice["serve"] == (loss <= 0.005) and choice["checkpoint"] == trained_student.name
    assert math.isclose(choice["loss"]["dev"], loss)
    assert choice["teacher_weights"] == json.loads(
        (trained_student / "checkpoint.json").read_text())["teacher_weights"]
    assert "`fusionrank build --student auto` serves the student" in markdown_table(report)


def test_build_serves_the_chosen_student_only_where_the_rule_held_for_the_runs_encoder(tmp_path):
    from fusionrank.app.build import chosen_student
    from fusionrank.training.embeddings import weights_digest

    run = tmp_path / "run"
    (run / "encoder").mkdir(parents=True)
    (run / "encoder" / "best").symlink_to(bundled_model_path())
    assert chosen_student(run) is None  # no choice made: the teacher

    def choose(serve: bool, weights: str) -> None:
        (run / "student").mkdir(exist_ok=True)
        (run / "student" / "choice.json").write_text(json.dumps(
            {"checkpoint": "best", "teacher_weights": weights, "serve": serve,
             "rule": "dev NDCG@10 within 0.005", "loss": {"dev": 0.0, "test": 0.0}}))

    choose(True, weights_digest(bundled_model_path()))
    assert chosen_student(run) == run / "student" / "best"
    choose(False, weights_digest(bundled_model_path()))
    assert chosen_student(run) is None
    choose(True, "0123456789abcdef")  # chosen for other weights: the run was trained again
    assert chosen_student(run) is None


@pytest.mark.parametrize(("argv", "message"), [
    (["distil", "--layers", "0"], "--layers must be at least 1"),
    (["distil", "--batch-size", "1"], "--batch-size must be at least 2"),
    (["distil", "--keep", "0,two"], "--keep must be layer numbers separated by commas"),
    (["distil", "--max-steps", "0"], "--max-steps must be at least 1"),
    (["build", "--pretrained", "--student", "runs/x/student/best"],
     "--student needs the trained run it was distilled from"),
])
def test_bad_arguments_are_refused_naming_the_option(argv, message, capsys):
    from fusionrank.app.cli import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err
