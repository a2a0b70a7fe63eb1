"""A few fine-tuning steps on a tiny slice of the real judgements: the loss falls, the dev
metric moves, an interrupted run resumes without losing its best checkpoint, and the saved
checkpoint is an ordinary Hugging Face folder that the ONNX export accepts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fusionrank.core.search.lexical import LexicalIndex
from fusionrank.core.search.title_terms import TitleTerms
from fusionrank.training.encoder import EncoderWithTokenizer
from fusionrank.training.search.data import SplitConfig, load_judgements
from fusionrank.training.search.evaluators import DevRetrievalEvaluator
from fusionrank.training.search.finetune import (
    CHECKPOINT_MANIFEST,
    FinetuneConfig,
    Finetuner,
    Pair,
    Provenance,
    batch_tensors,
    epoch_batches,
)
from fusionrank.training.search.negatives import MiningConfig, mine_negatives
from fusionrank.training.search.pipeline import training_pairs
from tests.support.relevance import sample_judgements

pytestmark = pytest.mark.slow  # fine-tunes the bundled encoder

SPLIT = SplitConfig(seed=5, dev_fraction=0.25, test_fraction=0.15)


@dataclass
class Tiny:
    pairs: list[Pair]
    titles: list[str]
    evaluator: DevRetrievalEvaluator
    provenance: Provenance
    model_dir: Path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    from fusionrank.core.model_folders import bundled_model_path

    torch.set_num_threads(1)
    path = sample_judgements(tmp_path_factory.mktemp("data") / "tiny.csv", queries=40)
    judgements = load_judgements(path, SPLIT)
    titles = judgements.catalogue.titles
    lexical = LexicalIndex.build(titles)
    negatives = mine_negatives(judgements.qrels("train"), lexical, TitleTerms(titles),
                               MiningConfig(depth=10, per_source=4))
    evaluator = DevRetrievalEvaluator.build(judgements.qrels("dev"), titles, lexical,
                                            max_queries=8, distractors=4, max_query_tokens=16,
                                            max_title_tokens=24)
    provenance = Provenance(str(path), judgements.sha256, {"seed": SPLIT.seed}, "bundled")
    return Tiny(training_pairs(judgements, negatives, 2.3), titles, evaluator, provenance,
                bundled_model_path())


def config(**changes) -> FinetuneConfig:
    base = {"epochs": 2, "batch_size": 8, "pairs_per_epoch": 16, "learning_rate": 1e-4,
            "max_title_tokens": 24, "threads": 1, "patience": 5, "checkpoint_every": 1}
    return FinetuneConfig(**{**base, **changes})


def fixed_batch_loss(finetuner: Finetuner, batch) -> float:
    queries, documents, weights, excluded = batch_tensors(batch, finetuner.titles)
    finetuner.model.module.eval()
    with torch.no_grad():
        q = finetuner.model.embed(queries, 16)
        d = finetuner.model.embed(documents, 24)
        return float(finetuner.loss(q, d, weights, excluded))


def test_a_few_steps_lower_the_loss_and_move_the_dev_metric(tiny, tmp_path):
    cfg = config(epochs=1, pairs_per_epoch=24)
    finetuner = Finetuner(tiny.model_dir, tmp_path / "run", tiny.pairs, tiny.titles,
                          tiny.evaluator, cfg, tiny.provenance)
    batch = epoch_batches(finetuner.pairs_by_query, cfg, 0)[0]
    before = fixed_batch_loss(finetuner, batch)
    state = finetuner.train(resume=False)
    after = fixed_batch_loss(finetuner, batch)
    assert state.global_step == 3 and len(state.losses) == 3
    assert after < before, f"loss on a training batch went from {before:.4f} to {after:.4f}"
    # Evaluated before training and after the epoch; fine-tuning changed the ranking.
    assert [d["step"] for d in state.dev] == [0, 3]
    assert state.dev[0]["ndcg@10"] != state.dev[-1]["ndcg@10"]
    assert (tmp_path / "run" / "training_curve.png").stat().st_size > 0


def test_interrupted_run_resumes_and_keeps_its_best_checkpoint(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = config()
    first = Finetuner(tiny.model_dir, out, tiny.pairs, tiny.titles, tiny.evaluator, cfg,
                      tiny.provenance)
    real_step = Finetuner.step

    def interrupted(self, batch):
        if self.state.global_step == 3:  # in the second epoch, after one evaluation
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(Finetuner, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        first.train(resume=False)
    best = json.loads((out / "best" / CHECKPOINT_MANIFEST).read_text())
    assert (out / "best" / "model.safetensors").is_file()
    assert not list(out.glob("*.tmp")), "no half-written folder is left behind"

    monkeypatch.setattr(Finetuner, "step", real_step)
    second = Finetuner(tiny.model_dir, out, tiny.pairs, tiny.titles, tiny.evaluator, cfg,
                       tiny.provenance)
    assert second.try_resume()
    assert second.state.global_step == 3 and second.state.epoch == 1
    assert second.state.best_metric == pytest.approx(best["dev_metric"]["value"])
    state = second.train(resume=False)  # already resumed above
    assert state.global_step == 4 and state.finished
    after = json.loads((out / "best" / CHECKPOINT_MANIFEST).read_text())
    assert after["dev_metric"]["value"] >= best["dev_metric"]["value"]
    assert [d["step"] for d in state.dev][:2] == [0, 2], "history from before the interruption"

    # The checkpoint is an ordinary Hugging Face folder with its manifest ...
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        assert (out / "best" / name).is_file()
    assert {"data_file", "data_sha256", "split", "hyperparameters", "dev_metric", "step"} <= set(
        after)
    # ... that the encoder export accepts (it checks ONNX against PyTorch on real titles).
    from fusionrank.training.encoder import export_model_folder

    exported = export_model_folder(out / "best", tmp_path / "onnx", tiny.titles[:8])
    assert exported.min_cosine >= 0.9999


def test_a_folder_that_is_not_a_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model folder"):
        EncoderWithTokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        EncoderWithTokenizer(tmp_path / "absent")


def test_the_same_seed_gives_the_same_training(tiny, tmp_path):
    runs = []
    for name in ("a", "b"):
        finetuner = Finetuner(tiny.model_dir, tmp_path / name, tiny.pairs, tiny.titles,
                              tiny.evaluator, config(max_steps=2), tiny.provenance)
        runs.append(finetuner.train(resume=False))
    assert [loss for _, loss in runs[0].losses] == [loss for _, loss in runs[1].losses]
    assert runs[0].dev[-1]["ndcg@10"] == runs[1].dev[-1]["ndcg@10"]
