"""A deterministic benchmark catalogue of any size: every real Home Depot product, then
distractor products whose titles are recombined from the real titles' own phrases.

    .venv/bin/python -m benchmarks.generate_catalogue --products 1000000 --seed 13 \\
        --out /tmp/catalogue_1m.parquet

then `fusionrank build --catalogue /tmp/catalogue_1m.parquet ...`. The output is `.parquet`
(columns `product_id`, `title`; what `core/catalogue.py:load_catalogue` reads fastest) or
`.jsonl`, chosen by the suffix of `--out`. Nothing it writes belongs in the repository.

What it holds, row by row:

- Rows 1..45,782 are the real catalogue, exactly as `fusionrank.core.datasets.homedepot_catalogue`
  returns it (same order, ids and titles), so a build on the first 45,782 rows is today's
  `fusionrank build --catalogue homedepot` and dev/test queries are judged as today (a
  distractor is unjudged, so it counts as not relevant).
- The rest are distractors with ids `G0000001`, `G0000002`, ... (real ids are digits only).

**Prefixes.** The distractors come from one seeded stream (`np.random.default_rng(seed)`) in
fixed blocks of `BLOCK` candidates, whatever `--products` asks, so the N-product catalogue is
the first N rows of any larger one with the same seed and source: the 45,782-, 250,000- and
1,000,000-product points of the scale report are cuts of one sequence. The same seed and
source file give byte-identical output. `--products` below the real catalogue's size is
refused (cutting real products would change the judged rankings).

**How a distractor title is made.** Each real title is split into slots
(`parse_title`): its brand (the longest leading run of 1-3 capitalised words that starts at
least `BRAND_MIN` titles), sizes (runs of tokens holding a digit, with the units and `x`
that follow: `24 in. W x 36 in. H`, `2-gal.`, `#10`, `40-Volt`), colours and finishes,
materials (two small word lists), other modifiers, the product type (the last one or two
capitalised words of the head phrase, which `title_terms.HEAD_END` ends: "Shower Door" of
"Delta Phoebe 36 in. x 64-3/4 in. Semi-Framed Pivoting Shower Door in Nickel with Rain Glass"),
and the tail after the head (" in Nickel with Rain Glass", " (2-Pack)"). A distractor then
takes the slot sequence of a real title drawn at random (its *shape*: templates come in their
real frequency, and so does the word count), and fills each slot with that slot's text from
another random real title of the same product type (a type seen in fewer than `GROUP_MIN`
titles borrows from all types with its last word, "Door"; rarer ones share one pool, in
which only the brand, sizes and colours are redrawn and the rest stays the donor's). Brands,
sizes and tails therefore stay plausible for the type: a hedge trimmer gets a trimmer's
voltage and a trimmer maker's brand. Every word of a distractor is a word of a real title,
sizes included; no number is invented.

A candidate that equals (ignoring case) a real title or an earlier distractor is dropped and
the stream moves on, so rows stay unique and deterministic.

Brand and category columns are left out on purpose: the real products have neither, and a
column only distractors carried would tell them apart. Prices too (the real ones have none).

**Measured** (2 vCPU AMD EPYC, seed 13, `--products 1000000`, parquet): 8-13 s in all (reading
the source ~1 s, learning the slots ~2 s, drawing and joining ~3 s, writing ~1 s; the range
is the shared machine's load), 630 MB peak RSS, a 31 MiB file; `load_catalogue` reads it back
strictly in 9-12 s. About 7 % of candidates are dropped as duplicates (2 % equal a real
title). Title words (whitespace tokens), real vs distractors: mean 11.51 vs 11.63, p50 11 vs
11, p90 17 vs 18 (printed on every run).

**The committed sample** `benchmarks/samples/catalogue_sample.jsonl` is 200 distractor rows,
written by

    .venv/bin/python -m benchmarks.generate_catalogue \\
        --sample benchmarks/samples/catalogue_sample.jsonl

(seed 13: the first 200 distractors of the catalogue above).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrank.core.search.text import STOPWORDS
from fusionrank.core.search.title_terms import HEAD_END

BLOCK = 1 << 16  # candidates drawn at a time; fixed, so that any N is a prefix of a larger N
BRAND_MIN = 3  # a leading phrase is a brand when at least this many titles start with it
GROUP_MIN = 10  # a product type with fewer titles borrows from the pool of its last word
MAX_BRAND_WORDS = 3
DEFAULT_SEED = 13
DISTRACTOR_PREFIX = "G"
SAMPLE_ROWS = 200
# Blocks in a row that add no new title before the source is declared too small.
MAX_IDLE_BLOCKS = 20

# Slot labels, as stored in the shape arrays.
BRAND, SIZE, MODIFIER, COLOUR, MATERIAL, TYPE, TAIL = range(7)
SLOT_NAMES = ("brand", "size", "modifier", "colour", "material", "type", "tail")
SHARED_POOL_KEEPS = np.array([MODIFIER, MATERIAL, TYPE, TAIL], dtype=np.int8)

# Tokens that continue a size when they follow one ("24 in. W x 36 in. H").
UNITS = frozenset([
    "in", "in.", "ft", "ft.", "x", "sq", "sq.", "yd", "yd.", "gal", "gal.", "oz", "oz.", "lb",
    "lb.", "lbs", "lbs.", "mm", "cm", "m", "qt", "qt.", "pt", "pt.", "w", "h", "d", "l", "dia",
    "dia.", "cu", "cu.", "mil", "gauge", "volt", "watt", "amp", "btu", "pack", "piece", "pc",
    "pcs",
])
# Colour and finish words ("Light" is left out: it is more often a product).
COLOURS = frozenset([
    "white", "black", "brown", "gray", "grey", "silver", "gold", "red", "blue", "green",
    "yellow", "orange", "purple", "pink", "beige", "tan", "ivory", "cream", "almond", "bronze",
    "nickel", "chrome", "bisque", "biscuit", "charcoal", "espresso", "taupe", "khaki", "navy",
    "teal", "aqua", "turquoise", "burgundy", "champagne", "pewter", "brushed", "polished",
    "satin", "matte", "gloss", "semi-gloss", "rubbed", "antique", "dark", "clear",
])
MATERIALS = frozenset([
    "steel", "stainless", "aluminum", "aluminium", "wood", "wooden", "plastic", "vinyl",
    "glass", "ceramic", "porcelain", "brass", "copper", "iron", "concrete", "resin",
    "fiberglass", "pvc", "cpvc", "pex", "mdf", "hardwood", "oak", "pine", "cedar", "bamboo",
    "rubber", "nylon", "polyester", "cotton", "wool", "fabric", "leather", "granite", "marble",
    "stone", "slate", "travertine", "acrylic", "metal", "wire", "zinc", "galvanized",
    "polypropylene", "polyethylene", "composite", "laminate", "cast", "wrought", "poly",
])
WORD_PARTS = re.compile(r"[-/+]")


@dataclass(frozen=True)
class ParsedTitle:
    """A real title as slots: `segments` in title order, each (slot label, its text)."""

    segments: tuple[tuple[int, str], ...]
    type_phrase: str  # "" when the head ends in a size, colour or material

    @property
    def kind(self) -> str:
        """The type's last word ("door" of "Shower Door"), lower-case."""
        return self.type_phrase.rsplit(" ", 1)[-1].lower()


def split_head(title: str) -> tuple[str, str]:
    """The title's head phrase and its tail, as `title_terms` splits them; the tail keeps its
    separator ("in Nickel", "(2-Pack)", ", 8 Gallon")."""
    match = HEAD_END.search(title)
    if match is None:
        return title, ""
    return title[:match.start()], title[match.start():].strip()


def brand_prefixes(titles: Sequence[str]) -> set[str]:
    """Leading phrases of 1-3 capitalised, digit-free words that start >= BRAND_MIN titles."""
    counts: Counter[str] = Counter()
    for title in titles:
        words = split_head(title)[0].split()
        for n in range(1, min(MAX_BRAND_WORDS, len(words) - 1) + 1):
            if not _brand_word(words[n - 1]):
                break
            counts[" ".join(words[:n])] += 1
    # "The" of "The Hillman Group" is no brand on its own.
    return {phrase for phrase, n in counts.items()
            if n >= BRAND_MIN and phrase.rsplit(" ", 1)[-1].lower() not in STOPWORDS}


def _brand_word(word: str) -> bool:
    return word[:1].isupper() and not any(c.isdigit() for c in word)


def _word_slot(token: str, previous: int | None) -> int:
    """A head token's slot: SIZE, COLOUR, MATERIAL or MODIFIER (TYPE is decided later)."""
    if any(c.isdigit() for c in token) or token.startswith("#"):
        return SIZE
    lower = token.lower()
    if previous == SIZE and lower in UNITS:
        return SIZE
    parts = [p for p in WORD_PARTS.split(lower.strip(".,")) if p]
    if parts and all(p in COLOURS for p in parts):
        return COLOUR
    if parts and all(p in MATERIALS for p in parts):
        return MATERIAL
    return MODIFIER


def parse_title(title: str, brands: set[str]) -> ParsedTitle:
    """Split one title into slots (see the module's docstring)."""
    head, tail = split_head(title)
    words = head.split()
    brand_words = next((n for n in range(min(MAX_BRAND_WORDS, len(words) - 1), 0, -1)
                        if " ".join(words[:n]) in brands), 0)
    rest = words[brand_words:]
    labels: list[int] = []
    for word in rest:
        labels.append(_word_slot(word, labels[-1] if labels else None))
    trailing = _type_words(rest, labels)
    for i in range(len(labels) - trailing, len(labels)):
        labels[i] = TYPE
    segments: list[tuple[int, str]] = []
    if brand_words:
        segments.append((BRAND, " ".join(words[:brand_words])))
    for label, word in zip(labels, rest, strict=True):
        if segments and segments[-1][0] == label:
            segments[-1] = (label, f"{segments[-1][1]} {word}")  # a run is one segment
        else:
            segments.append((label, word))
    if tail:
        segments.append((TAIL, tail))
    type_phrase = " ".join(rest[len(rest) - trailing:])
    return ParsedTitle(tuple(segments), type_phrase)


def _type_words(words: Sequence[str], labels: Sequence[int]) -> int:
    """How many of the head's last words name the product type: the last one unless it is a
    size (a colour or material word there is the product: "Copper Wire"), and the one before
    where it is a plain word. Lower-case words ("and", "of") are connectors, not types."""
    def named(i: int) -> bool:
        return not words[i][:1].islower()

    if not words or labels[-1] == SIZE or not named(-1):
        return 0
    return 2 if len(words) > 1 and labels[-2] == MODIFIER and named(-2) else 1


def _join(text: str) -> str:
    """A segment as it is appended: after a space, except a tail that starts with a comma."""
    return text if text.startswith(",") else f" {text}"


@dataclass
class SlotPool:
    """One slot's texts (ids into TitleGrammar.texts) of every real title, ordered by the
    title's group, so that a group's texts are values[start[g]:start[g] + count[g]]."""

    values: np.ndarray  # int64 [segments]
    start: np.ndarray  # int64 [groups]
    count: np.ndarray  # int64 [groups]


class TitleGrammar:
    """The real titles' slots as arrays: each title's shape (its slot labels in order) and
    texts, its group (its product type, or the shared pool of rare ones) and, per slot, the
    texts of each group. `sample` draws candidate distractor titles from them."""

    def __init__(self, titles: Sequence[str], group_min: int = GROUP_MIN):
        if not titles:
            raise ValueError("titles: the source has no titles to learn from")
        brands = brand_prefixes(titles)
        parsed = [parse_title(t, brands) for t in titles]
        self.group = _groups(parsed, group_min)
        self.texts: list[str] = [""]  # id 0: an empty slot
        text_id: dict[str, int] = {"": 0}
        width = max(len(p.segments) for p in parsed)
        self.shape = np.full((len(parsed), width), -1, dtype=np.int8)  # slot labels
        self.own = np.zeros((len(parsed), width), dtype=np.int64)  # their text ids
        for row, title in enumerate(parsed):
            for column, (label, text) in enumerate(title.segments):
                joined = _join(text)
                self.own[row, column] = text_id.setdefault(joined, len(self.texts))
                if self.own[row, column] == len(self.texts):
                    self.texts.append(joined)
                self.shape[row, column] = label
        groups = int(self.group.max()) + 1
        self.pools = [_pool(self.group, self.shape, self.own, label, groups)
                      for label in range(len(SLOT_NAMES))]
        self.text_array = np.array(self.texts, dtype=object)

    def sample(self, rng: np.random.Generator, count: int) -> list[str]:
        """`count` candidate titles; duplicates and real titles are not removed here."""
        donor = rng.integers(0, len(self.shape), size=count)
        shape = self.shape[donor]  # [count, width]: each candidate's slot sequence
        group = np.broadcast_to(self.group[donor][:, None], shape.shape)
        draw = rng.random(shape.shape)
        chosen = self.own[donor]  # the donor's own texts, where no slot is redrawn
        # In the shared pool of rare types, only the brand, sizes and colours are redrawn:
        # a rare type's modifiers and tail make sense with that type only.
        shared = (group == 0) & np.isin(shape, SHARED_POOL_KEEPS)
        for label, pool in enumerate(self.pools):
            here = (shape == label) & ~shared
            g = group[here]
            # Every group holding a shape with this slot holds one text for it (the donor's).
            pick = pool.start[g] + (draw[here] * pool.count[g]).astype(np.int64)
            chosen[here] = pool.values[pick]
        parts = self.text_array[chosen].tolist()
        return [" ".join("".join(row).split()) for row in parts]


def _groups(parsed: Sequence[ParsedTitle], group_min: int) -> np.ndarray:
    """Each title's group id: its type phrase where >= group_min titles share it, else its
    type's last word where that is common enough, else one shared pool (id 0)."""
    phrase_counts = Counter(p.type_phrase.lower() for p in parsed)
    kind_counts = Counter(p.kind for p in parsed)
    keys = []
    for p in parsed:
        phrase = p.type_phrase.lower()
        if phrase and phrase_counts[phrase] >= group_min:
            keys.append("type:" + phrase)
        elif p.kind and kind_counts[p.kind] >= group_min:
            keys.append("kind:" + p.kind)
        else:
            keys.append("")
    ids = {key: i for i, key in enumerate(sorted(set(keys) | {""}))}  # "" sorts first: id 0
    return np.array([ids[k] for k in keys], dtype=np.int64)


def _pool(group: np.ndarray, shape: np.ndarray, own: np.ndarray, label: int,
          groups: int) -> SlotPool:
    """The texts of slot `label` in every title, ordered by the title's group."""
    rows, columns = np.nonzero(shape == label)  # row-major: titles in order
    owner = group[rows]
    order = np.argsort(owner, kind="stable")
    count = np.bincount(owner, minlength=groups).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    return SlotPool(own[rows, columns][order], start, count)


def distractor_titles(titles: Sequence[str], count: int, seed: int,
                      group_min: int = GROUP_MIN) -> list[str]:
    """`count` distinct distractor titles made from `titles`, none equal (ignoring case) to
    one of them; the first n of any call are the titles a call for n returns."""
    grammar = TitleGrammar(titles, group_min)
    rng = np.random.default_rng(seed)
    seen = {t.casefold() for t in titles}
    out: list[str] = []
    idle = 0
    while len(out) < count:
        before = len(out)
        for title in grammar.sample(rng, BLOCK):
            key = title.casefold()
            if key not in seen:
                seen.add(key)
                out.append(title)
        idle = idle + 1 if len(out) == before else 0
        if idle >= MAX_IDLE_BLOCKS:
            raise ValueError(f"products: the source's {len(titles)} titles make only "
                             f"{len(out)} distinct distractors, fewer than the {count} asked")
    return out[:count]


@dataclass
class GeneratedCatalogue:
    ids: list[str]
    titles: list[str]
    real: int  # the first `real` rows are the source's products, unchanged


def generate_catalogue(real_ids: Sequence[str], real_titles: Sequence[str], products: int,
                       seed: int = DEFAULT_SEED, group_min: int = GROUP_MIN) -> GeneratedCatalogue:
    """The real products, then `products - len(real_ids)` distractors."""
    if products < len(real_ids):
        raise ValueError(f"--products {products} is smaller than the real catalogue's "
                         f"{len(real_ids)} products; ask for at least {len(real_ids)}")
    extra = products - len(real_ids)
    width = 7
    if extra >= 10 ** width:
        raise ValueError(f"--products {products}: at most {10 ** width - 1} distractors "
                         f"fit the {DISTRACTOR_PREFIX} + {width}-digit ids")
    taken = set(real_ids)
    ids = [f"{DISTRACTOR_PREFIX}{i:0{width}d}" for i in range(1, extra + 1)]
    if taken.intersection(ids):
        raise ValueError("real product ids look like distractor ids (G + 7 digits)")
    titles = distractor_titles(real_titles, extra, seed, group_min) if extra else []
    return GeneratedCatalogue([*real_ids, *ids], [*real_titles, *titles], len(real_ids))


def write_catalogue(catalogue: GeneratedCatalogue, path: Path, first: int = 0) -> None:
    """Rows `first`.. as .parquet or .jsonl (by the suffix), byte-identical for equal input."""
    ids, titles = catalogue.ids[first:], catalogue.titles[first:]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        with path.open("w", encoding="utf-8", newline="\n") as out:
            for pid, title in zip(ids, titles, strict=True):
                out.write(json.dumps({"product_id": pid, "title": title},
                                     ensure_ascii=False) + "\n")
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"product_id": pa.array(ids, pa.string()),
                          "title": pa.array(titles, pa.string())})
        pq.write_table(table, path, compression="zstd", row_group_size=BLOCK * 4)
    else:
        raise ValueError(f"--out {path}: use a .parquet or .jsonl file")


def word_counts(titles: Sequence[str]) -> dict[str, float]:
    counts = np.array([len(t.split()) for t in titles])
    return {"mean": round(float(counts.mean()), 2), "p50": float(np.percentile(counts, 50)),
            "p90": float(np.percentile(counts, 90))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.generate_catalogue",
        description="The real Home Depot catalogue, then seeded distractor products.")
    parser.add_argument("--products", type=int, default=1_000_000,
                        help="rows in all, real ones included (default 1000000)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, help="a .parquet or .jsonl file")
    parser.add_argument("--source", type=Path, default=None,
                        help="Home Depot relevance.csv.gz (default: the shared datasets)")
    parser.add_argument("--sample", type=Path, default=None,
                        help=f"write the first {SAMPLE_ROWS} distractors as .jsonl instead")
    args = parser.parse_args(argv)
    if (args.out is None) == (args.sample is None):
        parser.error("give one of --out FILE or --sample FILE")
    out = args.sample or args.out
    if out.suffix not in (".parquet", ".jsonl"):
        parser.error(f"--out {out}: use a .parquet or .jsonl file")
    from fusionrank.core.datasets import homedepot_catalogue

    started = time.perf_counter()
    real, _ = homedepot_catalogue(args.source)
    products = len(real) + SAMPLE_ROWS if args.sample else args.products
    try:
        catalogue = generate_catalogue(real.ids, real.titles, products, args.seed)
        write_catalogue(catalogue, out, first=catalogue.real if args.sample else 0)
    except ValueError as error:
        parser.error(str(error))
    seconds = time.perf_counter() - started
    print(f"{out}: {len(catalogue.ids):,} products ({catalogue.real:,} real, "
          f"{len(catalogue.ids) - catalogue.real:,} distractors), seed {args.seed}, "
          f"{seconds:.1f} s, {out.stat().st_size / 2**20:.2f} MiB")
    print(f"title words, real:        {word_counts(catalogue.titles[:catalogue.real])}")
    if len(catalogue.ids) > catalogue.real:
        print(f"title words, distractors: {word_counts(catalogue.titles[catalogue.real:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
