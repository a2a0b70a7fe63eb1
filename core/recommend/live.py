"""The recommender's catalogue following a live catalogue (docs/live_catalogue.md).

The recommender serves its own catalogue: the products `fusionrank train-recommender` embedded
with its own encoder (the bundled MiniLM, not the search run's) and counted the purchases of.
A live catalogue changes the shop under it, and the recommender follows:

- a **new product** (an id its catalogue lacks) gets a row after the catalogue's, in the order
  the live catalogue first upserted it (`CatalogueChanges`: so the history step and the ranker,
  two processes, number it alike), its title embedded with the recommender's encoder. Nobody
  has bought it: no statistics, no co-purchases, so it is a cold product, and with a cold head
  it competes by text similarity alone (the cold path of core/recommend/runtime.py), before
  anyone buys it. It is counted in a shopper's history like any known product, but its
  purchases reach the statistics only when the recommender is trained again;
- a **retitled** product keeps its row (its purchases stay its own) and takes the new title's
  vector; a product **updated in place** (a price) shows its new row;
- a **deleted** product is withdrawn: never recommended (`Recommender.recommend`).

Each title is embedded once per process (`LiveProducts.vectors`), when a state first names it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from fusionrank.core import artefacts
from fusionrank.core.encoding import TextEncoder
from fusionrank.core.live.segments import CatalogueChanges, LiveFolder, live_folder
from fusionrank.core.recommend.runtime import ProductStats, Recommender

Embed = Callable[[list[str]], np.ndarray]  # titles → float32 [titles, d] unit vectors
ENCODER_FILES = (artefacts.ENCODER, artefacts.TOKENIZER)


@dataclass(frozen=True)
class LiveRows:
    """The recommender's catalogue as of one live state: the base's rows, then new products."""

    embeddings: np.ndarray  # float32 [rows, d]
    product_json: list[str]  # each row's product, as products.jsonl holds it
    product_ids: list[str]  # each row's id
    withdrawn: np.ndarray | None  # bool [rows]: deleted (None: none)

    @property
    def rows(self) -> int:
        return len(self.product_json)


class LiveProducts:
    """A recommender catalogue (`embeddings`, `product_json`: row i = line i) and the encoder
    that embedded it (`embed`; None: none shipped, so new and retitled products cannot be
    embedded and are left as they are, said once on stderr)."""

    def __init__(self, embeddings: np.ndarray, product_json: list[str], embed: Embed | None):
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        self.product_json = product_json
        parsed = [json.loads(line) for line in product_json]
        self.product_ids = [row["product_id"] for row in parsed]
        self.row_of = {product_id: i for i, product_id in enumerate(self.product_ids)}
        self.titles = [row["title"] for row in parsed]
        self.embed = embed
        self.vectors: dict[str, np.ndarray] = {}  # title → its vector, embedded once
        self._warned = False

    def rows(self, changes: CatalogueChanges) -> LiveRows:
        """The catalogue after `changes` (a reader kept up to date by the caller)."""
        new = [p for p in changes.upserted.values() if p.product_id not in self.row_of]
        known = [(self.row_of[p.product_id], p) for p in changes.upserted.values()
                 if p.product_id in self.row_of]
        retitled = [(row, p) for row, p in known if p.title != self.titles[row]]
        if self.embed is None:
            if (new or retitled) and not self._warned:
                print("recommend: this recommender ships no encoder (artefacts made before "
                      "live catalogues were followed): products added since the build are not "
                      "recommended and retitled ones keep their old title's vector; run "
                      "`fusionrank train-recommender`", file=sys.stderr, flush=True)
                self._warned = True
            new, retitled = [], []
        missing = list(dict.fromkeys(p.title for p in (*new, *(p for _, p in retitled))
                                     if p.title not in self.vectors))
        if missing:
            vectors = np.asarray(self.embed(missing), dtype=np.float32)
            self.vectors.update(zip(missing, vectors, strict=True))
        embeddings = self.embeddings
        if new or retitled:
            embeddings = np.concatenate([self.embeddings, np.zeros(
                (len(new), self.embeddings.shape[1]), np.float32)])
            for row, product in retitled:
                embeddings[row] = self.vectors[product.title]
            for i, product in enumerate(new):
                embeddings[len(self.embeddings) + i] = self.vectors[product.title]
        lines = list(self.product_json)
        for row, product in known:
            lines[row] = product.line()
        lines += [p.line() for p in new]
        row_of = {p.product_id: len(self.product_json) + i for i, p in enumerate(new)}
        gone = [row for product_id in changes.deleted
                if (row := self.row_of.get(product_id, row_of.get(product_id))) is not None]
        withdrawn = None
        if gone:
            withdrawn = np.zeros(len(lines), dtype=bool)
            withdrawn[gone] = True
        return LiveRows(embeddings, lines, [*self.product_ids, *row_of], withdrawn)


class Copurchase:
    """The base's co-purchase cosines over a grown catalogue: a product the base does not hold
    was bought with nothing yet (0), without copying the [products, products] matrix."""

    def __init__(self, base: np.ndarray, rows: int):
        self.base, self.rows = base, rows

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), self.rows), dtype=self.base.dtype)
        held = rows < len(self.base)
        out[held, :len(self.base)] = self.base[rows[held]]
        return out


def grown(recommender: Recommender, rows: LiveRows) -> Recommender:
    """`recommender` over the live catalogue's rows: its statistics and co-purchases, zero for
    the new products (never bought: cold), with its heads, weights and calibration."""
    extra = rows.rows - len(recommender.embeddings)
    stats = ProductStats(**{f.name: np.concatenate([getattr(recommender.stats, f.name),
                                                    np.zeros(extra)])
                            for f in fields(ProductStats)})
    copurchase = Copurchase(recommender.copurchase, rows.rows) if extra else \
        recommender.copurchase
    return Recommender(rows.embeddings, rows.product_json, stats, copurchase,
                       recommender.config, recommender.weights, recommender.head,
                       recommender.cold_head, recommender.cold_fit)


def folder_encoder(folder: Path) -> Embed | None:
    """The encoder a recommender folder ships (`write_serving` copies the one that embedded its
    catalogue), loaded when first called; None where the folder has none."""
    if not all((folder / name).is_file() for name in ENCODER_FILES):
        return None
    loaded: list[TextEncoder] = []

    def embed(titles: list[str]) -> np.ndarray:
        if not loaded:  # (a process whose live catalogue adds nothing never loads it)
            loaded.append(TextEncoder.titles_of(folder, 1))
        return loaded[0].encode(titles)

    return embed


class LiveCatalogue:
    """A recommend step's view of the live folder beside its repository: the rows as of the
    published state, made again only when the state changes (one `stat` a batch)."""

    def __init__(self, version_folder: Path, products: LiveProducts):
        self.folder = LiveFolder(live_folder(version_folder))
        self.changes = CatalogueChanges(self.folder)
        self.products = products
        self._stamp: tuple | None = None
        self._rows: LiveRows | None = None

    def rows(self) -> LiveRows | None:
        """None while the live catalogue has changed nothing (or there is none)."""
        stamp = self.folder.stamp()
        if stamp != self._stamp:
            changes = self.changes.update(self.folder.state())
            self._rows = self.products.rows(changes) \
                if changes.upserted or changes.deleted else None
            self._stamp = stamp
        return self._rows
