"""A catalogue change set: upserts (whole product rows, new or changed) and deletes (ids), as a
shop sends them to a running server (issue 24, the live catalogue).

JSON Lines, one change a line:

    {"op": "upsert", "product": {"product_id": "A1", "title": "Red kettle", "price": 24.5}}
    {"op": "delete", "product_id": "A7"}

A product row follows the catalogue's schema (core/catalogue.py), checked by the same code,
and more strictly typed: a change set is written by a program, so `"title": 5` or
`"price": "ten"` is an error rather than a value to coerce. A change set is checked whole
before anything is applied, and refused whole at its first bad line (ChangeSetError names
the line and the field): a refused change set changes nothing. Deletes of ids the catalogue
does not hold are not errors (a shop may withdraw a product twice); `against` reports them.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fusionrank.core.catalogue import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    CatalogueError,
    Product,
    parse_product,
)

# One change set at most this many changes and bytes: the 10,000-change figure of the report
# fits five times over, and a set of that size is embedded and applied in one go (its
# memory, the log record and the gRPC message stay bounded).
MAX_CHANGES = 50_000
MAX_BYTES = 64 << 20
TEXT_FIELDS = ("product_id", "title", "description", "category", "brand")
OPS = ("upsert", "delete")


class ChangeSetError(ValueError):
    """A change set refused: names the line (1-based) and field where one is at fault."""

    def __init__(self, line: int | None, field_name: str | None, reason: str):
        self.line, self.field, self.reason = line, field_name, reason
        where = "change set" if line is None else f"change set line {line}"
        what = f" field '{field_name}'" if field_name else ""
        super().__init__(f"{where}{what}: {reason}")


@dataclass(frozen=True)
class ChangeSet:
    """Checked changes, in their order: no id twice, every row valid."""

    upserts: tuple[Product, ...] = ()
    deletes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.upserts) + len(self.deletes)

    def against(self, catalogue_ids: Container[str]) -> ChangeReport:
        """What this set does to a catalogue holding `catalogue_ids`."""
        added = [p.product_id for p in self.upserts if p.product_id not in catalogue_ids]
        changed = [p.product_id for p in self.upserts if p.product_id in catalogue_ids]
        deleted = [i for i in self.deletes if i in catalogue_ids]
        unknown = [i for i in self.deletes if i not in catalogue_ids]
        return ChangeReport(added, changed, deleted, unknown)

    def to_lines(self) -> list[str]:
        """The set as JSON Lines (what `parse_changes` reads back): the log's record."""
        upserts = [json.dumps({"op": "upsert", "product": _row(p)}, ensure_ascii=False,
                              sort_keys=True) for p in self.upserts]
        deletes = [json.dumps({"op": "delete", "product_id": i}, ensure_ascii=False)
                   for i in self.deletes]
        return upserts + deletes


@dataclass
class ChangeReport:
    """A change set against the catalogue it is applied to (ids, in the set's order)."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unknown_deletes: list[str] = field(default_factory=list)  # reported, not an error

    def summary(self) -> str:
        text = (f"{len(self.added)} added, {len(self.changed)} changed, "
                f"{len(self.deleted)} deleted")
        if self.unknown_deletes:
            shown = ", ".join(repr(i) for i in self.unknown_deletes[:5])
            more = "…" if len(self.unknown_deletes) > 5 else ""
            text += f"; {len(self.unknown_deletes)} deletes of unknown ids ({shown}{more})"
        return text


def parse_changes(data: bytes | str | Iterable[str]) -> ChangeSet:
    """A change set from JSON Lines (bytes, text or lines); ChangeSetError at the first bad
    line. Blank lines are skipped (and counted in line numbers)."""
    if isinstance(data, bytes | str):
        if len(data) > MAX_BYTES:
            raise ChangeSetError(None, None, f"{len(data):,} bytes, over the limit of "
                                 f"{MAX_BYTES:,}: split it into smaller change sets")
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ChangeSetError(data[:error.start].count(b"\n") + 1, None,
                                     "not UTF-8") from None
        data = data.splitlines()
    upserts: list[Product] = []
    deletes: list[str] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(data, start=1):
        if not text.strip():
            continue
        if len(upserts) + len(deletes) == MAX_CHANGES:
            raise ChangeSetError(number, None, f"more than {MAX_CHANGES:,} changes: split it "
                                 "into smaller change sets")
        op, value = _change(text, number)
        if op == "upsert":
            product = _product(value, number)
            product_id = product.product_id
        else:
            product_id = _delete_id(value, number)
        if product_id in seen:
            raise ChangeSetError(number, "product_id", f"duplicate id {product_id!r}: already "
                                 f"on line {seen[product_id]} of this change set")
        seen[product_id] = number
        if op == "upsert":
            upserts.append(product)
        else:
            deletes.append(product_id)
    if not seen:
        raise ChangeSetError(None, None, "no changes: expected JSON Lines of "
                             '{"op": "upsert", "product": {...}} or '
                             '{"op": "delete", "product_id": "..."}')
    return ChangeSet(tuple(upserts), tuple(deletes))


def _change(text: str, line: int) -> tuple[str, Any]:
    try:
        change = json.loads(text)
    except ValueError as error:
        raise ChangeSetError(line, None, f"malformed JSON: {error}") from None
    if not isinstance(change, dict):
        raise ChangeSetError(line, None, "expected a JSON object")
    op = change.get("op")
    if op not in OPS:
        raise ChangeSetError(line, "op", f"{op!r} is not one of {', '.join(OPS)}")
    key = "product" if op == "upsert" else "product_id"
    extra = sorted(set(change) - {"op", key})
    if key not in change or extra:
        raise ChangeSetError(line, key if key not in change else extra[0],
                             f"a {op} holds exactly 'op' and {key!r}")
    return op, change[key]


def _product(row: Any, line: int) -> Product:
    if not isinstance(row, dict):
        raise ChangeSetError(line, "product", "expected a JSON object (a catalogue row)")
    for name in REQUIRED_COLUMNS:
        if name not in row:
            raise ChangeSetError(line, name, "missing: every product needs one")
    for name in TEXT_FIELDS:
        if name in row and not isinstance(row[name], str) and \
                not (name in OPTIONAL_COLUMNS and row[name] is None):
            raise ChangeSetError(line, name, f"wrong type: {type(row[name]).__name__}, "
                                 "expected a string")
    price = row.get("price")
    if price is not None and (isinstance(price, bool) or not isinstance(price, int | float)):
        raise ChangeSetError(line, "price", f"wrong type: {type(price).__name__}, expected "
                             "a number or null")
    unknown = sorted(set(row) - set(REQUIRED_COLUMNS) - set(OPTIONAL_COLUMNS))
    if unknown:
        raise ChangeSetError(line, unknown[0], "not a catalogue field (the fields are "
                             f"{', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)})")
    try:
        return parse_product(row, "change set", line)
    except CatalogueError as error:  # the catalogue's own rules: empty id or title, bad price
        raise ChangeSetError(line, error.field, error.reason) from None


def _delete_id(value: Any, line: int) -> str:
    if not isinstance(value, str):
        raise ChangeSetError(line, "product_id", f"wrong type: {type(value).__name__}, "
                             "expected a string")
    if not value.strip():
        raise ChangeSetError(line, "product_id", "empty id")
    return value.strip()


def _row(product: Product) -> Mapping[str, Any]:
    """The catalogue fields of a product (what an upsert carries)."""
    return {name: getattr(product, name) for name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
