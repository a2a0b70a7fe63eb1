"""The benchmark catalogue generator (benchmarks/generate_catalogue.py) on a small source made
here: real products first and unchanged, distractors new, unique and made of the source's
words, the same bytes for the same seed, and any size a prefix of a larger one."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest

from benchmarks import generate_catalogue as gen
from fusionrank.core.catalogue import load_catalogue
from fusionrank.core.search.text import query_words

SAMPLE = Path(gen.__file__).parent / "samples" / "catalogue_sample.jsonl"

# Real-looking titles in the dataset's style; product_uids rise, so they are also the order
# homedepot_catalogue gives (it sorts by product_uid).
TITLES = [
    "Ryobi 24 in. 40-Volt Lithium-Ion Cordless Hedge Trimmer",
    "Ryobi 18-Volt ONE+ Lithium-Ion Cordless String Trimmer",
    "Ryobi 40-Volt Lithium-Ion Cordless Leaf Blower",
    "Ryobi 18-Volt ONE+ Cordless Drill Kit with Battery",
    "DEWALT 20-Volt Max Lithium-Ion Cordless Drill Kit",
    "DEWALT 18-Volt Ni-Cad Cordless Band Saw",
    "DEWALT 20-Volt Max Lithium-Ion Cordless Circular Saw",
    "Hampton Bay 6-Light Black Xenon Under Cabinet Puck Light Kit",
    "Hampton Bay 52 in. Brushed Nickel Indoor Ceiling Fan",
    "Hampton Bay 3-Light White Flush Mount Light",
    "Hampton Bay 17 in. Square Outdoor Throw Pillow (2-Pack)",
    "Everbilt 1/2 in. x 5 in. Zinc-Plated Steel Lag Screws (50-Pack)",
    "Everbilt 3/4 in. W x 9/16 in. H x 96 in. L Aluminum C-Channel",
    "Everbilt #10 x 1-1/4 in. Phillips Flat-Head Wood Screw (100-Pack)",
    "Everbilt 2 in. Satin Nickel Door Hinge (3-Pack)",
    "Home Decorators Collection 24 in. W White Wood Floating Wall Shelf",
    "Home Decorators Collection 8 ft. x 10 ft. Gray Area Rug",
    "Home Decorators Collection 3-Light Bronze Vanity Light",
    "Delta Porter 24 in. Towel Bar in Brushed Nickel",
    "Delta Phoebe 36 in. x 64-3/4 in. Semi-Framed Pivoting Shower Door in Nickel",
    "Delta Leland Single-Handle Pull-Down Sprayer Kitchen Faucet in Chrome",
    "Philips 100-Watt Halogen T4 Sconce Light Bulb",
    "Philips 60-Watt Soft White LED Light Bulb (4-Pack)",
    "Philips 4 ft. T8 32-Watt Daylight Linear Fluorescent Light Bulb (10-Pack)",
    "Glidden 1-gal. White Flat Interior Paint and Primer",
    "Glidden 5-gal. Gray Satin Exterior Paint",
    "Behr 1-gal. Ultra Pure White Semi-Gloss Interior Paint",
    "Rubbermaid 25 in. Twin Track Upright",
    "Rubbermaid 32 gal. Gray Plastic Trash Can",
    "HDX 3-Shelf 24 in. W x 30 in. H x 14 in. L Wire Shelving Unit",
    "HDX 5 gal. Black Plastic Bucket",
    "HDX 100 ft. Green Garden Hose",
    "SharkBite 1/2 in. Brass Push-to-Connect End Stop (4-Pack)",
    "SharkBite 3/4 in. Brass Push-to-Connect Ball Valve",
    "Masonite 36 in. x 80 in. 9 Lite Painted Steel Prehung Front Door",
    "Masonite 28 in. x 80 in. Smooth 5-Panel Solid Core Primed Interior Door Slab",
    "Bona 32 oz. Hardwood Floor Cleaner",
    "QEP 7 in. Glass Tile Diamond Blade for Wet Tile Saws",
    "Alpine 21 in. Grazing Reindeer with 144 LED Lights Decoration",
    "5 gal. Green Plastic Gas Can",
]
IDS = [str(100001 + i) for i in range(len(TITLES))]


def write_source(path: Path, titles: list[str] = TITLES) -> Path:
    """A relevance.csv.gz in the dataset's columns, every product judged twice (the
    generator must keep one row per product)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["id", "product_uid", "product_title", "search_term", "relevance"])
    row = 1
    for uid, title in zip(IDS, titles, strict=False):
        for query in ("first query", "second query"):
            writer.writerow([row, uid, title, query, 2.33])
            row += 1
    path.write_bytes(gzip.compress(text.getvalue().encode("utf-8"), mtime=0))
    return path


@pytest.fixture
def source(tmp_path):
    return write_source(tmp_path / "relevance.csv.gz")


def run(source: Path, out: Path, products: int = 300, seed: int = 13) -> Path:
    assert gen.main(["--source", str(source), "--products", str(products),
                     "--seed", str(seed), "--out", str(out)]) == 0
    return out


def test_real_products_come_first_unchanged_then_new_distinct_distractors(source, tmp_path):
    catalogue, report = load_catalogue(run(source, tmp_path / "c.jsonl"))  # strict
    assert report.loaded == 300 and not report.skipped
    assert catalogue.ids[:len(IDS)] == IDS
    assert catalogue.titles[:len(TITLES)] == TITLES
    distractors = catalogue.titles[len(TITLES):]
    assert catalogue.ids[len(IDS):] == [f"G{i:07d}" for i in range(1, 300 - len(IDS) + 1)]
    folded = [t.casefold() for t in distractors]
    assert len(set(folded)) == len(folded)
    assert not set(folded) & {t.casefold() for t in TITLES}


def test_every_distractor_word_is_a_source_word(source, tmp_path):
    catalogue, _ = load_catalogue(run(source, tmp_path / "c.jsonl"))
    source_words = {w for t in TITLES for w in query_words(t)}
    for title in catalogue.titles[len(TITLES):]:
        assert set(query_words(title)) <= source_words, title


def test_word_counts_resemble_the_source(source, tmp_path):
    catalogue, _ = load_catalogue(run(source, tmp_path / "c.jsonl", products=2000))
    real = gen.word_counts(TITLES)
    made = gen.word_counts(catalogue.titles[len(TITLES):])
    assert abs(made["mean"] - real["mean"]) < 0.2 * real["mean"], (real, made)


def test_same_seed_same_bytes_other_seed_other_titles(source, tmp_path):
    first = run(source, tmp_path / "a.parquet").read_bytes()
    again = run(source, tmp_path / "b.parquet").read_bytes()
    other = run(source, tmp_path / "c.parquet", seed=14)
    assert first == again
    assert first != other.read_bytes()
    catalogue, _ = load_catalogue(other)  # the parquet output loads strictly too
    assert catalogue.titles[:len(TITLES)] == TITLES


def test_a_smaller_catalogue_is_a_prefix_of_a_larger_one():
    small = gen.generate_catalogue(IDS, TITLES, 120, seed=5)
    large = gen.generate_catalogue(IDS, TITLES, 2500, seed=5)
    assert large.ids[:120] == small.ids and large.titles[:120] == small.titles
    assert len(large.titles) == 2500 and large.real == small.real == len(IDS)


def test_products_below_the_real_catalogue_are_refused(source, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        gen.main(["--source", str(source), "--products", "10", "--out",
                  str(tmp_path / "c.parquet")])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "--products 10" in error and str(len(IDS)) in error
    assert not (tmp_path / "c.parquet").exists()


def test_unknown_output_suffix_is_refused(source, tmp_path, capsys):
    with pytest.raises(SystemExit):
        gen.main(["--source", str(source), "--products", "50", "--out", str(tmp_path / "c.csv")])
    assert "--out" in capsys.readouterr().err


def test_a_source_too_small_for_the_count_asked_says_so(monkeypatch):
    monkeypatch.setattr(gen, "BLOCK", 64)  # give up sooner; the logic is the same
    titles = ["Ryobi 18-Volt Cordless Drill", "Ryobi 40-Volt Cordless Blower"]
    with pytest.raises(ValueError, match="products: the source's 2 titles make only"):
        gen.distractor_titles(titles, 1000, seed=1)


def test_titles_split_into_brand_size_modifier_material_type_and_tail():
    parse = gen.parse_title
    assert parse("Ryobi 24 in. 40-Volt Lithium-Ion Cordless Hedge Trimmer", {"Ryobi"}) \
        == gen.ParsedTitle(((gen.BRAND, "Ryobi"), (gen.SIZE, "24 in. 40-Volt"),
                            (gen.MODIFIER, "Lithium-Ion Cordless"),
                            (gen.TYPE, "Hedge Trimmer")), "Hedge Trimmer")
    shelf = parse("HDX 3-Shelf 24 in. W x 30 in. H x 14 in. L Wire Shelving Unit", {"HDX"})
    assert [label for label, _ in shelf.segments] == [gen.BRAND, gen.SIZE, gen.MATERIAL,
                                                      gen.TYPE]
    assert shelf.segments[1][1] == "3-Shelf 24 in. W x 30 in. H x 14 in. L"
    stop = parse("SharkBite 1/2 in. Brass Push-to-Connect End Stop (4-Pack)", {"SharkBite"})
    assert stop.segments[-1] == (gen.TAIL, "(4-Pack)") and stop.kind == "stop"
    # "The" alone is no brand; the longest known prefix wins.
    assert gen.brand_prefixes(["The Hillman Group Hook"] * 3 + ["The Hillman Group Bolt"]) \
        == {"The Hillman", "The Hillman Group"}


def test_the_committed_sample_is_a_valid_catalogue_of_distractors():
    catalogue, report = load_catalogue(SAMPLE)  # strict
    assert report.loaded == gen.SAMPLE_ROWS
    assert catalogue.ids[0] == "G0000001" and all(i.startswith("G") for i in catalogue.ids)
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    assert set(rows[0]) == {"product_id", "title"}
