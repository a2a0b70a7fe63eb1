"""TITLE_FEATURES (`title_features.npz`): the feature sources' title structures, computed once
at build instead of at every load of the `ranker`.

TitleTerms (each title's terms, head phrase, term pairs and character-trigram TF-IDF vector)
and TermVectors (each term's mean title embedding) take seconds for a real catalogue, paid by
every ranker process at each (re)load: too slow to serve again soon after a crash
(benchmarks/reports/ranker_load.md measures both ways). Both follow from the catalogue alone
(its titles and embeddings), so `fusionrank build` computes them once and saves their arrays
in one uncompressed `.npz`: no pickles (strings as UTF-8 bytes, dicts as parallel arrays,
Ragged as indptr / ids), int32 ids, nothing saved twice, every array 64-byte aligned
(core/mapped_npz.py). The ranker maps the file rather than reading it: two ranker processes
share its pages, and only the rows a request touches become resident. It gets the very arrays
the build computed, so the features are the same bit for bit.

The file records the catalogue it was computed from (CatalogueStamp) and is refused beside any
other. A folder without it (a repository built before it existed) still loads: the structures
are computed there, as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.mapped_npz import load_mapped, save_mappable
from fusionrank.core.search.term_vectors import TermVectors
from fusionrank.core.search.title_terms import TitleTerms

# Bump when TitleTerms or TermVectors compute or store their arrays differently: a file written
# by other code is refused rather than served with features the head was not trained on.
# 2: int32 ids, strings as UTF-8, trigram counts for weights, no duplicated arrays, mapped.
FORMAT = 2
TITLES, VECTORS = "titles.", "term_vectors."  # key prefixes of the two objects' arrays
STAMP_ROWS = 4096  # the rows CatalogueStamp hashes: every row of a catalogue up to this size


@dataclass(frozen=True)
class CatalogueStamp:
    """Which catalogue the saved structures describe: its size, and digests of STAMP_ROWS rows
    spread evenly over it (every row of a smaller catalogue).

    Why a sample rather than every title and the whole embedding matrix: at a million products
    hashing everything costs every load seconds and reads the 1.5 GB matrix into the page
    cache, and the served path would have to parse every title. Byte-for-byte safety is
    already the manifest's job: a version folder's sha256.json, checked at each model load,
    proves every file is the one the build placed, and the build computes this file from the
    catalogue it places beside it. What is left for the stamp is a file paired by hand with
    another catalogue; another catalogue has another size, or other titles or embeddings in
    most rows (a re-encoded one in every row), which an even sample catches at a cost that
    does not grow with the catalogue."""

    products: int
    titles_sha256: str  # of the sampled titles, NUL-separated, UTF-8
    embeddings_sha256: str  # of the matrix's width and the sampled rows' float32 bytes

    @classmethod
    def of(cls, titles: Sequence[str], embeddings: np.ndarray) -> CatalogueStamp:
        rows = sample_rows(len(titles))
        matrix = np.ascontiguousarray(np.asarray(embeddings)[rows], dtype=np.float32)
        digest = hashlib.sha256(str(np.shape(embeddings)[1:]).encode())
        digest.update(memoryview(matrix).cast("B"))
        return cls(len(titles),
                   hashlib.sha256("\0".join(titles[int(r)] for r in rows).encode()).hexdigest(),
                   digest.hexdigest())


def sample_rows(products: int) -> np.ndarray:
    """int64: STAMP_ROWS rows spread evenly over the catalogue, first and last included."""
    return np.unique(np.linspace(0, products - 1, min(products, STAMP_ROWS)).astype(np.int64))


def save_title_features(path: str | Path, titles: Sequence[str],
                        embeddings: np.ndarray) -> None:
    """Compute TitleTerms and TermVectors for this catalogue and save them to `path`."""
    terms, vectors = title_features(titles, embeddings)
    stamp = CatalogueStamp.of(titles, embeddings)
    arrays = {"format": np.array(FORMAT), "products": np.array(stamp.products),
              "titles_sha256": np.array(stamp.titles_sha256),
              "embeddings_sha256": np.array(stamp.embeddings_sha256),
              **{TITLES + k: v for k, v in terms.arrays().items()},
              **{VECTORS + k: v for k, v in vectors.arrays(terms).items()}}
    save_mappable(path, arrays)


def load_title_features(path: str | Path, titles: Sequence[str],
                        embeddings: np.ndarray) -> tuple[TitleTerms, TermVectors]:
    """The structures saved in `path`, memory-mapped; an ArtefactError naming the file where
    it was computed from another catalogue (or by other code). Reads only `titles`' length and
    its sampled rows."""
    path = Path(path)
    header = load_mapped(path, ["format"])
    if int(header["format"]) != FORMAT:
        raise artefacts.ArtefactError(
            f"{path} was written by another version of the feature code (format "
            f"{int(header['format'])}, this one reads {FORMAT}); rebuild the repository")
    saved = load_mapped(path, [
        "products", "titles_sha256", "embeddings_sha256",
        *(TITLES + k for k in TitleTerms.SAVED), *(VECTORS + k for k in TermVectors.SAVED)],
        optional=[VECTORS + k for k in TermVectors.OPTIONAL])
    recorded = CatalogueStamp(int(saved["products"]), str(saved["titles_sha256"]),
                              str(saved["embeddings_sha256"]))
    stamp = CatalogueStamp.of(titles, embeddings)
    if recorded != stamp:
        differ = [name for name in ("products", "titles_sha256", "embeddings_sha256")
                  if getattr(recorded, name) != getattr(stamp, name)]
        raise artefacts.ArtefactError(
            f"{path} was computed from another catalogue than the one beside it "
            f"({', '.join(differ)} differ; it describes {recorded.products} products, the "
            f"catalogue has {stamp.products}); rebuild the repository")
    terms = TitleTerms.from_arrays(_unprefixed(saved, TITLES))
    return terms, TermVectors.from_arrays(_unprefixed(saved, VECTORS), terms)


def title_features(titles: Sequence[str], embeddings: np.ndarray,
                   saved: Path | None = None) -> tuple[TitleTerms, TermVectors]:
    """Read from `saved` where that file exists, else computed (the same either way)."""
    if saved is not None and saved.is_file():
        return load_title_features(saved, titles, embeddings)
    terms = TitleTerms(titles)
    return terms, TermVectors.fit(terms, embeddings)


def _unprefixed(saved: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}
