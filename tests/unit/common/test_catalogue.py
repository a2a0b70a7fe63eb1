"""Catalogue files: the schema, every format, and errors that name file, line and field."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusionrank.core.catalogue import Catalogue, CatalogueError, Product, load_catalogue

GOOD_ROWS = [
    {"product_id": "p1", "title": "Cordless drill", "price": "89.5", "category": "tools"},
    {"product_id": "p2", "title": "  Kitchen   sink ", "price": "", "category": "kitchen"},
]


def write_csv(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_csv_jsonl_parquet_and_gzip_read_the_same_products(tmp_path):
    csv_text = "product_id,title,price,category\np1,Cordless drill,89.5,tools\n" \
               "p2,  Kitchen   sink ,,kitchen\n"
    files = [write_csv(tmp_path / "c.csv", csv_text)]
    gz = tmp_path / "c.csv.gz"
    gz.write_bytes(gzip.compress(csv_text.encode()))
    files.append(gz)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in GOOD_ROWS) + "\n")
    files.append(jsonl)
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(GOOD_ROWS), parquet)
    files.append(parquet)
    for path in files:
        catalogue, report = load_catalogue(path)
        assert catalogue.products == [
            Product("p1", "Cordless drill", category="tools", price=89.5),
            Product("p2", "Kitchen sink", category="kitchen", price=None)], path
        assert report.loaded == 2 and not report.skipped


@pytest.mark.parametrize(("body", "line", "field", "reason"), [
    ("p1,Drill\np1,Other drill\n", 3, "product_id", "duplicate id: 'p1' already on line 2"),
    ("p1,Drill\np2,   \n", 3, "title", "empty title"),
    ("p1,Drill\n,Nameless\n", 3, "product_id", "empty id"),
    ("p1,Drill\np2,Sink,extra\n", 3, None, "malformed row: 3 fields"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, body, line, field, reason):
    path = write_csv(tmp_path / "bad.csv", "product_id,title\n" + body)
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)
    error = caught.value
    assert (error.path, error.line, error.field) == (str(path), line, field)
    assert reason in str(error) and str(path) in str(error)


def test_bad_price_and_missing_column(tmp_path):
    with pytest.raises(CatalogueError, match=r"bad.csv:2: field 'price': bad price: 'cheap'"):
        load_catalogue(write_csv(tmp_path / "bad.csv", "product_id,title,price\np1,Drill,cheap\n"))
    with pytest.raises(CatalogueError, match="field 'title': required column missing"):
        load_catalogue(write_csv(tmp_path / "cols.csv", "product_id,name\np1,Drill\n"))


def test_wrong_encoding_names_the_line(tmp_path):
    latin1 = "product_id,title\np1,Drill\np2,Caf\xe9 table\n".encode("latin-1")
    with pytest.raises(CatalogueError, match=r"enc.csv:3: not UTF-8: byte 0xe9"):
        load_catalogue(write_csv(tmp_path / "enc.csv", latin1))


def test_lenient_loading_counts_every_skip(tmp_path):
    body = ("product_id,title,price,colour\np1,Drill,1,red\np1,Dup,2,red\np2,,3,red\n"
            "p3,Sink,-4,red\np4,Caf\xe9,5,red\np5,Fan,6,red\n").encode("latin-1")
    catalogue, report = load_catalogue(write_csv(tmp_path / "mixed.csv", body), lenient=True)
    assert catalogue.ids == ["p1", "p5"]
    assert sorted(s.line for s in report.skipped) == [3, 4, 5, 6]
    assert report.ignored_columns == ["colour"]
    summary = report.summary()
    assert "2 products loaded" in summary and "4 skipped" in summary and "colour" in summary


def test_unsupported_or_missing_files_fail_clearly(tmp_path):
    with pytest.raises(CatalogueError, match="no such file"):
        load_catalogue(tmp_path / "absent.csv")
    with pytest.raises(CatalogueError, match=r"unsupported file type '\.xlsx'"):
        load_catalogue(write_csv(tmp_path / "c.xlsx", "x"))
    with pytest.raises(CatalogueError, match="no rows"):
        load_catalogue(write_csv(tmp_path / "empty.csv", "product_id,title\n"))
    with pytest.raises(CatalogueError, match="malformed JSON"):
        load_catalogue(write_csv(tmp_path / "c.jsonl", '{"product_id": "p", "title": "x"}\n{oops'))


def test_catalogue_rejects_duplicate_ids_built_in_code():
    with pytest.raises(CatalogueError, match="duplicate product id 'x'"):
        Catalogue([Product("x", "a"), Product("x", "b")])


def test_shared_dataset_adapters(shared_datasets):
    from fusionrank.core.datasets import homedepot_catalogue, online_retail_catalogue

    retail, report = online_retail_catalogue(shared_datasets / "online_retail/transactions.parquet")
    assert 3_500 < len(retail) < 4_038 and not report.skipped
    assert "POST" not in retail.ids and "85123A" in retail.ids
    homedepot, _ = homedepot_catalogue(shared_datasets / "homedepot/relevance.csv.gz")
    # Every distinct product_uid of this copy (the held-out part holds more products).
    assert len(homedepot) == 45_782
