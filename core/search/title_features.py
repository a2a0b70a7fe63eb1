"""TITLE_FEATURES (`title_features.npz`): the feature sources' title structures, computed once
at build instead of at every load of the `ranker`.

TitleTerms (each title's terms, head phrase, term pairs and character-trigram TF-IDF vector)
and TermVectors (each term's mean title embedding) take seconds for a real catalogue, paid by
every ranker process at each (re)load: too slow to serve again soon after a crash
(benchmarks/reports/ranker_load.md measures both ways). Both follow from the catalogue alone
(its titles and embeddings), so `fusionrank build` computes them once and saves their arrays
in one `.npz`: no pickles (strings as unicode arrays, dicts as parallel arrays, Ragged as
indptr / ids / weights), read back with `artefacts.load_arrays`. The ranker then gets the
very arrays the build computed, so the features are the same bit for bit.

The file records the catalogue it was computed from (product count, SHA-256 of the titles and
of the embeddings) and is refused beside any other. A folder without it (a repository built
before it existed) still loads: the structures are computed there, as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.search.term_vectors import TermVectors
from fusionrank.core.search.title_terms import TitleTerms

# Bump when TitleTerms or TermVectors compute their arrays differently: a file written by
# other code is refused rather than served with features the head was not trained on.
FORMAT = 1
TITLES, VECTORS = "titles.", "term_vectors."  # key prefixes of the two objects' arrays


@dataclass(frozen=True)
class CatalogueStamp:
    """Which catalogue the saved structures describe."""

    products: int
    titles_sha256: str  # of the titles, in catalogue order, NUL-separated, UTF-8
    embeddings_sha256: str  # of the float32 embedding matrix's bytes

    @classmethod
    def of(cls, titles: Sequence[str], embeddings: np.ndarray) -> CatalogueStamp:
        matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
        return cls(len(titles), hashlib.sha256("\0".join(titles).encode("utf-8")).hexdigest(),
                   hashlib.sha256(memoryview(matrix).cast("B")).hexdigest())


def save_title_features(path: str | Path, titles: Sequence[str],
                        embeddings: np.ndarray) -> None:
    """Compute TitleTerms and TermVectors for this catalogue and save them to `path`."""
    terms, vectors = title_features(titles, embeddings)
    stamp = CatalogueStamp.of(titles, embeddings)
    arrays = {"format": np.array(FORMAT), "products": np.array(stamp.products),
              "titles_sha256": np.array(stamp.titles_sha256),
              "embeddings_sha256": np.array(stamp.embeddings_sha256),
              **{TITLES + k: v for k, v in terms.arrays().items()},
              **{VECTORS + k: v for k, v in vectors.arrays().items()}}
    with Path(path).open("wb") as handle:  # np.savez would append .npz to a str path
        np.savez(handle, **arrays)


def load_title_features(path: str | Path, titles: Sequence[str],
                        embeddings: np.ndarray) -> tuple[TitleTerms, TermVectors]:
    """The structures saved in `path`; an ArtefactError naming the file where it was computed
    from another catalogue (or by other code)."""
    path = Path(path)
    saved = artefacts.load_arrays(path, [
        "format", "products", "titles_sha256", "embeddings_sha256",
        *(TITLES + k for k in TitleTerms.SAVED), *(VECTORS + k for k in TermVectors.SAVED)])
    if int(saved["format"]) != FORMAT:
        raise artefacts.ArtefactError(
            f"{path} was written by another version of the feature code (format "
            f"{int(saved['format'])}, this one reads {FORMAT}); rebuild the repository")
    stamp = CatalogueStamp.of(titles, embeddings)
    recorded = CatalogueStamp(int(saved["products"]), str(saved["titles_sha256"]),
                              str(saved["embeddings_sha256"]))
    if recorded != stamp:
        differ = [name for name in ("products", "titles_sha256", "embeddings_sha256")
                  if getattr(recorded, name) != getattr(stamp, name)]
        raise artefacts.ArtefactError(
            f"{path} was computed from another catalogue than the one beside it "
            f"({', '.join(differ)} differ; it describes {recorded.products} products, the "
            f"catalogue has {stamp.products}); rebuild the repository")
    return (TitleTerms.from_arrays(_unprefixed(saved, TITLES)),
            TermVectors.from_arrays(_unprefixed(saved, VECTORS)))


def title_features(titles: Sequence[str], embeddings: np.ndarray,
                   saved: Path | None = None) -> tuple[TitleTerms, TermVectors]:
    """Read from `saved` where that file exists, else computed (the same either way)."""
    if saved is not None and saved.is_file():
        return load_title_features(saved, titles, embeddings)
    terms = TitleTerms(titles)
    return terms, TermVectors.fit(terms, embeddings)


def _unprefixed(saved: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}

