"""Change sets (core/live/changes.py): what is accepted, and every bad input refused whole,
naming its line and field."""

from __future__ import annotations

import json

import pytest

from fusionrank.core.live.changes import MAX_BYTES, MAX_CHANGES, ChangeSetError, parse_changes


def upsert(**row) -> str:
    return json.dumps({"op": "upsert", "product": row})


def delete(product_id) -> str:
    return json.dumps({"op": "delete", "product_id": product_id})


GOOD = [upsert(product_id="A1", title="  Red   kettle ", price=24.5, brand="Acme"),
        "",  # blank lines are skipped, and counted in line numbers
        delete("A7"),
        upsert(product_id="B2", title="Blue mug", description=None, price=None)]


def test_a_change_set_is_read_in_order_and_written_back_the_same():
    changes = parse_changes("\n".join(GOOD).encode("utf-8"))
    assert [p.product_id for p in changes.upserts] == ["A1", "B2"]
    assert changes.upserts[0].title == "Red kettle" and changes.upserts[0].price == 24.5
    assert changes.deletes == ("A7",) and len(changes) == 3
    assert parse_changes(changes.to_lines()) == changes


def test_a_change_set_against_the_catalogue_reports_unknown_deletes_without_failing():
    changes = parse_changes([*GOOD, delete("GONE")])
    report = changes.against({"A1", "A7"})
    assert (report.added, report.changed, report.deleted, report.unknown_deletes) == (
        ["B2"], ["A1"], ["A7"], ["GONE"])
    assert "1 deletes of unknown ids ('GONE')" in report.summary()


@pytest.mark.parametrize(("line", "field", "reason"), [
    (upsert(title="no id"), "product_id", "missing"),
    (upsert(product_id="A1"), "title", "missing"),
    (upsert(product_id="A1", title="   "), "title", "empty title"),
    (upsert(product_id="", title="x"), "product_id", "empty id"),
    (upsert(product_id=5, title="x"), "product_id", "wrong type: int"),
    (upsert(product_id="A1", title=5), "title", "wrong type: int"),
    (upsert(product_id="A1", title="x", price="ten"), "price", "wrong type: str"),
    (upsert(product_id="A1", title="x", price=True), "price", "wrong type: bool"),
    (upsert(product_id="A1", title="x", price=-1), "price", "must be finite and >= 0"),
    (upsert(product_id="A1", title="x", colour="red"), "colour", "not a catalogue field"),
    (delete(7), "product_id", "wrong type: int"),
    (delete(" "), "product_id", "empty id"),
    (json.dumps({"op": "replace", "product_id": "A1"}), "op", "is not one of"),
    (json.dumps({"op": "delete", "product_id": "A1", "why": "old"}), "why", "exactly"),
    (json.dumps({"op": "upsert", "product": ["A1"]}), "product", "expected a JSON object"),
    ('{"op": "delete", "product_id": "A1"', None, "malformed JSON"),
    ('["delete", "A1"]', None, "expected a JSON object"),
])
def test_a_bad_line_refuses_the_whole_set_naming_its_line_and_field(line, field, reason):
    with pytest.raises(ChangeSetError, match=reason) as refused:
        parse_changes([*GOOD, line])
    assert (refused.value.line, refused.value.field) == (len(GOOD) + 1, field)
    assert f"change set line {len(GOOD) + 1}" in str(refused.value)


@pytest.mark.parametrize("twice", [upsert(product_id="A1", title="Again"), delete("A1")])
def test_an_id_twice_in_one_set_is_refused_naming_both_lines(twice):
    with pytest.raises(ChangeSetError, match="duplicate id 'A1': already on line 1") as refused:
        parse_changes([*GOOD, twice])
    assert refused.value.line == len(GOOD) + 1


def test_sets_over_the_limits_or_empty_are_refused():
    with pytest.raises(ChangeSetError, match=f"more than {MAX_CHANGES:,} changes"):
        parse_changes(delete(f"P{i}") for i in range(MAX_CHANGES + 1))
    assert len(parse_changes(delete(f"P{i}") for i in range(MAX_CHANGES))) == MAX_CHANGES
    with pytest.raises(ChangeSetError, match="over the limit"):
        parse_changes(b" " * (MAX_BYTES + 1))
    with pytest.raises(ChangeSetError, match="no changes"):
        parse_changes("\n\n")
    with pytest.raises(ChangeSetError, match="line 2: not UTF-8"):
        parse_changes(delete("A1").encode() + b"\n" + b"\xff\n")
