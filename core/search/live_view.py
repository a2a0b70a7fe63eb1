"""One state of a live catalogue as the search steps serve it: the base version's files, and on
them the applied segments (docs/live_catalogue.md).

    base = BaseSearch(version, table, retrieval, runtime)   # what the steps loaded
    view = LiveSearch.build(base, segments)                 # a state: base + segments
    view.retrieval.search(vectors, k); view.runtime.candidates(...); view.table.json(rows)

Every candidate source reads the live mask: dense retrieval asks the base for enough products
that k of them are live and drops the dead ones, then adds the segments' rows by an exact
product; BM25 scores the live rows only (`LiveLexical`); the feature sources' catalogue-wide
statistics are the live rows' (live_titles.py); the priors and the judgement memory follow
each product id to its live row. A view is built whole beside the one being served and then
replaces it (`LiveSource`), so a request is answered from one state.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fusionrank.core.catalogue import Product
from fusionrank.core.live.rows import CatalogueRows
from fusionrank.core.live.segments import LiveBase, LiveFolder, LiveState, Segment
from fusionrank.core.product_table import ProductRows, ProductTable
from fusionrank.core.search.features import FeatureSources
from fusionrank.core.search.judgements import ProductPriors
from fusionrank.core.search.lexical import LexicalIndex, top_k
from fusionrank.core.search.live_lexical import LiveLexical, TermCounts
from fusionrank.core.search.live_titles import TitleBase, extended, merged
from fusionrank.core.search.ragged import Stacked
from fusionrank.core.search.runtime import SearchRuntime
from fusionrank.core.search.spelling import LiveSpeller
from fusionrank.core.search.text import lexical_tokens
from fusionrank.core.search.title_terms import TitleTerms


class RowTable(ProductRows):
    """Product rows as JSON lines: the base's `products.jsonl`, then each segment's, and over
    them the records of the rows updated in place."""

    def __init__(self, tables: Sequence[ProductTable], updated: Mapping[int, Product]):
        self.tables, self.updated = list(tables), updated
        self.starts = np.cumsum([0] + [len(t) for t in self.tables])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, row: int) -> tuple[ProductTable, int]:
        part = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self.tables[part], row - int(self.starts[part])

    def line(self, row: int) -> bytes:
        if (product := self.updated.get(row)) is not None:
            return product.line().encode("utf-8")
        table, own = self._locate(row)
        return table.line(own)

    def field(self, row: int, name: str):
        if (product := self.updated.get(row)) is not None:
            return getattr(product, name)
        table, own = self._locate(row)
        return table.field(own, name)


@dataclass(frozen=True)
class Applied:
    key: tuple[tuple[int, int], ...]  # (sequence, first row) of each segment applied
    rows: CatalogueRows
    delta_titles: TitleTerms | None  # the segments' titles, parsed (None: no runtime)
    delta_counts: TermCounts | None  # their BM25 term counts, merged into one (None: no runtime)
    updated: dict[int, Product]  # row → its product's record, where updated in place
    moved: int  # how many of the segments, from the first, end with the last that added or
    # killed a row (the ones after it updated records only: every row-indexed structure stands)


@dataclass
class BaseSearch:
    """What a search model process loaded from its version folder: the product table, and
    where the process runs them, the dense retrieval and the search runtime."""

    version: str
    table: ProductTable
    live: LiveBase  # the change sets the base holds, and its encoder
    retrieval: object | None = None  # GraphRetrieval or AnnIndex: .search(vectors, k)
    runtime: SearchRuntime | None = None
    _applied: Applied | None = None  # the segments of the last state built, applied

    @functools.cached_property
    def rows(self) -> CatalogueRows:
        return CatalogueRows.of_table(self.table)

    @functools.cached_property
    def term_counts(self) -> TermCounts:
        return TermCounts.of_index(self.runtime.lexical)

    @functools.cached_property
    def titles(self) -> TitleBase:
        sources = self.runtime.sources
        return TitleBase(sources.titles, sources.term_vectors, sources.embeddings)

    def applied(self, segments: Sequence[Segment]) -> Applied:
        """The rows after `segments`, their titles parsed and their BM25 term counts: carried
        on from the last state where it is a beginning of this one (a stream of sets adds a
        few each time), else from the base."""
        done = self._applied
        key = tuple((s.sequence, s.first_row) for s in segments)
        if done is None or key[:len(done.key)] != done.key:
            done = Applied((), self.rows, *((TitleTerms([], statistics=False), TermCounts(
                len(self.table), np.zeros(0, dtype=np.float32), {})) if self.runtime
                else (None, None)), {}, 0)
        rows, terms, counts = done.rows, done.delta_titles, done.delta_counts
        updated, moved = dict(done.updated), done.moved
        new = segments[len(done.key):]
        for position, segment in enumerate(new, start=len(done.key) + 1):
            rows, changed = rows.apply(segment.changes, segment.updated)
            by_id = segment.updates()
            updated.update({row: by_id[i] for i, row in changed.updated.items()})
            moved = position if changed.moved else moved
        appended = [s for s in new if s.rows]
        if terms is not None and appended:
            terms = merged(terms, TitleTerms([t for s in appended for t in s.titles],
                                             statistics=False))[0]
            counts = counts.extended([TermCounts.of_titles(s.titles, s.first_row)
                                      for s in appended])
        self._applied = Applied(key, rows, terms, counts, updated, moved)
        return self._applied

    def warm(self) -> None:
        """Computes now what every state on this base reads and keeps (`rows`, `term_counts`,
        the `titles` indexes): at load, so that neither the first change set's state nor a
        rollout's probe request pays for it (7.7 s at a million products on an idle machine,
        and under load longer than a probe waits)."""
        _ = self.rows
        if self.runtime is not None:
            _ = self.term_counts, self.neutral_prior
            self.titles.warm()

    @functools.cached_property
    def neutral_prior(self) -> float:
        """A product no training judgement names: the mean the build gave unjudged products
        (training/search/serving.py `aligned_priors`)."""
        priors = self.runtime.sources.priors
        unjudged = priors.count == 0
        return float(np.median(priors.mean[unjudged])) if unjudged.any() else \
            float(priors.mean.mean())


class LiveRetrieval:
    """The base's retrieval with its dead rows dropped, and the segments' live rows by an exact
    product: each query's k most similar live rows, best first, ties by the lower row.

    The base is asked for enough products that k of them are live at the base's live share,
    with a margin, and asked again for twice as many where a query still lacks some: the base's
    exact top k' less its dead rows is the exact top of its live rows. (Asking for k plus every
    dead row instead made the 8-bit graph rescore tens of thousands of rows a query once a
    quarter of the base had changed.)"""

    def __init__(self, base, base_rows: int, live: np.ndarray, appended: np.ndarray):
        self.base, self.base_rows, self.live = base, base_rows, live
        self.live_share = max(float(live[:base_rows].mean()), 1e-3) if base_rows else 1.0
        self.delta_rows = np.flatnonzero(live[base_rows:]) + base_rows
        self.delta_vectors = np.ascontiguousarray(appended[self.delta_rows - base_rows])
        self.products = int(live.sum())
        self.base_live = int(live[:base_rows].sum())

    def describe(self) -> str:
        return f"{self.base.describe()}, live"

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        k = min(k, self.products)
        needed = min(k, self.base_live)  # the live base rows a query can need
        wanted = min(self.base_rows, int(np.ceil(needed / self.live_share * 1.25)) + 16)
        while True:
            base_rows, base_similarity = self.base.search(vectors, wanted)
            keep = self.live[base_rows]
            if wanted >= self.base_rows or keep.sum(axis=1).min() >= needed:
                break
            wanted = min(self.base_rows, 2 * wanted)
        delta_similarity = vectors @ self.delta_vectors.T if len(self.delta_rows) else \
            np.zeros((len(vectors), 0), dtype=np.float32)
        rows = np.empty((len(vectors), k), dtype=np.int64)
        similarity = np.empty((len(vectors), k), dtype=np.float32)
        for q in range(len(vectors)):
            # The segments' k best (ties by the lower row: delta_rows ascend) are all of them
            # that can make the k best, so only 2k rows are sorted, not every segment row.
            delta, delta_scores = top_k(delta_similarity[q], k)
            pool = np.concatenate([base_rows[q][keep[q]].astype(np.int64),
                                   self.delta_rows[delta]])
            scores = np.concatenate([base_similarity[q][keep[q]], delta_scores])
            best = np.lexsort((pool, -scores))[:k]
            rows[q], similarity[q] = pool[best], scores[best]
        return rows, similarity


class LiveBM25:
    """The LexicalIndex interface over the live rows: the speller knows the live titles'
    terms (`LiveSpeller`), and BM25 is scored over the live titles (dead rows score -1, below
    every live row, so they never fill a pool)."""

    def __init__(self, base: LexicalIndex, live: LiveLexical):
        self.base, self.live_index = base, live
        self.speller = LiveSpeller(base.speller, live.frequency,
                                   live.new_terms(base.speller.vocabulary))
        self.size = len(live.live)
        self.dead = np.flatnonzero(~live.live)  # once a state, not a pass over every row a query

    def query_terms(self, query: str) -> list[str]:
        return self.speller.correct(lexical_tokens(query))

    def scores(self, terms: list[str]) -> np.ndarray:
        scores = self.live_index.scores(terms)
        scores[self.dead] = -1.0
        return scores


@dataclass
class LiveSearch:
    """A base and its applied segments, as one state the steps serve."""

    state: LiveState
    rows: CatalogueRows
    table: RowTable
    # The live layer over the base's retrieval and runtime; the base's own while no segment
    # has moved a row (only records updated in place); None where the process runs neither.
    retrieval: object | None
    runtime: SearchRuntime | None
    key: tuple[tuple[int, int], ...] = ()  # (sequence, first row) of each segment applied

    @property
    def products(self) -> int:
        return self.rows.products

    @classmethod
    def build(cls, base: BaseSearch, segments: Sequence[Segment],
              state: LiveState | None = None, previous: LiveSearch | None = None
              ) -> LiveSearch:
        """The state of `segments` on `base`; `previous`, the state served before, where it
        is one this one extends, lends it what did not change since."""
        applied = base.applied(segments)
        rows = applied.rows
        table = RowTable([base.table, *(s.products for s in segments if s.products)],
                         applied.updated)
        if applied.moved == 0:
            # The segments only updated records in place (prices, say): the base's own rows
            # serve, and its structures, with no live layer over them.
            return cls(state or LiveState(), rows, table, base.retrieval, base.runtime,
                       applied.key)
        extends = (previous is not None and applied.key[:len(previous.key)] == previous.key)
        if extends and applied.moved <= len(previous.key):
            # Only records changed since: the rows, and every structure indexed by them, are
            # the previous state's.
            return cls(state or LiveState(), rows, table, previous.retrieval, previous.runtime,
                       applied.key)
        vectors = [s.embeddings for s in segments if len(s.embeddings)]
        dimension = vectors[0].shape[1] if vectors else (
            base.runtime.sources.embeddings.shape[1] if base.runtime else 0)
        appended = np.concatenate([np.zeros((0, dimension), np.float32), *vectors])
        retrieval = None if base.retrieval is None else LiveRetrieval(
            base.retrieval, len(base.table), rows.live, appended)
        lends = extends and previous.runtime is not None and previous.runtime is not base.runtime
        runtime = None if base.runtime is None else _live_runtime(
            base, applied, appended,
            (previous.rows.live, previous.runtime.sources.term_vectors) if lends else None)
        return cls(state or LiveState(), rows, table, retrieval, runtime, applied.key)


def _live_runtime(base: BaseSearch, applied: Applied, appended: np.ndarray,
                  previous: tuple[np.ndarray, object] | None) -> SearchRuntime:
    served, rows = base.runtime, applied.rows
    sources = served.sources
    # The base's rows (memory-mapped, or decoded from the ANN index), then the segments'.
    embeddings = Stacked(sources.embeddings, appended, np.float32)
    lexical = LiveBM25(served.lexical, LiveLexical([base.term_counts, applied.delta_counts],
                                                   rows.live))
    terms, term_vectors = extended(base.titles, applied.delta_titles, rows.live, embeddings,
                                   previous)
    in_base = _base_rows(base, rows)
    live_sources = FeatureSources(embeddings, terms, term_vectors, _live_priors(base, in_base),
                                  sources.memory, _memory_rows(base, rows, in_base))
    return SearchRuntime(lexical, live_sources, served.head, served.weights, served.extra)


def _base_rows(base: BaseSearch, rows: CatalogueRows) -> np.ndarray:
    """int64 [rows appended]: the base row of each appended row's product (-1: a product the
    base did not hold)."""
    rows_of = base.rows.row_of
    return np.array([-1 if (row := rows_of(str(product_id))) is None else row
                     for product_id in rows.appended], dtype=np.int64)


def _live_priors(base: BaseSearch, in_base: np.ndarray) -> ProductPriors:
    """A product keeps the priors its training judgements gave it (the build matched them by
    id; its base row holds them), whatever row it has now; a product the base did not hold
    gets the neutral prior."""
    priors = base.runtime.sources.priors
    mean = np.full(len(in_base), base.neutral_prior, dtype=np.float32)
    count = np.zeros(len(in_base), dtype=np.float32)
    known = in_base >= 0
    mean[known], count[known] = priors.mean[in_base[known]], priors.count[in_base[known]]
    return ProductPriors(np.concatenate([priors.mean, mean]),
                         np.concatenate([priors.count, count]))


def _memory_rows(base: BaseSearch, rows: CatalogueRows, in_base: np.ndarray) -> np.ndarray:
    """int64 [rows]: the row the judgement memory knows each row's product by. The memory
    names judged products by their base row, so a product upserted since keeps its base row
    there (its judgements are still its own), and a product the base did not hold its new row,
    which no judgement names (as in a rebuild, whose memory is aligned by id)."""
    n = len(base.table)
    appended = np.arange(n, rows.rows, dtype=np.int64)
    return np.concatenate([np.arange(n, dtype=np.int64),
                           np.where(in_base >= 0, in_base, appended)])


# Under a stream of change sets, a search process builds a new state at most this often (as
# Elasticsearch refreshes an index every second): building one costs it up to tenths of a
# second at 45,782 products (benchmarks/reports/live_state_build.md), which each set would
# otherwise charge to the searches. A set applied after a quiet second is served by the next
# request.
REFRESH_INTERVAL_S = 1.0


class LiveSource:
    """The state a search model process serves: `refresh` (between two requests: one `stat`
    when nothing changed) reads a newly published state and builds its view beside the one
    served, then serves it; `view` is the state the current request reads (None: the base
    alone). The state's segments after what the base holds are served (`LiveState.served_on`);
    a state of another encoder is not: the base alone is, until the new encoder's catalogue
    model has embedded the log again (a deploy of a new encoder)."""

    def __init__(self, folder: LiveFolder, base: BaseSearch, interval_s: float | None = None):
        self.folder, self.base = folder, base
        self.interval_s = REFRESH_INTERVAL_S if interval_s is None else interval_s
        self.view: LiveSearch | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._segments: dict[int, Segment] = {}
        self._built_at = -float("inf")

    def refresh(self) -> LiveSearch | None:
        stamp = self.folder.stamp()
        if stamp == self._stamp or time.monotonic() - self._built_at < self.interval_s:
            return self.view
        state = self.folder.state()
        served = state.served_on(self.base.live)
        if not served:
            view = None
        else:
            segments = self.folder.read_segments(served, len(self.base.table),
                                                 self._segments)
            self._segments = {s.sequence: s for s in segments}
            view = LiveSearch.build(self.base, segments, state, previous=self.view)
        self.view, self._stamp, self._built_at = view, stamp, time.monotonic()
        return view
