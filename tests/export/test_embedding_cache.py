"""The catalogue's embedding build: cached by title text, resumable, and equal to one pass."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrank.core.encoding import MAX_TITLE_TOKENS, OnnxEncoder, TextEncoder, TextTokenizer
from fusionrank.export.embedding_cache import EmbeddingCache, embed_titles, title_keys

CHUNK = 64  # the smallest chunk a batch of 16 allows several parts of


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def encoder(tiny_model_dir, tmp_path_factory) -> TextEncoder:
    from fusionrank.training.encoder import export_model_folder

    exported = export_model_folder(tiny_model_dir, tmp_path_factory.mktemp("tiny_encoder"),
                                   titles(8))
    return TextEncoder(TextTokenizer(exported.tokenizer_path, MAX_TITLE_TOKENS),
                       OnnxEncoder(exported.onnx_path), batch_size=16)


def titles(n: int, changed: frozenset[int] = frozenset()) -> list[str]:
    """n distinct titles of varied length; those numbered in `changed` reworded."""
    words = ["cordless", "drill", "brushed", "nickel", "faucet", "oak", "vanity", "led", "bulb"]
    return [" ".join(words[(i + j) % len(words)] for j in range(2 + i % 7))
            + (f" model {i}" if i not in changed else f" model {i} new edition")
            for i in range(n)]


def build(catalogue: list[str], encoder: TextEncoder, cache: EmbeddingCache, out, **kw):
    report = embed_titles(catalogue, encoder, cache, out, progress=False, chunk=CHUNK, **kw)
    return report, np.load(out)


def test_rows_are_the_encoders_embeddings_of_each_title(encoder, tmp_path):
    catalogue = titles(150) + titles(20)  # 20 titles twice: embedded once, served twice
    report, embeddings = build(catalogue, encoder, EmbeddingCache(tmp_path, "a" * 64),
                               tmp_path / "e.npy")
    assert (report.products, report.unique_titles, report.embedded) == (170, 150, 150)
    assert embeddings.shape == (170, encoder.encoder.dimension)
    np.testing.assert_array_equal(embeddings[150:], embeddings[:20])
    alone = encoder.encode(catalogue)  # one pass over the whole list, as built before
    np.testing.assert_allclose(embeddings, alone, atol=1e-6)


def test_an_interrupted_build_resumes_to_the_same_bits(encoder, tmp_path):
    catalogue = titles(300)
    _, whole = build(catalogue, encoder, EmbeddingCache(tmp_path / "one", "a" * 64),
                     tmp_path / "whole.npy")

    cache = EmbeddingCache(tmp_path / "two", "a" * 64)

    def stop_after_two(part: int) -> None:
        if part == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        build(catalogue, encoder, cache, tmp_path / "resumed.npy", after_part=stop_after_two)
    assert not (tmp_path / "resumed.npy").exists()  # nothing half-written
    assert len(cache.parts()) == 2
    report, resumed = build(catalogue, encoder, cache, tmp_path / "resumed.npy")
    assert (report.cached, report.embedded) == (2 * CHUNK, 300 - 2 * CHUNK)
    np.testing.assert_array_equal(resumed, whole)


def test_a_rebuild_embeds_only_the_changed_titles(encoder, tmp_path):
    cache = EmbeddingCache(tmp_path, "a" * 64)
    _, before = build(titles(400), encoder, cache, tmp_path / "before.npy")
    changed = frozenset(range(0, 400, 50))  # 8 titles reworded (2 %)
    catalogue = [*titles(400, changed), "a product added today"]
    calls = []
    original = encoder.encoder.__call__

    class Counting:  # counts the titles that reach the encoder
        dimension = encoder.encoder.dimension

        def __call__(self, batch):
            calls.append(len(batch.input_ids))
            return original(batch)

    counting = TextEncoder(encoder.tokenizer, Counting(), batch_size=16)
    report, after = build(catalogue, counting, cache, tmp_path / "after.npy")
    assert sum(calls) == report.embedded == len(changed) + 1
    assert report.cached == 400 - len(changed)
    unchanged = [i for i in range(400) if i not in changed]
    np.testing.assert_array_equal(after[unchanged], before[unchanged])
    rows = sorted(changed)
    np.testing.assert_allclose(after[rows], encoder.encode([catalogue[i] for i in rows]),
                               atol=1e-6)


def test_another_encoder_file_has_its_own_cache(encoder, tmp_path):
    build(titles(40), encoder, EmbeddingCache(tmp_path, "a" * 64), tmp_path / "a.npy")
    report, _ = build(titles(40), encoder, EmbeddingCache(tmp_path, "b" * 64), tmp_path / "b.npy")
    assert report.cached == 0 and report.embedded == 40


def test_keys_are_stable_and_distinct():
    keys = title_keys(["Oak vanity", "Oak vanity ", "oak vanity"])
    assert len(set(keys.tolist())) == 3
    assert title_keys(["Oak vanity"])[0] == keys[0]


def test_a_chunk_that_splits_a_batch_is_refused(encoder, tmp_path):
    with pytest.raises(ValueError, match="multiple of the batch size"):
        embed_titles(titles(10), encoder, EmbeddingCache(tmp_path, "a" * 64),
                     tmp_path / "e.npy", progress=False, chunk=20)
