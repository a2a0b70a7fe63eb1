"""Every artefact's file name, defined once.

Training writes these files, export writes the ONNX graphs among them, `fusionrank build` places
them in the model repository's version folders, and the serving runtime reads them there, all
under the same names. A Python-backend model's version folder holds the files its step reads.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

# The sentence encoder (search queries, catalogue titles, shoppers' purchases).
ENCODER = "encoder.onnx"  # token ids → unit embedding (pooling and L2 norm inside the graph)
ENCODER_INT8 = "encoder.int8.onnx"  # its INT8 twin (export/quantize.py)
TOKENIZER = "tokenizer.json"  # the encoder's WordPiece tokenizer
RERANKER = "reranker.onnx"  # (query, title) pair tokens → relevance logit (core/search/reranker.py)
RERANKER_INT8 = "reranker.int8.onnx"  # its INT8 twin
RERANKER_GROUPED = "reranker.grouped.onnx"  # [queries, N, tokens] → [queries, N] (GPU, native)
RERANKER_SPEC = "reranker.json"  # how its pairs are tokenised, its depth and weight

# A catalogue index: row i of every array is line i of PRODUCTS.
EMBEDDINGS = "embeddings.npy"  # float32 [products, d], unit rows
PRODUCTS = "products.jsonl"  # one JSON object per product
INDEX_MANIFEST = "manifest.json"  # which encoder and which titles the embeddings came from
LIVE_BASE = "live_base.json"  # a live catalogue's base: the change sets it holds, its encoder

FUSION_WEIGHTS = "ranking.json"  # FusionWeights: S = Σ wᵢ·signalᵢ (search and recommend)
REPOSITORY_MANIFEST = "fusionrank.json"  # what a built model repository serves, from what

# Search: a `fusionrank train` run folder, and the search models' version folders.
RUN_MANIFEST = "run.json"  # data, split, configuration and results of a training run
RETRIEVAL = "retrieval.onnx"  # catalogue MatMul + TopK
RETRIEVAL_INT8 = "retrieval.int8.onnx"  # its INT8 twin, rescored exactly (CPU, precision int8)
RETRIEVAL_FIXED_K = "retrieval.fixed_k.onnx"  # the same, K a constant (GPU repository)
ANN_INDEX = "ann.faiss"  # FAISS ANN index of EMBEDDINGS (large catalogues: core/search/ann.py)
ANN_RECORD = "ann.json"  # its build parameters, search settings and SHA-256
ANN_ROWS = "ann_rows.npy"  # int32 [index entries]: each entry's catalogue row, -1 if stale
ANN_KEYS = "ann_keys.npy"  # uint64 [index entries]: a digest of each entry's vector (build only)
LEXICAL = "lexical.npz"  # BM25 over the titles (LexicalIndex)
PRIORS = "priors.npy"  # per product: smoothed mean grade and judgement count (ProductPriors)
MEMORY = "memory.npz"  # the training judgements (JudgementMemory)
TITLE_FEATURES = "title_features.npz"  # TitleTerms + TermVectors of the served titles, saved
# at build so the ranker need not compute them at load (title_features.py)
FEEDBACK_HEAD = "feedback_head.onnx"  # networks + boosted trees → predicted grade
SEARCH_RUN_FILES = (LEXICAL, PRIORS, MEMORY, FEEDBACK_HEAD, FUSION_WEIGHTS)

# Recommend: what `fusionrank train-recommender` writes to serve (<out>/serving*).
PRODUCT_STATS = "product_stats.npz"  # buyers per product and window (ProductStats)
COPURCHASE = "copurchase.npy"  # float16 item-item co-purchase cosine
RECOMMEND_HEAD = "recommend_head.onnx"  # behavioural features + embeddings → logit
RECOMMENDER_CONFIG = "recommender.json"  # RecommenderConfig
RECOMMEND_FILES = (EMBEDDINGS, PRODUCTS, PRODUCT_STATS, COPURCHASE, RECOMMEND_HEAD,
                   FUSION_WEIGHTS, RECOMMENDER_CONFIG)
# Cold start (optional: a folder without them ranks every product with the one head).
COLD_HEAD = "cold_head.onnx"  # the same inputs → logit, trained on rarely bought products only
COLD_START = "cold_start.json"  # ColdStart: how a cold logit maps onto the warm score's scale
RECOMMEND_SERVING = "serving"  # statistics as of the test cut: the evaluated artefact
RECOMMEND_SERVING_LATEST = "serving-latest"  # as of the end of the data: what `build` serves

# Sentiment: what `fusionrank train-sentiment` exports (<out>/onnx).
SENTIMENT_MODEL = "sentiment.onnx"  # token ids → class probabilities (softmax inside)
SENTIMENT_RECORD = "sentiment.json"  # classes, max_tokens, checksum and parity of the export
SENTIMENT_FILES = (SENTIMENT_MODEL, TOKENIZER, SENTIMENT_RECORD)
SENTIMENT_EXPORT = "onnx"  # the folder of SENTIMENT_FILES under train-sentiment's --out


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder: str | Path) -> dict[str, str]:
    """{path relative to `folder`: SHA-256} of every file under it, in name order, bytecode
    (__pycache__) left out: what a folder holds, to compare two folders or one over time."""
    folder = Path(folder)
    return {str(path.relative_to(folder)): file_sha256(path)
            for path in sorted(folder.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts}


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """`target` (not there yet) as a new name of `source`: a hard link, shares no bytes that
    anything writes into, since every writer here replaces files; a copy across file systems
    or where hard links are not allowed. Also a `shutil.copytree` copy_function."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


class ArtefactError(ValueError):
    """An artefact file that cannot be what it should be (truncated, of the wrong shape, missing
    an array, not the file the build placed); the message names the file. A model's load stops
    on it."""


SHA256_MANIFEST = "sha256.json"  # in a version folder: {file name: SHA-256} of its artefacts


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary name beside `path` to write a new file under; renamed over `path` when the
    block completes, removed when it fails. A file is thus replaced, never written into: a
    deployed model repository may hard-link the old one (`fusionrank deploy`), and must keep
    it as it was."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_manifest(folder: str | Path, names: Iterable[str]) -> Path:
    """Record the SHA-256 of each named file of `folder` in its SHA256_MANIFEST (at build)."""
    folder = Path(folder)
    digests = {name: file_sha256(folder / name) for name in sorted(names)}
    path = folder / SHA256_MANIFEST
    with replacing(path) as temporary:
        temporary.write_text(json.dumps(digests, indent=1) + "\n", encoding="utf-8")
    return path


def check_manifest(folder: str | Path) -> None:
    """At a model's load: every file `folder`'s SHA256_MANIFEST lists is there, with the digest
    recorded at build; an ArtefactError naming the first that is not (nothing to check in a
    folder without a manifest, as built before manifests)."""
    folder = Path(folder)
    path = folder / SHA256_MANIFEST
    if not path.is_file():
        return
    try:
        digests = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ArtefactError(f"{path} is not a readable manifest ({error}); rebuild the "
                            "repository") from error
    for name, expected in digests.items():
        if not (folder / name).is_file():
            raise ArtefactError(f"{folder / name} is missing (listed in {path}); rebuild the "
                                "repository")
        if file_sha256(folder / name) != expected:
            raise ArtefactError(f"{folder / name} does not match its SHA-256 in {path} (changed "
                                "or damaged since the build); rebuild the repository")


def load_array(path: str | Path, shape: tuple[int | None, ...] | None = None,
               mmap: bool = False) -> np.ndarray:
    """A `.npy` array (never pickled objects) of `shape` where given (None: any length along
    that axis); an ArtefactError naming the file where it is unreadable or of another shape."""
    path = Path(path)
    try:
        if mmap:
            status = path.stat()
            array = _mapped(str(path), status.st_dev, status.st_ino, status.st_mtime_ns)
        else:
            array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ArtefactError(f"{path} is not a readable .npy array ({error}); rebuild it"
                            ) from error
    if shape is not None and (array.ndim != len(shape) or any(
            n is not None and n != got for n, got in zip(shape, array.shape, strict=True))):
        raise ArtefactError(f"{path} holds an array of shape {list(array.shape)}; expected "
                            f"{['any' if n is None else n for n in shape]}")
    return array


@functools.lru_cache(maxsize=32)
def _mapped(path: str, device: int, inode: int, modified_ns: int) -> np.ndarray:
    """One read-only mapping per file and process: two steps of one model process that read
    the same file (the catalogue embeddings: retrieval and scoring) then share its pages, and
    the process's resident size counts them once. Keyed by the file itself, so a file replaced
    at the same path is mapped anew. A plain ndarray over the mapping: np.memmap's own
    indexing costs Python calls on every gather of the serving path."""
    return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)


def load_arrays(path: str | Path, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The named arrays of a `.npz` file (never pickled objects); an ArtefactError naming the
    file where it is unreadable or lacks one of them."""
    path = Path(path)
    names = list(names)
    try:
        with np.load(path, allow_pickle=False) as saved:
            missing = [name for name in names if name not in saved.files]
            if missing:
                raise ArtefactError(f"{path} lacks the array(s) {', '.join(missing)}; rebuild it")
            return {name: saved[name] for name in names}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, ArtefactError):
            raise
        raise ArtefactError(f"{path} is not a readable .npz archive ({error}); rebuild it"
                            ) from error
