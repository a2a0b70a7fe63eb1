"""The title structures of a live catalogue: the base's, extended by its deltas' titles, with
the catalogue-wide statistics taken over the live rows only.

`TitleTerms` and `TermVectors` (core/search) hold two kinds of arrays:
- per title: its terms, head phrase, first term, adjacent pairs and character trigrams, as ids.
  These never change for a row, so a delta's titles are parsed alone (a tenth of a second per
  thousand titles, where parsing the whole Home Depot catalogue again takes four seconds) and
  appended to the base's, their ids moved into one merged vocabulary;
- over the catalogue: each trigram bucket's IDF (and so each title's trigram norm), each term's
  vector (the mean embedding of the titles holding it) and IDF. These move with every change,
  so they are computed again here, vectorised, from the live rows alone: a replaced or deleted
  title counts for nothing, as it would not exist in a fresh build of the final catalogue.

So the features of a live catalogue equal a fresh build's of its live titles in row order
(tests/unit/search/test_live_titles.py), except the rounding of sums taken in another order.
Two things are knowingly not the same: the vocabulary keeps the terms of dead titles (a query
term only a dead title holds matches no live candidate, so no feature sees it), and a term's
shown spelling (`surface`, used to display a corrected query) is the base's, new terms taking
their delta's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from fusionrank.core.search.ragged import Ragged, smallest_unsigned
from fusionrank.core.search.term_vectors import TermVectors
from fusionrank.core.search.title_terms import TitleTerms
from fusionrank.core.search.trigrams import CHAR_BUCKETS, norms_of


def extended(base: TitleTerms, titles: Sequence[str], live: np.ndarray) -> TitleTerms:
    """`base`'s rows, then one row per title of `titles`, with the trigram statistics of the
    rows `live` (bool [rows]) marks."""
    merged = _copy(base) if not titles else _merged(base, TitleTerms(titles))
    if len(live) != merged.products:
        raise ValueError(f"the live mask covers {len(live)} rows, the titles {merged.products}")
    _live_trigram_statistics(merged, live)
    return merged


def live_term_vectors(titles: TitleTerms, embeddings, live: np.ndarray) -> TermVectors:
    """`TermVectors.fit` over the live rows, its per-row structures kept for every row: each
    term held by a live title gets the normalised sum of their embeddings, in row order."""
    live_rows = np.flatnonzero(live)
    held = np.unique(titles.title_ids.gather_ids(live_rows)[0])
    term_row = np.full(len(titles.vocabulary), -1, dtype=np.int64)
    term_row[held] = np.arange(len(held))
    title_terms = _mapped(titles.title_ids, term_row)
    head_terms = _mapped(titles.head_tokens, term_row)
    entries, owner = title_terms.gather_ids(live_rows)
    holders = sparse.csr_matrix((np.ones(len(entries), dtype=np.float32), (entries, owner)),
                                shape=(len(held), len(live_rows)))
    vectors = np.asarray(holders @ np.asarray(embeddings[live_rows], dtype=np.float32))
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    titles_holding = np.asarray(holders.sum(axis=1)).ravel()
    idf = np.log((1.0 + len(live_rows)) / (1.0 + titles_holding)).astype(np.float32)
    index = {titles.vocabulary[i]: row for row, i in enumerate(held.tolist())}
    return TermVectors(index, vectors.astype(np.float32), idf, title_terms, head_terms,
                       len(live_rows))


def _copy(base: TitleTerms) -> TitleTerms:
    out = TitleTerms.__new__(TitleTerms)
    out.__dict__.update({k: v for k, v in base.__dict__.items()
                         if k not in ("terms", "heads", "_char_idf", "_log_counts")})
    return out


def _merged(base: TitleTerms, delta: TitleTerms) -> TitleTerms:
    """Both catalogues' rows, base first, over the union of their vocabularies (ids moved; the
    union is sorted, so each row's ids keep their order)."""
    vocabulary = sorted(set(base.vocabulary) | set(delta.vocabulary))
    index = {term: i for i, term in enumerate(vocabulary)}
    moved = [np.array([index[t] for t in part.vocabulary], dtype=np.int64)
             for part in (base, delta)]
    out = TitleTerms.__new__(TitleTerms)
    out.vocabulary, out.index = vocabulary, index
    out.surface = {**delta.surface, **base.surface}
    for name in ("title_ids", "head_ids", "head_tokens"):
        setattr(out, name, _stacked([_mapped(getattr(part, name), ids)
                                     for part, ids in zip((base, delta), moved, strict=True)]))
    out.first_id = np.concatenate([
        np.where(part.first_id >= 0, ids[np.maximum(part.first_id, 0)], -1)
        for part, ids in zip((base, delta), moved, strict=True)]).astype(np.int32)
    # A pair's key is a·V + b over the vocabulary's size V: decoded, moved, encoded again.
    keys = [_moved_pairs(part, ids, len(vocabulary))
            for part, ids in zip((base, delta), moved, strict=True)]
    out.bigram_keys = np.unique(np.concatenate(keys))
    out.bigram_ids = _stacked([
        Ragged(part.bigram_ids.indptr,
               np.searchsorted(out.bigram_keys, own[part.bigram_ids.ids]).astype(np.int32))
        for part, own in zip((base, delta), keys, strict=True)])
    out.char_buckets = np.union1d(base.char_buckets, delta.char_buckets).astype(np.int32)
    out.char_vectors = _stacked([
        Ragged(part.char_vectors.indptr,
               np.searchsorted(out.char_buckets, part.char_buckets[part.char_vectors.ids])
               .astype(np.int32)) for part in (base, delta)])
    counts = np.concatenate([np.asarray(base.char_counts, dtype=np.int64),
                             np.asarray(delta.char_counts, dtype=np.int64)])
    out.char_counts = counts.astype(smallest_unsigned(int(counts.max(initial=0))))
    return out


def _moved_pairs(part: TitleTerms, ids: np.ndarray, size: int) -> np.ndarray:
    """int64: `part`'s pair keys over the merged vocabulary (of `size` terms), in the order of
    its own keys (so its bigram ids index them)."""
    first, second = np.divmod(np.asarray(part.bigram_keys, dtype=np.int64), len(part.vocabulary))
    return ids[first] * size + ids[second]


def _live_trigram_statistics(titles: TitleTerms, live: np.ndarray) -> None:
    """The trigram IDF over the live rows (as `trigrams.idf_of` computes it over a catalogue's
    titles) and every row's norm under it (as `TitleTerms` computes them)."""
    entries, _ = titles.char_vectors.gather(np.flatnonzero(live))
    df = np.bincount(titles.char_buckets[titles.char_vectors.ids[entries]].astype(np.int64),
                     minlength=CHAR_BUCKETS)
    titles.idf = np.log((1 + int(live.sum())) / (1 + df)).astype(np.float32) + 1.0
    buckets = titles.char_buckets[titles.char_vectors.ids].astype(np.int64)
    titles.char_norms = norms_of(titles.char_vectors.indptr, buckets,
                                 np.asarray(titles.char_counts, dtype=np.int64), titles.idf)
    for cached in ("_char_idf", "_log_counts"):
        titles.__dict__.pop(cached, None)


def _mapped(ragged: Ragged, ids: np.ndarray) -> Ragged:
    """`ragged` with each id i replaced by ids[i], entries mapped to -1 dropped."""
    moved = ids[np.asarray(ragged.ids, dtype=np.int64)]
    keep = moved >= 0
    if keep.all():
        return Ragged(ragged.indptr, moved.astype(np.int32))
    kept = np.concatenate([[0], np.cumsum(keep)])
    return Ragged(kept[np.asarray(ragged.indptr, dtype=np.int64)].astype(np.int32),
                  moved[keep].astype(np.int32))


def _stacked(parts: Sequence[Ragged]) -> Ragged:
    """The rows of each part, one after the other."""
    indptr, offset = [np.zeros(1, dtype=np.int64)], 0
    for part in parts:
        indptr.append(np.asarray(part.indptr[1:], dtype=np.int64) + offset)
        offset += int(part.indptr[-1])
    return Ragged(np.concatenate(indptr).astype(np.int32),
                  np.concatenate([np.asarray(p.ids, dtype=np.int32) for p in parts]))
