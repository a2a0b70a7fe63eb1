"""The catalogue index: every product embedded once, stored with its ids and metadata.

An index folder holds
- `embeddings.npy`: float32 [products, dim], unit rows, row i = line i of products.jsonl;
- `products.jsonl`: the catalogue, one JSON object per product;
- `manifest.json`: which encoder (path and SHA-256), which catalogue, when it was built.

Search serves it through `export.search.retrieval`'s ONNX graph; recommend reads it directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.catalogue import Catalogue
from fusionrank.core.encoding import MAX_TITLE_TOKENS, OnnxEncoder, TextEncoder, TextTokenizer
from fusionrank.export.embedding_cache import EmbeddingCache, EmbedReport, embed_titles
from fusionrank.export.encoder import ExportedEncoder
from fusionrank.export.ray_embedding import RayOptions, ray_embedder


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
    titles_embedded: int = 0  # distinct titles embedded by this build (the rest were cached)
    titles_cached: int = 0  # distinct titles found in the embedding cache
    embedding_seconds: float = 0.0


def titles_digest(titles: list[str]) -> str:
    return hashlib.sha256("\n".join(titles).encode("utf-8")).hexdigest()


def build_index(catalogue: Catalogue, encoder: ExportedEncoder, out_dir: str | Path,
                progress: bool = True, previous: str | Path | None = None,
                cache: str | Path | None = None, ray: RayOptions | None = None) -> IndexManifest:
    """Embed the catalogue into `out_dir`. The embeddings of the index in `previous` (default:
    `out_dir` itself) are reused where it embedded these very titles with this very encoder
    file: hard-linked into `out_dir` (never written to), not computed again. Otherwise each
    title is looked up in the embedding cache under `cache` (embedding_cache.py; a temporary one
    if None) and only the titles it lacks are embedded: here, or with `ray` on a Ray cluster
    (ray_embedding.py)."""
    out_dir = Path(out_dir)
    previous = out_dir if previous is None else Path(previous)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = titles_digest(catalogue.titles)
    reuse = unchanged(previous, encoder.sha256, digest)
    embedded = None
    if reuse:
        if previous.resolve() != out_dir.resolve():
            link_or_copy(previous / artefacts.EMBEDDINGS, out_dir / artefacts.EMBEDDINGS)
    else:
        embedded = embed_catalogue(catalogue.titles, encoder, out_dir / artefacts.EMBEDDINGS,
                                   cache, progress, ray)
    catalogue.write_jsonl(out_dir / artefacts.PRODUCTS)
    manifest = IndexManifest(
        encoder_source=encoder.source, encoder_sha256=encoder.sha256,
        catalogue_source=catalogue.source, products=len(catalogue),
        dimension=int(load_embeddings(out_dir).shape[1]),
        built_at=datetime.now(UTC).isoformat(timespec="seconds"), titles_sha256=digest,
        embeddings_reused=reuse,
        titles_embedded=embedded.embedded if embedded else 0,
        titles_cached=embedded.cached if embedded else 0,
        embedding_seconds=round(embedded.seconds, 1) if embedded else 0.0)
    with artefacts.replacing(out_dir / artefacts.INDEX_MANIFEST) as temporary:
        temporary.write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def embed_catalogue(titles: list[str], encoder: ExportedEncoder, out_path: Path,
                    cache: str | Path | None, progress: bool,
                    ray: RayOptions | None = None) -> EmbedReport:
    """Every title's embedding into `out_path`, through the embedding cache under `cache`:
    the titles it lacks embedded here, or on the Ray cluster `ray` names."""
    # Every CPU: ONNX Runtime's default is one thread a physical core, which on a 2-vCPU
    # machine is one thread, half the speed (the results are the same bit for bit).
    text_encoder = TextEncoder(TextTokenizer(encoder.tokenizer_path, MAX_TITLE_TOKENS),
                               OnnxEncoder(encoder.onnx_path, threads=os.cpu_count()))
    embedder = None if ray is None else ray_embedder(
        ray, encoder.tokenizer_path, encoder.onnx_path, MAX_TITLE_TOKENS, text_encoder.batch_size)
    with contextlib.ExitStack() as stack:
        if cache is None:
            cache = stack.enter_context(tempfile.TemporaryDirectory(
                prefix="fusionrank-embeddings-"))
        return embed_titles(titles, text_encoder, EmbeddingCache(cache, encoder.sha256),
                            out_path, progress, embedder=embedder)


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
    """The index's embeddings, memory-mapped (1.5 GB at a million products)."""
    return np.load(Path(index_dir) / artefacts.EMBEDDINGS, mmap_mode="r")
