"""Sentiment test data built in code: a tiny reviews file with the dataset's columns, and a
tiny randomly initialised BERT (the bundled encoder's tokenizer, 3 layers of width 32) so that
training and export run in seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

# Words that make each class easy to learn; the rating follows the class.
PHRASES = {
    1: ["terrible quality, fell apart", "awful fit, returning it", "cheap fabric, very poor"],
    3: ["it is okay, nothing special", "average fit, so-so colour", "fine but plain"],
    5: ["love it, perfect fit", "gorgeous dress, great quality", "beautiful and comfortable"],
}
TITLES = {1: "Disappointed", 3: "Okay", 5: "Love"}


def review_rows(count: int = 150) -> list[dict]:
    rows = []
    for i in range(count):
        rating = (1, 3, 5)[i % 3]
        rows.append({
            "review_id": i, "Clothing ID": 100 + i % 7, "Age": 30,
            "Title": TITLES[rating] if i % 4 else None,
            "Review Text": PHRASES[rating][i % 3],
            "Rating": rating if i % 2 else {1: 2, 3: 3, 5: 4}[rating],  # same class
            "Recommended IND": int(rating > 3), "Positive Feedback Count": 0,
            "Division Name": "General", "Department Name": "Dresses", "Class Name": "Dresses"})
    # Two rows without any text: skipped and counted.
    rows += [{**rows[0], "review_id": count, "Title": None, "Review Text": None},
             {**rows[1], "review_id": count + 1, "Title": "  ", "Review Text": float("nan")}]
    return rows


def write_reviews(path: Path) -> Path:
    pd.DataFrame(review_rows()).to_csv(path, index=False)
    return path


def tiny_bert(folder: Path) -> Path:
    """A randomly initialised 3-layer BERT with the bundled tokenizer (no download)."""
    from transformers import BertConfig, BertModel

    from fusionrank.core.model_folders import bundled_model_path

    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                 "special_tokens_map.json"):
        source = bundled_model_path() / name
        if source.is_file():
            shutil.copyfile(source, folder / name)
    return folder


# Reviews the tests classify: short, long (truncated to the token window), mixed.
TEXTS = ["Love it, perfect fit", "Terrible quality. Fell apart after one wash and the seams "
         "came undone", "It is okay", "Gorgeous! " * 40]


def train_and_export(reviews_file: Path, model_dir: Path, out: Path):
    """A few training steps of the classifier on the tiny reviews, exported to `out/onnx`;
    returns (out, its SentimentRecord)."""
    import torch

    from fusionrank.core import artefacts
    from fusionrank.training.sentiment.data import load_reviews
    from fusionrank.training.sentiment.model import (
        SentimentConfig,
        export_checkpoint,
        train_sentiment,
    )

    torch.set_num_threads(1)
    config = SentimentConfig(model_dir=str(model_dir), freeze_layers=1, max_steps=5,
                             batch_size=16, max_tokens=48, seed=3)
    reviews = load_reviews(reviews_file)
    trained = train_sentiment(reviews, config, out / "checkpoint", progress=False)
    record = export_checkpoint(trained.checkpoint, out / artefacts.SENTIMENT_EXPORT,
                               reviews.frame.text.tolist()[:40] + TEXTS)
    return out, record
