"""Sentiment test data built in code: a tiny reviews file with the dataset's columns, and a
tiny randomly initialised BERT (the bundled encoder's tokenizer, 3 layers of width 32) so that
training and export run in seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

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


@pytest.fixture(scope="module")
def reviews_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reviews") / "reviews.csv"
    pd.DataFrame(review_rows()).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 3-layer BERT with the bundled tokenizer (no download)."""
    from transformers import BertConfig, BertModel

    from fusionrank.export.onnx_encoder import bundled_model_path

    folder = tmp_path_factory.mktemp("tiny_bert")
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
