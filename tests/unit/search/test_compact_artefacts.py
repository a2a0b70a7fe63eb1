"""Compact, memory-mapped search artefacts: `core/mapped_npz.py` (aligned, mapped .npz),
`core/product_table.py` (products.jsonl a row at a time) and the title features' compact
format (trigram weights rebuilt from counts, TermVectors' arrays shared with TitleTerms, a
sampled catalogue stamp)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusionrank.core import artefacts
from fusionrank.core.mapped_npz import load_mapped, save_mappable
from fusionrank.core.product_table import ProductTable
from fusionrank.core.search import title_features
from fusionrank.core.search.term_vectors import TermVectors
from fusionrank.core.search.title_terms import TitleTerms
from fusionrank.core.search.trigrams import char_trigrams, idf_of, tfidf

TITLES = ["Makita Cordless Drill Kit with 2 Batteries", "DeWalt drill(driver) 20V, bare",
          "aaaaaaaaaa aaaa aaaaaaa", "Garden hoses - 50 ft (2-Pack)", "the of and", "",
          "Café table \u2028 (oak)", "1/2 in. x 10 ft. Copper Pipes"]


def test_mapped_arrays_are_aligned_read_only_views_np_load_reads_alike(tmp_path):
    path = tmp_path / "a.npz"
    arrays = {"ids": np.arange(1001, dtype=np.int32)[::3], "w": np.linspace(0, 1, 77),
              "matrix": np.ones((5, 3), np.float32), "scalar": np.array(7),
              "text": np.array("x" * 13), "empty": np.zeros(0, np.int64)}
    save_mappable(path, arrays)
    mapped = load_mapped(path, arrays)
    with np.load(path) as plain:
        for name, value in arrays.items():
            assert np.array_equal(mapped[name], value) and np.array_equal(plain[name], value)
            assert mapped[name].shape == value.shape and mapped[name].dtype == value.dtype
    for name in ("ids", "w", "matrix"):
        assert mapped[name].ctypes.data % 64 == 0 and not mapped[name].flags.writeable
        assert mapped[name].base is not None  # a view of the mapping, not a copy


def test_an_np_savez_file_loads_and_a_damaged_one_is_refused_naming_it(tmp_path):
    path = tmp_path / "old.npz"
    with path.open("wb") as handle:
        np.savez(handle, ids=np.arange(10), name=np.array("x"))
    assert load_mapped(path, ["ids"])["ids"].tolist() == list(range(10))
    assert set(load_mapped(path, ["ids"], optional=["name", "absent"])) == {"ids", "name"}
    with pytest.raises(artefacts.ArtefactError, match=r"old.npz lacks the array\(s\) absent"):
        load_mapped(path, ["ids", "absent"])
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(artefacts.ArtefactError, match=r"old.npz is not a readable .npz"):
        load_mapped(path, ["ids"])


def test_a_product_table_reads_rows_as_the_lines_of_the_file(tmp_path):
    records = [{"product_id": f"p{i}", "title": t} for i, t in enumerate(TITLES)]
    lines = [json.dumps(r, ensure_ascii=False) for r in records]  # "\u2028" stays raw
    path = tmp_path / artefacts.PRODUCTS
    # A Windows line end and no newline after the last line: still one row per line.
    path.write_bytes(("\r\n".join(lines[:2]) + "\n" + "\n".join(lines[2:])).encode("utf-8"))
    table = ProductTable.open(path)
    assert len(table) == len(TITLES) and list(table.title_column) == TITLES
    assert table.title_column[-1] == TITLES[-1] and table.title_column[1:3] == TITLES[1:3]
    rows = np.array([[6, 0], [1, 7]])
    assert table.product_ids(rows).tolist() == [[b"p6", b"p0"], [b"p1", b"p7"]]
    assert table.json(rows)[0, 0] == lines[6].encode("utf-8")
    assert table.json(rows).shape == rows.shape and table.json(rows).dtype == object


@pytest.mark.parametrize(("content", "message"), [
    (b'{"title": "a"}\n\n{"title": "b"}\n', r"products.jsonl line 2 is empty"),
    (b'{"title": "a"}\n{"name": "b"}\n', r"products.jsonl line 2 has no 'title'"),
    (b'{"title": "a"}\nnot json\n', r"products.jsonl line 2 is not a JSON object"),
], ids=["empty-line", "no-title", "not-json"])
def test_a_malformed_products_file_is_refused_naming_the_line(tmp_path, content, message):
    path = tmp_path / artefacts.PRODUCTS
    path.write_bytes(content)
    with pytest.raises(artefacts.ArtefactError, match=message):
        list(ProductTable.open(path).title_column)


def test_trigram_weights_rebuilt_from_counts_are_tfidf_bit_for_bit():
    terms = TitleTerms(TITLES)
    grams = [char_trigrams(t) for t in TITLES]
    idf = idf_of(grams)
    for row, title_grams in enumerate(grams):  # the vectors as `tfidf` weighs them
        expected = tfidf(title_grams, idf)
        entries = np.arange(terms.char_vectors.indptr[row], terms.char_vectors.indptr[row + 1])
        got = terms._char_weights(entries, np.full(len(entries), row))
        assert terms.char_buckets[terms.char_vectors.ids[entries]].tolist() == list(expected)
        assert got.tobytes() == np.array(list(expected.values()), np.float64).tobytes()
    assert terms.char_counts.max() > 1 and terms.char_counts.dtype == np.uint8  # "aaaa"
    assert terms.title_ids.ids.dtype == np.int32 and terms.title_ids.indptr.dtype == np.int32


def catalogue(n: int) -> tuple[list[str], np.ndarray]:
    titles = [f"{TITLES[i % len(TITLES)]} model {i}" for i in range(n)]
    embeddings = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    return titles, embeddings


def test_term_vectors_save_the_titles_arrays_once(tmp_path):
    titles, embeddings = catalogue(40)
    path = tmp_path / artefacts.TITLE_FEATURES
    title_features.save_title_features(path, titles, embeddings)
    with np.load(path) as saved:
        keys = set(saved.files)
    fresh_terms = TitleTerms(titles)
    fresh = TermVectors.fit(fresh_terms, embeddings)
    # "drill(driver)": the head ends at "(", inside a word, so "drill(driver" ... differ.
    shared = np.array_equal(fresh.head_terms.ids, fresh_terms.head_tokens.ids)
    assert ("term_vectors.head_terms.ids" in keys) != shared
    assert "term_vectors.title_terms.ids" not in keys  # every title term is its own
    terms, vectors = title_features.load_title_features(path, titles, embeddings)
    assert vectors.title_terms is terms.title_ids  # one array, not a copy
    assert vectors.index == fresh.index
    for name in ("title_terms", "head_terms"):
        for part in ("indptr", "ids"):
            assert np.array_equal(getattr(getattr(vectors, name), part),
                                  getattr(getattr(fresh, name), part)), (name, part)


def test_the_stamp_reads_a_sample_of_titles_and_catches_a_sampled_change(tmp_path, monkeypatch):
    monkeypatch.setattr(title_features, "STAMP_ROWS", 8)
    titles, embeddings = catalogue(200)
    products = tmp_path / artefacts.PRODUCTS
    products.write_text("".join(json.dumps({"product_id": str(i), "title": t}) + "\n"
                                for i, t in enumerate(titles)), encoding="utf-8")
    path = tmp_path / artefacts.TITLE_FEATURES
    title_features.save_title_features(path, titles, embeddings)
    table = ProductTable.open(products)
    read = []
    monkeypatch.setattr(ProductTable, "title", lambda self, row: read.append(row) or titles[row])
    title_features.load_title_features(path, table.title_column, embeddings)
    assert sorted(read) == title_features.sample_rows(200).tolist() and len(read) == 8
    changed = [*titles]
    changed[199] += " blue"  # the last row is always sampled
    with pytest.raises(artefacts.ArtefactError, match=r"\(titles_sha256 differ"):
        title_features.load_title_features(path, changed, embeddings)
