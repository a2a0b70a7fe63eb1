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
                progress: bool = True) -> IndexManifest:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = titles_digest(catalogue.titles)
    reuse = unchanged(out_dir, encoder.sha256, digest)
    if reuse:
        embeddings = load_embeddings(out_dir)
    else:
        text_encoder = TextEncoder(TextTokenizer(encoder.tokenizer_path, MAX_TITLE_TOKENS),
                                   OnnxEncoder(encoder.onnx_path))
        embeddings = text_encoder.encode(catalogue.titles, progress=progress)
        np.save(out_dir / artefacts.EMBEDDINGS, embeddings)
    catalogue.write_jsonl(out_dir / artefacts.PRODUCTS)
    manifest = IndexManifest(
        encoder_source=encoder.source, encoder_sha256=encoder.sha256,
        catalogue_source=catalogue.source, products=len(catalogue),
        dimension=int(embeddings.shape[1]),
        built_at=datetime.now(UTC).isoformat(timespec="seconds"), titles_sha256=digest,
        embeddings_reused=reuse)
    (out_dir / artefacts.INDEX_MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
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


def load_embeddings(index_dir: str | Path) -> np.ndarray:
    return np.load(Path(index_dir) / artefacts.EMBEDDINGS)
