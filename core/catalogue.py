"""The product catalogue: its schema and its loaders (CSV, Parquet, JSON Lines).

Schema (one product per row; column names are case-sensitive):

| column        | type   | required | notes                                           |
| ------------- | ------ | -------- | ----------------------------------------------- |
| `product_id`  | string | yes      | unique, non-empty; numbers are read as strings  |
| `title`       | string | yes      | non-empty after trimming; what the encoder sees |
| `description` | string | no       |                                                 |
| `category`    | string | no       |                                                 |
| `brand`       | string | no       |                                                 |
| `price`       | number | no       | finite and >= 0 when present                    |

Other columns are ignored and listed in the load report. Files may be gzip-compressed
(`.csv.gz`, `.jsonl.gz`). Text must be UTF-8.

Strict loading (the default) stops at the first bad row with a `CatalogueError` naming the
file, line and field. Lenient loading skips bad rows and counts every skip in the
`LoadReport`, so nothing disappears silently.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

REQUIRED_COLUMNS = ("product_id", "title")
OPTIONAL_COLUMNS = ("description", "category", "brand", "price")
MAX_TITLE_CHARS = 1_000


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    title: str
    description: str = ""
    category: str = ""
    brand: str = ""
    price: float | None = None
    # Review sentiment, a catalogue feature `fusionrank build --reviews` adds: the shrunken mean
    # of P(positive) - P(negative) over the product's reviews (None: no reviews).
    review_count: int = 0
    review_sentiment: float | None = None

    def to_dict(self) -> dict[str, Any]:
        # Every field is a scalar: no deep copy (asdict's) needed, and a million rows write
        # in a fraction of its time.
        return {name: getattr(self, name) for name in PRODUCT_FIELDS}

    def line(self) -> str:
        """The product's row as products.jsonl holds it (a build's, a live segment's)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


PRODUCT_FIELDS = tuple(f.name for f in fields(Product))


class CatalogueError(ValueError):
    """A catalogue file that cannot be read as the schema says; names file, line and field."""

    def __init__(self, path: str | Path, line: int | None, field_name: str | None, reason: str):
        self.path = str(path)
        self.line = line
        self.field = field_name
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field_name}': " if field_name else ""
        super().__init__(f"{where}: {what}{reason}")


@dataclass(frozen=True, slots=True)
class SkippedRow:
    line: int
    field: str | None
    reason: str


@dataclass
class LoadReport:
    path: str
    rows_read: int = 0
    loaded: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    def skip_counts(self) -> Counter[str]:
        return Counter(s.reason.split(":")[0] for s in self.skipped)

    def summary(self) -> str:
        text = f"{self.path}: {self.loaded} products loaded from {self.rows_read} rows"
        if self.skipped:
            reasons = ", ".join(f"{n} {r}" for r, n in self.skip_counts().most_common())
            text += f"; {len(self.skipped)} skipped ({reasons})"
        if self.ignored_columns:
            text += f"; ignored columns: {', '.join(self.ignored_columns)}"
        return text


@dataclass
class Catalogue:
    products: list[Product]
    source: str = ""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for product in self.products:
            if product.product_id in seen:
                raise CatalogueError(self.source, None, "product_id",
                                     f"duplicate product id {product.product_id!r}")
            seen.add(product.product_id)

    def __len__(self) -> int:
        return len(self.products)

    def __iter__(self) -> Iterator[Product]:
        return iter(self.products)

    @property
    def ids(self) -> list[str]:
        return [p.product_id for p in self.products]

    @property
    def titles(self) -> list[str]:
        return [p.title for p in self.products]

    def write_jsonl(self, path: Path) -> None:
        with path.open("w", encoding="utf-8") as out:
            for product in self.products:
                out.write(product.line() + "\n")


def load_catalogue(path: str | Path, *, lenient: bool = False) -> tuple[Catalogue, LoadReport]:
    """Read a catalogue file; the format follows the suffix (.csv, .parquet, .jsonl, + .gz)."""
    path = Path(path)
    if not path.is_file():
        raise CatalogueError(path, None, None, "no such file")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes.pop()
    kind = suffixes[-1] if suffixes else ""
    readers = {".csv": _csv_rows, ".parquet": _parquet_rows, ".jsonl": _jsonl_rows,
               ".ndjson": _jsonl_rows}
    if kind not in readers:
        raise CatalogueError(path, None, None,
                             f"unsupported file type {kind or '(none)'!r}; "
                             "use .csv, .parquet or .jsonl (optionally .gz)")
    report = LoadReport(path=str(path))
    rows = readers[kind](path, report, lenient)
    return _build(rows, path, report, lenient), report


def catalogue_from_records(records: Iterable[Mapping[str, Any]], source: str,
                           *, lenient: bool = False) -> tuple[Catalogue, LoadReport]:
    """Validate in-memory rows (dataset adapters use this) with the same rules as files."""
    report = LoadReport(path=source)
    rows = ((i, dict(r)) for i, r in enumerate(records, start=1))
    return _build(rows, Path(source), report, lenient), report


def _build(rows: Iterable[tuple[int, dict[str, Any]]], path: Path, report: LoadReport,
           lenient: bool) -> Catalogue:
    products: list[Product] = []
    seen: dict[str, int] = {}
    checked_columns = False
    for line, row in rows:
        report.rows_read += 1
        if not checked_columns:
            _check_columns(row.keys(), path, report)
            checked_columns = True
        try:
            product = parse_product(row, path, line)
            if product.product_id in seen:
                raise CatalogueError(path, line, "product_id",
                                     f"duplicate id: {product.product_id!r} "
                                     f"already on line {seen[product.product_id]}")
        except CatalogueError as error:
            if not lenient:
                raise
            report.skipped.append(SkippedRow(line, error.field, error.reason))
            continue
        seen[product.product_id] = line
        products.append(product)
    if not checked_columns:
        raise CatalogueError(path, None, None, "the catalogue has no rows")
    report.loaded = len(products)
    return Catalogue(products, source=str(path))


def _check_columns(columns: Iterable[str], path: Path, report: LoadReport) -> None:
    columns = list(columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise CatalogueError(path, 1, missing[0],
                             f"required column missing (found columns: {', '.join(columns)})")
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    report.ignored_columns = [c for c in columns if c not in known]


def _text(row: Mapping[str, Any], name: str) -> str:
    value = row.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # ids such as 100001 read back from float columns
    return str(value).strip()


def parse_product(row: Mapping[str, Any], path: str | Path, line: int) -> Product:
    """One catalogue row checked against the schema (CatalogueError naming `path`, line
    and field): the loaders' rule, and a change set's (core/live/changes.py)."""
    product_id = _text(row, "product_id")
    if not product_id:
        raise CatalogueError(path, line, "product_id", "empty id: every product needs one")
    title = " ".join(_text(row, "title").split())
    if not title:
        raise CatalogueError(path, line, "title", "empty title: the encoder has nothing to read")
    if len(title) > MAX_TITLE_CHARS:
        raise CatalogueError(path, line, "title",
                             f"title too long: {len(title)} characters, at most {MAX_TITLE_CHARS}")
    return Product(product_id=product_id, title=title,
                   description=_text(row, "description"), category=_text(row, "category"),
                   brand=_text(row, "brand"), price=_price(row.get("price"), path, line))


def _price(value: Any, path: str | Path, line: int) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        price = float(value)
    except (TypeError, ValueError):
        raise CatalogueError(path, line, "price", f"bad price: {value!r} is not a number") from None
    if math.isnan(price):
        return None
    if math.isinf(price) or price < 0:
        raise CatalogueError(path, line, "price", f"bad price: {value!r} must be finite and >= 0")
    return price


def _read_text(path: Path, report: LoadReport, lenient: bool) -> list[str]:
    """The file's lines, decoded as UTF-8; a bad byte is an error that names its line."""
    raw = path.read_bytes()
    if path.suffix.lower() == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise CatalogueError(path, None, None, f"not a readable gzip file ({error})") from None
    lines: list[str] = []
    for number, raw_line in enumerate(raw.splitlines(keepends=True), start=1):
        try:
            lines.append(raw_line.decode("utf-8"))
        except UnicodeDecodeError as error:
            reason = (f"not UTF-8: byte 0x{raw_line[error.start]:02x} at column {error.start + 1}"
                      "; re-save the file as UTF-8")
            if not lenient:
                raise CatalogueError(path, number, None, reason) from None
            report.skipped.append(SkippedRow(number, None, reason))
            lines.append("")  # keep line numbers aligned with the file
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return lines


def _csv_rows(path: Path, report: LoadReport, lenient: bool) -> Iterator[tuple[int, dict]]:
    lines = _read_text(path, report, lenient)
    reader = csv.reader(io.StringIO("".join(lines)))
    try:
        header = next(reader)
    except StopIteration:
        raise CatalogueError(path, None, None, "empty file: expected a header row") from None
    header = [h.strip() for h in header]
    while True:
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise CatalogueError(path, start, None, f"malformed CSV: {error}") from None
        if not values or not any(v.strip() for v in values):
            continue  # blank line (or a line skipped for its encoding)
        if len(values) != len(header):
            reason = f"malformed row: {len(values)} fields where the header has {len(header)}"
            if not lenient:
                raise CatalogueError(path, start, None, reason)
            report.rows_read += 1
            report.skipped.append(SkippedRow(start, None, reason))
            continue
        yield start, dict(zip(header, values, strict=True))


def _jsonl_rows(path: Path, report: LoadReport, lenient: bool) -> Iterator[tuple[int, dict]]:
    for number, text in enumerate(_read_text(path, report, lenient), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
            if not isinstance(row, dict):
                raise ValueError("expected a JSON object")
        except ValueError as error:
            reason = f"malformed JSON: {error}"
            if not lenient:
                raise CatalogueError(path, number, None, reason) from None
            report.rows_read += 1
            report.skipped.append(SkippedRow(number, None, reason))
            continue
        yield number, row


def _parquet_rows(path: Path, report: LoadReport, lenient: bool) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq  # only parquet users pay for the import

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
        raise CatalogueError(path, None, None, f"not a readable Parquet file ({error})") from None
    # Parquet has no lines: rows are numbered from 1, as a spreadsheet would show them.
    yield from enumerate(table.to_pylist(), start=1)
