"""The title structures of a live catalogue: the base's, extended by its deltas' titles, with
the catalogue-wide statistics taken over the live rows only.

`TitleTerms` and `TermVectors` (core/search) hold two kinds of arrays:
- per title: its terms, head phrase, first term, adjacent pairs and character trigrams, as ids.
  These never change for a row, so a delta's titles are parsed alone (a tenth of a second per
  thousand titles, where parsing the whole Home Depot catalogue again takes four seconds) and
  read after the base's without copying them (`on_base`): the base keeps its ids, the delta's
  new terms, pairs and trigram buckets get the next ones;
- over the catalogue: each trigram bucket's IDF (and so each title's trigram norm), each term's
  vector (the mean embedding of the titles holding it) and IDF. These move with the live rows:
  a replaced or deleted title counts for nothing, as it would not exist in a fresh build of the
  final catalogue. Document frequencies are the base's (counted once per process,
  `TitleBase`) corrected by the rows that died or were added; a term's vector is summed again
  only where its holders changed, over its live holders in row order, as `TermVectors.fit`
  sums it, and the base's vector is kept for every other term; a title's trigram norm is
  computed for the candidates that need it (`RowNorms`), the bits `norms_of` gives.

So the features of a live catalogue equal a fresh build's of its live titles in row order
(tests/unit/search/test_live_titles.py). Knowingly not the same: the vocabulary keeps the terms
of dead titles (a query term only a dead title holds matches no live candidate, so no feature
sees it), and a term's shown spelling (`surface`, to display a corrected query) is the base's,
new terms taking their delta's.
"""

from __future__ import annotations

import functools
import itertools
from collections import ChainMap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from fusionrank.core.search.ragged import (
    Ragged,
    RaggedStack,
    SortedParts,
    Stacked,
    find_sorted,
    smallest_unsigned,
)
from fusionrank.core.search.term_vectors import TermVectors
from fusionrank.core.search.title_terms import TitleTerms
from fusionrank.core.search.trigrams import CHAR_BUCKETS, log_table, norms_of

# A term held by more base titles than this ("in", "white", "steel"...) has its vector moved
# by a change set rather than summed again over every holder: its sum (float64) loses the
# removed titles' embeddings and gains the added ones'. Summing such a term's thousands of
# holders again took most of a state's build; the update differs from a fresh sum by float
# rounding only (tested), and a rare term is still summed again exactly.
EXACT_UP_TO = 100
SUM_CHUNK = 256  # terms summed again at a time (`_summed_again`)
ROW_BLOCK = 65_536  # base rows a block when the common terms' sums are computed
# A live catalogue's pair key is a·WIDE + b for term ids a and b (int32): a key over the
# vocabulary's size, as a base's are, would change with every new term.
WIDE = 1 << 31


class TitleBase:
    """A base's title structures and what extending them needs, computed once per process."""

    def __init__(self, titles: TitleTerms, vectors: TermVectors, embeddings,
                 exact_up_to: int = EXACT_UP_TO):
        self.titles, self.vectors, self.embeddings = titles, vectors, embeddings
        self.rows, self.exact_up_to = titles.products, exact_up_to

    def warm(self) -> None:
        """Every cached structure below, computed now."""
        _ = (self.common, self.char_df, self.holders, self.pair_keys, self.term_rows,
             self.count_ceiling)

    @functools.cached_property
    def common(self) -> tuple[np.ndarray, np.ndarray]:
        """The vector rows of the terms held by more than `exact_up_to` base titles, and the
        float64 sums of their holders' embeddings (as `TermVectors.fit` sums them)."""
        counts = np.diff(np.asarray(self.holders.indptr, np.int64))
        terms = np.flatnonzero(counts > self.exact_up_to)
        entries, owner = self.holders.gather(terms)
        rows = np.asarray(self.holders.ids[entries], dtype=np.int64)
        matrix = sparse.csc_matrix((np.ones(len(rows), dtype=np.float32), (owner, rows)),
                                   shape=(len(terms), self.rows))
        # Block by block: the product vectors may be decoded from an ANN index
        # (core/search/ann.py IndexVectors), which a whole-catalogue read would copy at once.
        sums = np.zeros((len(terms), self.embeddings.shape[1]), dtype=np.float32)
        for start in range(0, self.rows, ROW_BLOCK):
            stop = min(start + ROW_BLOCK, self.rows)
            sums += matrix[:, start:stop] @ np.asarray(self.embeddings[start:stop],
                                                       dtype=np.float32)
        return terms, sums.astype(np.float64)

    @functools.cached_property
    def char_df(self) -> np.ndarray:
        """int64 [char_buckets]: the base titles holding each of its buckets."""
        return np.bincount(np.asarray(self.titles.char_vectors.ids, dtype=np.int64),
                           minlength=len(self.titles.char_buckets))

    @functools.cached_property
    def pair_keys(self) -> np.ndarray:
        """int64: the base's pair keys as a·WIDE + b, in the order of its keys (a·V + b over
        its vocabulary's size V orders pairs as WIDE does), so its pair ids stay."""
        return _moved_pairs(self.titles, np.arange(len(self.titles.vocabulary)), WIDE)

    @functools.cached_property
    def term_rows(self) -> np.ndarray:
        """int64 [base vocabulary]: each base term's row of the base's term vectors (-1: in no
        title)."""
        titles, served = self.titles, self.vectors
        rows = np.full(len(titles.vocabulary), -1, dtype=np.int64)
        for term, row in served.index.items():
            rows[titles.index[term]] = row
        return rows

    @functools.cached_property
    def count_ceiling(self) -> int:
        """The most times a trigram occurs in one base title."""
        return int(self.titles.char_counts.max(initial=1))

    @functools.cached_property
    def holders(self) -> Ragged:
        """Per base term vector row: the base rows holding its term, ascending."""
        terms = self.vectors.title_terms
        owner = np.repeat(np.arange(terms.rows), np.diff(np.asarray(terms.indptr, np.int64)))
        ids = np.asarray(terms.ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")  # row order kept within a term
        counts = np.bincount(ids, minlength=len(self.vectors.vectors))
        return Ragged(np.concatenate([[0], np.cumsum(counts)]), owner[order])


def extended(base: TitleBase, delta: TitleTerms, live: np.ndarray, embeddings,
             previous: tuple[np.ndarray, TermVectors] | None = None
             ) -> tuple[TitleTerms, TermVectors]:
    """`base`'s rows, then the rows of `delta` (the titles the segments added, parsed); the
    statistics of the rows `live` (bool [rows]) marks. `embeddings`: every row's vector (base
    rows, then the new ones). `previous`: the live mask and term vectors of a state this one
    extends (its rows are a beginning of these): a base term whose holders did not change
    since keeps its vector from there rather than being summed again."""
    terms, delta_ids = on_base(base, delta)
    if len(live) != terms.products:
        raise ValueError(f"the live mask covers {len(live)} rows, the titles {terms.products}")
    _live_trigram_statistics(base, terms, live)
    return terms, _live_term_vectors(base, terms, delta, delta_ids, live, embeddings, previous)


class RowNorms:
    """Each title's trigram norm under the live IDF, computed for the rows asked for (as
    `norms_of` computes every row's, with the same bits): a change set moves the IDF of every
    bucket, and a request reads a few hundred titles' norms."""

    def __init__(self, titles: TitleTerms):
        self.titles = titles
        # Each row's norm once computed (NaN: not yet): a state serves many requests.
        self.known = np.full(titles.products, np.nan, dtype=np.float64)

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        wanted = np.unique(rows)
        wanted = wanted[np.isnan(self.known[wanted])]
        if len(wanted):
            vectors = self.titles.char_vectors
            entries, _ = vectors.gather(wanted)
            indptr = np.concatenate([[0], np.cumsum(vectors.lengths(wanted))])
            buckets = np.asarray(self.titles.char_buckets)[vectors.ids[entries]].astype(
                np.int64)
            counts = np.asarray(self.titles.char_counts[entries], dtype=np.int64)
            self.known[wanted] = norms_of(indptr, buckets, counts, self.titles.idf)
        return self.known[rows]


class RowOverlay:
    """Row-indexed vectors: a base array, some of its rows replaced, new rows after it."""

    def __init__(self, base: np.ndarray, rows: np.ndarray, vectors: np.ndarray, total: int):
        self.base, self.total = base, total
        self.where = np.full(total, -1, dtype=np.int64)  # row → its row in `vectors`, or -1
        self.where[rows] = np.arange(len(rows))
        self.rows, self.vectors = rows, vectors

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        own = self.where[rows]
        out = np.empty((*rows.shape, self.base.shape[1]), dtype=np.float32)
        replaced = own >= 0
        out[~replaced] = self.base[rows[~replaced]]
        out[replaced] = self.vectors[own[replaced]]
        return out


def on_base(base: TitleBase, delta: TitleTerms) -> tuple[TitleTerms, np.ndarray]:
    """The base's rows, then the delta's, the base's arrays read where they are (RaggedStack,
    Stacked): the base keeps its term ids, pair ids and trigram columns, the delta's new terms,
    pairs and buckets take the next ones (SortedParts). Time and memory follow the delta, not
    the base: restacking every base title's arrays (`merged`) cost a search process 0.08 s a
    state at 45,782 products and 0.3-2.3 s and ~1.2 GiB of temporaries at a million
    (benchmarks/reports/live_state_build.md has what it costs now). Also answers the delta's
    term ids in the live vocabulary."""
    titles = base.titles
    out = TitleTerms.__new__(TitleTerms)
    terms = _delta_terms(titles, delta)
    out.vocabulary = [*titles.vocabulary, *terms.new]
    out.index = ChainMap(terms.new_index, titles.index)
    ids = terms.ids
    out.surface = ChainMap(titles.surface, delta.surface)  # the base's written forms first
    for name, rows in terms.rows.items():
        setattr(out, name, RaggedStack(getattr(titles, name), rows))
    out.first_id = Stacked(titles.first_id, terms.first_id)
    out.pair_width = WIDE
    keys = _moved_pairs(delta, ids, WIDE)
    place, held = find_sorted(base.pair_keys, keys)
    added = np.unique(keys[~held])
    out.bigram_keys = SortedParts([base.pair_keys, added])
    pair_ids = np.where(held, place, len(base.pair_keys) + np.searchsorted(added, keys))
    out.bigram_ids = RaggedStack(titles.bigram_ids, _sorted_rows(Ragged(
        delta.bigram_ids.indptr,
        pair_ids[np.asarray(delta.bigram_ids.ids, np.int64)].astype(np.int32))))
    # Each row's trigram entries keep their order (the order `tfidf` weighs them in).
    place, held = find_sorted(titles.char_buckets, delta.char_buckets)
    out.char_buckets = SortedParts([titles.char_buckets, delta.char_buckets[~held]])
    columns = np.where(held, place, len(titles.char_buckets) + np.cumsum(~held) - 1)
    out.char_vectors = RaggedStack(titles.char_vectors, Ragged(
        delta.char_vectors.indptr,
        columns[np.asarray(delta.char_vectors.ids, np.int64)].astype(np.int32)))
    out.char_counts = Stacked(titles.char_counts, delta.char_counts)
    # (A cached property, set here: the base's largest count is known, the stacked counts'
    # would be read again at each state.)
    out._log_counts = log_table(max(base.count_ceiling, int(delta.char_counts.max(initial=1))))
    return out, ids


def merged(base: TitleTerms, delta: TitleTerms) -> tuple[TitleTerms, np.ndarray]:
    """Both catalogues' rows, base first, in new arrays: how a state's delta titles gather the
    titles of the segments it adds (`on_base` reads them after the base's). The base's term ids
    stay; the delta's terms take the base's ids, or the next ones for terms the base lacks (in
    sorted order). Also answers the delta's term ids in the merged vocabulary."""
    out = TitleTerms.__new__(TitleTerms)
    terms = _delta_terms(base, delta)
    out.vocabulary = [*base.vocabulary, *terms.new]
    out.index = base.index | terms.new_index
    ids = terms.ids
    out.surface = {**delta.surface, **base.surface}
    for name, rows in terms.rows.items():
        setattr(out, name, _stacked([getattr(base, name), rows]))
    out.first_id = np.concatenate([base.first_id, terms.first_id]).astype(np.int32)
    # A pair's key is a·V + b over the vocabulary's size V: decoded, moved, encoded again.
    size = out.pair_width = len(out.vocabulary)
    base_keys = _moved_pairs(base, np.arange(len(base.vocabulary)), size)
    delta_keys = _moved_pairs(delta, ids, size)
    out.bigram_keys = np.union1d(base_keys, delta_keys)
    base_ids = np.searchsorted(out.bigram_keys, base_keys).astype(np.int32)
    delta_pairs = np.searchsorted(out.bigram_keys, delta_keys).astype(np.int32)
    out.bigram_ids = _stacked([  # the base's keep their order: its keys' order is unchanged
        Ragged(base.bigram_ids.indptr, base_ids[np.asarray(base.bigram_ids.ids, np.int64)]),
        _sorted_rows(Ragged(delta.bigram_ids.indptr,
                            delta_pairs[np.asarray(delta.bigram_ids.ids, np.int64)]))])
    out.char_buckets = np.union1d(base.char_buckets, delta.char_buckets).astype(np.int32)
    # Each row's trigram entries keep their order (the order `tfidf` weighs them in).
    out.char_vectors = _stacked([
        Ragged(part.char_vectors.indptr,
               np.searchsorted(out.char_buckets, part.char_buckets).astype(np.int32)[
                   np.asarray(part.char_vectors.ids, dtype=np.int64)])
        for part in (base, delta)])
    counts = np.concatenate([np.asarray(base.char_counts, dtype=np.int64),
                             np.asarray(delta.char_counts, dtype=np.int64)])
    out.char_counts = counts.astype(smallest_unsigned(int(counts.max(initial=0))))
    return out, ids


@dataclass(frozen=True)
class DeltaTerms:
    """A delta's titles in a vocabulary that extends a base's: what `merged` and `on_base` join
    to the base's, each its own way."""

    new: list[str]  # the terms the base lacks, sorted: their ids follow the base's
    new_index: dict[str, int]  # each new term's id
    ids: np.ndarray  # int64 [delta vocabulary]: each delta term's id (the base's ids stay)
    rows: dict[str, Ragged]  # title_ids, head_ids (ascending in a row), head_tokens (in order)
    first_id: np.ndarray  # int32 [delta rows]: each title's first term id, -1: none


def _delta_terms(base: TitleTerms, delta: TitleTerms) -> DeltaTerms:
    new = sorted(set(delta.vocabulary) - base.index.keys())
    new_index = {term: len(base.vocabulary) + i for i, term in enumerate(new)}
    ids = np.array([base.index[t] if t in base.index else new_index[t]
                    for t in delta.vocabulary], dtype=np.int64)
    rows = {}
    for name, keep_order in (("title_ids", False), ("head_ids", False), ("head_tokens", True)):
        moved = _mapped(getattr(delta, name), ids)
        rows[name] = moved if keep_order else _sorted_rows(moved)
    first_id = np.where(delta.first_id >= 0, ids[np.maximum(delta.first_id, 0)], -1)
    return DeltaTerms(new, new_index, ids, rows, first_id.astype(np.int32))


def _moved_pairs(part: TitleTerms, ids: np.ndarray, size: int) -> np.ndarray:
    """int64: `part`'s pair keys over a vocabulary of `size` terms where its term i is ids[i],
    in the order of its own keys (so its bigram ids index them)."""
    first, second = np.divmod(np.asarray(part.bigram_keys, dtype=np.int64), part.pair_width)
    return ids[first] * size + ids[second]


def _live_trigram_statistics(base: TitleBase, titles: TitleTerms, live: np.ndarray) -> None:
    """The trigram IDF over the live rows (as `trigrams.idf_of` computes it over a catalogue's
    titles) and the norms under it, per row asked for."""
    n = base.rows
    df = np.zeros(len(titles.char_buckets), dtype=np.int64)
    df[:len(base.char_df)] = base.char_df  # the base's buckets come first (`on_base`)
    vectors = titles.char_vectors
    dead, _ = vectors.gather(np.flatnonzero(~live[:n]))
    added, _ = vectors.gather(np.flatnonzero(live[n:]) + n)
    df -= np.bincount(np.asarray(vectors.ids[dead], np.int64), minlength=len(df))
    df += np.bincount(np.asarray(vectors.ids[added], np.int64), minlength=len(df))
    # As `idf_of` computes it over every bucket, element by element; a bucket no live title
    # holds (all but ~15k of the 2²⁰) takes the value of a document frequency of 0.
    values = np.log((1 + int(live.sum())) / (1 + np.concatenate([[0], df]))).astype(
        np.float32) + 1.0
    titles.idf = np.full(CHAR_BUCKETS, values[0], dtype=np.float32)
    titles.idf[np.asarray(titles.char_buckets)] = values[1:]
    titles.char_norms = RowNorms(titles)


def _live_term_vectors(base: TitleBase, titles: TitleTerms, delta: TitleTerms,
                       delta_ids: np.ndarray, live: np.ndarray, embeddings,
                       previous: tuple[np.ndarray, TermVectors] | None) -> TermVectors:
    """`TermVectors.fit` of the live rows: the base's vector rows stay, the delta's new terms
    get the next rows; a term is summed again where its holders changed."""
    n, served = base.rows, base.vectors
    # Every term of the live vocabulary → its vector row (-1: in no title).
    row_of = np.concatenate([base.term_rows,
                             np.full(len(titles.vocabulary) - len(base.term_rows), -1)])
    new = np.unique(delta_ids[np.asarray(delta.title_ids.ids, dtype=np.int64)])
    new = new[row_of[new] < 0]  # the delta's terms no base title holds
    row_of[new] = len(served.vectors) + np.arange(len(new))
    total = len(served.vectors) + len(new)
    delta_rows = row_of[delta_ids]
    title_terms = RaggedStack(served.title_terms,
                              _sorted_rows(_mapped(delta.title_ids, delta_rows)))
    head_terms = RaggedStack(served.head_terms, _mapped(delta.head_tokens, delta_rows))
    dead_base = np.flatnonzero(~live[:n])
    live_delta = np.flatnonzero(live[n:]) + n
    lost, _ = title_terms.gather_ids(dead_base)
    gained, _ = title_terms.gather_ids(live_delta)
    count = np.zeros(total, dtype=np.int64)
    count[:len(served.vectors)] = np.diff(np.asarray(base.holders.indptr, np.int64))
    count -= np.bincount(np.asarray(lost, np.int64), minlength=total)
    count += np.bincount(np.asarray(gained, np.int64), minlength=total)
    changed = np.union1d(lost, gained).astype(np.int64)
    vectors = np.empty((len(changed), served.vectors.shape[1]), dtype=np.float32)
    kept = _unchanged_since(previous, title_terms, changed, live, len(served.vectors))
    if kept.any():
        overlay = previous[1].vectors
        vectors[kept] = overlay.vectors[overlay.where[changed[kept]]]
    if not kept.all():
        vectors[~kept] = _summed(base, title_terms, changed[~kept], live, embeddings)
    # Each term some live title holds → its vector row.
    held = (row_of >= 0) & (count > 0)[np.maximum(row_of, 0)]
    index = dict(zip(itertools.compress(titles.vocabulary, held.tolist()),
                     row_of[held].tolist(), strict=True))
    documents = int(live.sum())
    # As `TermVectors.fit` computes it (its holder counts are float32 sums): the same bits.
    idf = np.log((1.0 + documents) / (1.0 + count.astype(np.float32))).astype(np.float32)
    return TermVectors(index, RowOverlay(served.vectors, changed, vectors, total), idf,
                       title_terms, head_terms, documents)


def _unchanged_since(previous: tuple[np.ndarray, TermVectors] | None, title_terms: Ragged,
                     terms: np.ndarray, live: np.ndarray, base_terms: int) -> np.ndarray:
    """bool [terms]: the base terms (their vector rows are the same in every state) that the
    previous state had summed again and whose holders no row changed since: each term's sum
    reads its own holders alone, so its vector there has the bits it would have here."""
    if previous is None or not isinstance(previous[1].vectors, RowOverlay):
        return np.zeros(len(terms), dtype=bool)
    before, overlay = previous[0], previous[1].vectors
    since = np.concatenate([np.flatnonzero(before & ~live[:len(before)]),
                            np.flatnonzero(live[len(before):]) + len(before)])
    touched, _ = title_terms.gather_ids(since)
    return ((terms < base_terms) & np.isin(terms, overlay.rows)
            & ~np.isin(terms, np.asarray(touched, dtype=np.int64)))


def _summed(base: TitleBase, title_terms: Ragged, terms: np.ndarray, live: np.ndarray,
            embeddings) -> np.ndarray:
    """float32 [terms, d]: each term's normalised sum of its live holders' embeddings; a
    common term's moved from the base's sum (`TitleBase.common`), the others' summed again."""
    common, sums = base.common
    moved = np.isin(terms, common)
    out = np.empty((len(terms), base.embeddings.shape[1]), dtype=np.float32)
    out[~moved] = _summed_again(base, title_terms, terms[~moved], live, embeddings)
    if moved.any():
        out[moved] = _moved(base, title_terms, terms[moved],
                            sums[np.searchsorted(common, terms[moved])], live, embeddings)
    return out


def _moved(base: TitleBase, title_terms: Ragged, terms: np.ndarray, sums: np.ndarray,
           live: np.ndarray, embeddings) -> np.ndarray:
    """The base's sums of `terms` less their dead base holders, plus their live new ones."""
    n = base.rows
    rows = np.concatenate([np.flatnonzero(~live[:n]), np.flatnonzero(live[n:]) + n])
    sign = np.where(rows < n, -1.0, 1.0)  # a dead base holder leaves, a live new one joins
    held, owner = title_terms.gather_ids(rows)
    wanted = np.isin(held, terms)
    term_of, owner = np.searchsorted(terms, held[wanted]), owner[wanted]
    sums = sums.copy()
    # SUM_CHUNK·8 changed rows at a time: their float64 embeddings all at once took ~90 MiB
    # for a set of 10,000 retitles.
    step = SUM_CHUNK * 8
    for start in range(0, len(rows), step):
        part = (owner >= start) & (owner < start + step)
        chunk = rows[start:start + step]
        change = sparse.csr_matrix((sign[owner[part]], (term_of[part], owner[part] - start)),
                                   shape=(len(terms), len(chunk)))
        sums += change @ np.asarray(embeddings[chunk], dtype=np.float64)
    vectors = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return vectors.astype(np.float32)


def _summed_again(base: TitleBase, title_terms: Ragged, terms: np.ndarray, live: np.ndarray,
                  embeddings) -> np.ndarray:
    """Each term's normalised sum over its live holders, in row order, by the sparse product
    `TermVectors.fit` uses: the same bits as a fresh build's. SUM_CHUNK terms at a time, so the
    holders' embeddings gathered at once stay a few MiB (all of them at once took ~100 MiB for
    a set of 1,000 retitles: the rare terms of 2,000 titles are held by most of a catalogue)."""
    n = base.rows
    in_base = terms[terms < len(base.vectors.vectors)]
    base_entries, base_owner = base.holders.gather(in_base)
    base_rows = np.asarray(base.holders.ids[base_entries], dtype=np.int64)
    keep = live[base_rows]
    local = np.searchsorted(terms, in_base)
    delta_rows = np.flatnonzero(live[n:]) + n
    delta_terms, delta_owner = title_terms.gather_ids(delta_rows)
    wanted = np.isin(delta_terms, terms)
    term_of = np.concatenate([local[base_owner[keep]],
                              np.searchsorted(terms, delta_terms[wanted])])
    row_of = np.concatenate([base_rows[keep], delta_rows[delta_owner[wanted]]])
    order = np.lexsort((row_of, term_of))
    term_of, row_of = term_of[order], row_of[order]
    out = np.empty((len(terms), base.embeddings.shape[1]), dtype=np.float32)
    for start in range(0, len(terms), SUM_CHUNK):
        stop = min(start + SUM_CHUNK, len(terms))
        first, last = np.searchsorted(term_of, (start, stop))
        # Each term's entries in row order, as one product over every term orders them: a
        # row of the sparse product sums its entries in that order, so chunks change no bit.
        holders, column = np.unique(row_of[first:last], return_inverse=True)
        matrix = sparse.csr_matrix((np.ones(last - first, dtype=np.float32),
                                    (term_of[first:last] - start, column)),
                                   shape=(stop - start, len(holders)))
        out[start:stop] = np.asarray(matrix @ np.asarray(embeddings[holders],
                                                         dtype=np.float32))
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def _mapped(ragged: Ragged, ids: np.ndarray) -> Ragged:
    """`ragged` with each id i replaced by ids[i], entries mapped to -1 dropped."""
    moved = ids[np.asarray(ragged.ids, dtype=np.int64)]
    keep = moved >= 0
    indptr = np.asarray(ragged.indptr, dtype=np.int64)
    if keep.all():
        return Ragged(indptr.astype(np.int32), moved.astype(np.int32))
    kept = np.concatenate([[0], np.cumsum(keep)])
    return Ragged(kept[indptr].astype(np.int32), moved[keep].astype(np.int32))


def _sorted_rows(ragged: Ragged) -> Ragged:
    """Each row's ids ascending (as TitleTerms stores a title's term and pair ids)."""
    indptr = np.asarray(ragged.indptr, dtype=np.int64)
    owner = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    # One sort of (row, id) keys: a few times faster than np.lexsort of the two (ids are int32
    # and not negative).
    keys = (owner << 32) | np.asarray(ragged.ids, dtype=np.int64)
    keys.sort()
    return Ragged(ragged.indptr, (keys & 0xFFFF_FFFF).astype(np.int32))


def _stacked(parts: Sequence[Ragged]) -> Ragged:
    """The rows of each part, one after the other."""
    indptr, offset = [np.zeros(1, dtype=np.int64)], 0
    for part in parts:
        indptr.append(np.asarray(part.indptr[1:], dtype=np.int64) + offset)
        offset += int(part.indptr[-1])
    return Ragged(np.concatenate(indptr).astype(np.int32),
                  np.concatenate([np.asarray(p.ids, dtype=np.int32) for p in parts]))
