"""Catalogue embedding on a Ray cluster: an actor pool of ONNX Runtime encoders fed by Ray Data.

    fusionrank build --ray                      # a Ray started on this machine for the build
    fusionrank build --ray 10.0.0.5:6379        # a running cluster's head (`ray start --head`)

The build still decides what to embed and in which order (embedding_cache.py: only the titles
the cache lacks, sorted by token count); Ray only does the embedding. Each row of the dataset is
one encoder batch, so every batch an actor runs is the very batch the single-process build runs,
and the rows come back in order (`preserve_order`): the embeddings, and the cache's parts, are
those of a build without Ray. The actors receive the encoder's files through the object store,
so the cluster's nodes need fusionrank installed (`pip install fusionrank[ray]`, the same image)
but not the build's folders.

Ray is an optional extra (`pip install .[ray]`), imported only when a build asks for it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrank.core.encoding import OnnxEncoder, TextTokenizer, pad
from fusionrank.export.embedding_cache import Embedder

CONNECT_TIMEOUT_S = 5.0  # Ray itself waits minutes for a head that does not answer
BATCHES_PER_CALL = 4  # encoder batches an actor embeds per call: 256 titles, ~0.5 s on one core


class RayUnavailable(RuntimeError):
    """Ray is not installed, or no cluster answers at the address given."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the embedding runs."""

    address: str | None = None  # a cluster's head, HOST:PORT or ray://HOST:PORT; None: local
    actors: int | None = None  # encoder actors; None: one per `threads` CPUs of the cluster
    threads: int = 1  # ONNX Runtime threads in each actor

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise ValueError(f"actors must be at least 1, not {self.actors}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, not {self.threads}")


def preflight(options: RayOptions) -> None:
    """A RayUnavailable now, before any work, if Ray is missing or its cluster is not there."""
    import_ray()
    if options.address is not None:
        check_reachable(options.address)


def check_reachable(address: str) -> None:
    """A RayUnavailable naming `address` if nothing listens there (Ray's own connection
    attempt retries for minutes before it gives up)."""
    if address == "auto":  # Ray finds a cluster started on this machine, or says there is none
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"--ray {address!r}: give the cluster's head as HOST:PORT "
                             "(e.g. 10.0.0.5:6379) or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise RayUnavailable(f"no Ray cluster answers at {address} ({error}); start one with "
                             "`ray start --head` or leave the address out to embed on a Ray "
                             "started here") from None


class RaySession:
    """Ray for the length of a `with`: the cluster at `options.address`, or one started here
    (and stopped after)."""

    def __init__(self, options: RayOptions):
        self.options = options
        self._started = False

    def __enter__(self) -> RaySession:
        ray = import_ray()
        if not ray.is_initialized():
            local = self.options.address is None
            ray.init(address=self.options.address, num_cpus=os.cpu_count() if local else None,
                     include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
            self._started = True
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False  # the build shows its own
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            import_ray().shutdown()

    def actors(self) -> int:
        if self.options.actors is not None:
            return self.options.actors
        cpus = int(import_ray().cluster_resources().get("CPU", 1))
        return max(1, cpus // self.options.threads)


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayUnavailable("--ray needs Ray: pip install 'fusionrank[ray]'") from None
    return ray


class _EncoderActor:
    """One ONNX Runtime encoder, kept for the whole job; `__call__` embeds whole batches."""

    def __init__(self, tokenizer_json: str, onnx_model: bytes, max_tokens: int, threads: int):
        self.tokenizer = TextTokenizer.from_json(tokenizer_json, max_tokens)
        self.encoder = OnnxEncoder(onnx_model, threads)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = [self.encoder(pad(self.tokenizer.token_ids(list(titles))))
                   for titles in rows["titles"]]
        return {"vector": np.concatenate(vectors)}


def ray_embedder(options: RayOptions, tokenizer_path: Path, onnx_path: Path, max_tokens: int,
                 batch_size: int) -> Embedder:
    """An Embedder (embedding_cache.py) that embeds on the cluster `options` names, in encoder
    batches of `batch_size` titles as the single-process build makes them. Ray starts only
    if there is something to embed; a missing Ray or an address nobody answers is refused
    here, before the build goes on."""
    preflight(options)

    def embed(titles: list[str]) -> Iterator[np.ndarray]:
        import ray

        batches = [{"titles": titles[start:start + batch_size]}
                   for start in range(0, len(titles), batch_size)]
        with RaySession(options) as session:
            dataset = ray.data.from_items(batches).map_batches(
                _EncoderActor, batch_size=BATCHES_PER_CALL, batch_format="numpy",
                fn_constructor_kwargs={
                    "tokenizer_json": Path(tokenizer_path).read_text(encoding="utf-8"),
                    "onnx_model": Path(onnx_path).read_bytes(),
                    "max_tokens": max_tokens, "threads": options.threads},
                concurrency=session.actors(), num_cpus=options.threads)
            for rows in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                yield rows["vector"]

    return embed
