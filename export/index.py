"""The catalogue index: every product embedded once, stored with its ids and metadata.

An index folder holds
- `embeddings.npy`: float32 [products, dim], unit rows, row i = line i of products.jsonl;
- `products.jsonl`: the catalogue, one JSON object per product;
- `manifest.json`: which encoder (path and SHA-256), which catalogue, when it was built.

Search serves it through `export.search.retrieval`'s ONNX graph; recommend reads it directly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.catalogue import Catalogue
from fusionrank.core.encoding import MAX_TITLE_TOKENS, OnnxEncoder, TextEncoder, TextTokenizer
from fusionrank.export.encoder import ExportedEncoder


@dataclass(frozen=True)
class IndexManifest:
    encoder_source: str
    encoder_sha256: str
    catalogue_source: str
    products: int
    dimension: int
    built_at: str
    titles_sha256: str = ""  # of the embedded titles, in order
    embeddings_reused: bool = False  # same encoder, same titles: the last build's embeddings


def titles_digest(titles: list[str]) -> str:
    return hashlib.sha256("\n".join(titles).encode("utf-8")).hexdigest()


def build_index(catalogue: Catalogue, encoder: ExportedEncoder, out_dir: str | Path,
                progress: bool = True, previous: str | Path | None = None) -> IndexManifest:
    """Embed the catalogue into `out_dir`. The embeddings of the index in `previous` (default:
    `out_dir` itself) are reused where it embedded these very titles with this very encoder
    file: hard-linked into `out_dir` (never written to), not computed again."""
    out_dir = Path(out_dir)
    previous = out_dir if previous is None else Path(previous)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = titles_digest(catalogue.titles)
    reuse = unchanged(previous, encoder.sha256, digest)
    if reuse:
        if previous.resolve() != out_dir.resolve():
            link_or_copy(previous / artefacts.EMBEDDINGS, out_dir / artefacts.EMBEDDINGS)
        embeddings = load_embeddings(out_dir)
    else:
        text_encoder = TextEncoder(TextTokenizer(encoder.tokenizer_path, MAX_TITLE_TOKENS),
                                   OnnxEncoder(encoder.onnx_path))
        embeddings = text_encoder.encode(catalogue.titles, progress=progress)
        with artefacts.replacing(out_dir / artefacts.EMBEDDINGS) as temporary, \
                temporary.open("wb") as handle:
            np.save(handle, embeddings)
    catalogue.write_jsonl(out_dir / artefacts.PRODUCTS)
    manifest = IndexManifest(
        encoder_source=encoder.source, encoder_sha256=encoder.sha256,
        catalogue_source=catalogue.source, products=len(catalogue),
        dimension=int(embeddings.shape[1]),
        built_at=datetime.now(UTC).isoformat(timespec="seconds"), titles_sha256=digest,
        embeddings_reused=reuse)
    with artefacts.replacing(out_dir / artefacts.INDEX_MANIFEST) as temporary:
        temporary.write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def unchanged(out_dir: Path, encoder_sha256: str, titles_sha256: str) -> bool:
    """Whether the index in `out_dir` embeds these titles with this very encoder file."""
    try:
        previous = json.loads((out_dir / artefacts.INDEX_MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return (previous.get("encoder_sha256") == encoder_sha256
            and previous.get("titles_sha256") == titles_sha256
            and (out_dir / artefacts.EMBEDDINGS).is_file())


def link_or_copy(source: Path, target: Path) -> None:
    """`target` as a new name of `source` (a copy across file systems), replacing any file
    there rather than writing into it."""
    with artefacts.replacing(target) as temporary:
        artefacts.link_or_copy(source, temporary)


def load_embeddings(index_dir: str | Path) -> np.ndarray:
    return np.load(Path(index_dir) / artefacts.EMBEDDINGS)
