"""The catalogue titles' terms as id arrays (`TitleTerms`), and the features that compare a
batch of queries' terms with their candidates' titles in array operations:

  overlap, title_cover, query_terms, last_term, first_term, bigrams, numbers, title_terms
  (TITLE_FEATURES) and, against the title's first term (usually the brand) and its head
  phrase, HEAD_FEATURES; char_cosine compares character trigrams.

A title's head phrase is the words before its first " in ", " with ", " for ", " by ", " - ",
"(" or "," ("Cordless Drill Kit" of "Cordless Drill Kit with Battery"); its last term is
usually the kind of product.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from fusionrank.core.search.ragged import PairTable, Ragged, find_sorted, smallest_unsigned
from fusionrank.core.search.text import STOPWORDS, lexical_tokens, light_stem, query_words
from fusionrank.core.search.trigrams import (
    char_trigrams,
    gram_counts,
    idf_of,
    log_table,
    norms_of,
    tfidf,
)

TITLE_FEATURES = ("overlap", "title_cover", "query_terms", "last_term", "first_term", "bigrams",
                  "numbers", "title_terms")
HEAD_FEATURES = ("brand_match", "kind_match", "kind_pair", "all_found", "missing_terms",
                 "head_overlap", "head_terms")
HEAD_END = re.compile(r"\s(?:in|with|for|by|-)\s|\(|,", re.IGNORECASE)


class TitleTerms:
    """Each catalogue title's terms, head phrase, adjacent-term pairs and character-trigram
    vector, as id arrays, computed once (a few seconds for 50k titles; `fusionrank build`
    saves them, see title_features.py). `term_features` then compares a batch of queries with
    all their candidates in array operations."""

    # What `arrays` holds (and `from_arrays` reads back): the vocabulary and each term's
    # commonest written form (`surface`: terms and words), as STRINGS, these ARRAYS and the
    # RAGGED structures. The rest is derived exactly where it is read: a title's term count and
    # head size are its title_ids' and head_tokens' row lengths, its kind (and the term before)
    # its head_tokens' last ids, and a trigram's weight follows from its count in the title, its
    # bucket's idf and the title's norm (`_char_weights`: 1 byte per trigram, not 8).
    STRINGS = ("vocabulary", "surface_terms", "surface_words")
    ARRAYS = ("first_id", "bigram_keys", "idf", "char_buckets", "char_counts", "char_norms")
    RAGGED = ("title_ids", "head_ids", "head_tokens", "bigram_ids", "char_vectors")
    SAVED = (*STRINGS, *ARRAYS, *(key for name in RAGGED for key in Ragged.names(name)))

    def __init__(self, titles: Sequence[str], statistics: bool = True):
        """`statistics`: the trigram IDF over these titles and each title's norm under it
        (False for a live catalogue's new titles, whose statistics are the live rows':
        live_titles.py)."""
        tokens = [lexical_tokens(t) for t in titles]
        heads = [lexical_tokens(HEAD_END.split(t, 1)[0]) for t in titles]
        self.vocabulary = sorted({t for terms in tokens for t in terms}
                                 | {t for head in heads for t in head})
        self.index = {term: i for i, term in enumerate(self.vocabulary)}
        self.pair_width = len(self.vocabulary)  # a pair's key: a·pair_width + b
        self.surface = _commonest_forms(titles)
        self._keep_terms(tokens, heads)
        self._keep_bigrams(tokens)
        self._keep_char_vectors([char_trigrams(t) for t in titles], statistics)

    def _keep_terms(self, tokens: list[list[str]], heads: list[list[str]]) -> None:
        """Each title's distinct terms, its head phrase and first term, as ids."""
        index = self.index
        self.title_ids = Ragged.of([sorted({index[t] for t in terms}) for terms in tokens],
                                   "title_ids")
        self.head_ids = Ragged.of([sorted({index[t] for t in head}) for head in heads],
                                  "head_ids")
        self.head_tokens = Ragged.of([[index[t] for t in head] for head in heads],  # in order
                                     "head_tokens")
        self.first_id = np.array([index[t[0]] if t else -1 for t in tokens],  # usually the brand
                                 dtype=np.int32)

    def _keep_bigrams(self, tokens: list[list[str]]) -> None:
        """A pair of adjacent terms is one int64 key; its id, the key's place among all
        titles' keys (`bigram_keys`)."""
        pair_keys = [np.unique(self._pair_keys(t)) for t in tokens]
        self.bigram_keys = np.unique(np.concatenate(pair_keys)) if pair_keys else \
            np.zeros(0, np.int64)
        self.bigram_ids = Ragged.of([np.searchsorted(self.bigram_keys, k) for k in pair_keys],
                                    "bigram_ids")

    def _keep_char_vectors(self, grams: list[list[int]], statistics: bool) -> None:
        """The titles' trigram vectors, each entry a bucket's count in the title, in the order
        `tfidf` weighs them (the order char_cosine sums in), with each bucket as its column
        among the buckets the titles hold (`char_buckets`, ~15k of the 2²⁰): a query trigram is
        then looked up in a table that small. `char_norms`: each title's L2 norm, as `tfidf`
        computes it."""
        counts = [gram_counts(gs) for gs in grams]
        buckets = Ragged.of([list(c) for c in counts], "char_vectors")
        buckets_held, columns = np.unique(buckets.ids, return_inverse=True)
        self.char_buckets = buckets_held.astype(np.int32)  # < CHAR_BUCKETS = 2²⁰
        self.char_vectors = Ragged(buckets.indptr, columns.astype(np.int32))
        tally = np.fromiter((n for c in counts for n in c.values()), dtype=np.int64,
                            count=len(columns))
        self.char_counts = tally.astype(smallest_unsigned(tally.max(initial=0)))
        if statistics:
            self.idf = idf_of(grams)
            self.char_norms = norms_of(buckets.indptr, buckets.ids, tally, self.idf)

    def arrays(self) -> dict[str, np.ndarray]:
        """The SAVED arrays: the STRINGS as UTF-8 bytes, each string ended by a NUL."""
        out = {name: _joined(strings, name) for name, strings in (
            ("vocabulary", self.vocabulary), ("surface_terms", list(self.surface)),
            ("surface_words", list(self.surface.values())))}
        out |= {name: getattr(self, name) for name in self.ARRAYS}
        for name in self.RAGGED:
            out |= getattr(self, name).arrays(name)
        return out

    @classmethod
    def from_arrays(cls, saved: Mapping[str, np.ndarray]) -> TitleTerms:
        """What `__init__` computed, read back from `arrays()` instead of recomputed: the
        arrays themselves (memory-mapped where `saved` is), no copy."""
        self = cls.__new__(cls)  # without __init__: nothing is computed
        self.vocabulary = _split(saved["vocabulary"])
        self.index = {term: i for i, term in enumerate(self.vocabulary)}
        self.pair_width = len(self.vocabulary)
        self.surface = dict(zip(_split(saved["surface_terms"]), _split(saved["surface_words"]),
                                strict=True))
        for name in cls.ARRAYS:
            setattr(self, name, saved[name])
        for name in cls.RAGGED:
            setattr(self, name, Ragged.from_arrays(saved, name))
        return self

    @property
    def products(self) -> int:
        return self.title_ids.rows

    @functools.cached_property
    def terms(self) -> list[frozenset[str]]:
        """Each title's distinct terms (TermVectors.fit and negative mining read them)."""
        return [frozenset(self._words(self.title_ids, row)) for row in range(self.products)]

    @functools.cached_property
    def heads(self) -> list[list[str]]:
        """Each title's head phrase, its terms in order ("makita", "cordless", "drill", "kit")."""
        return [self._words(self.head_tokens, row) for row in range(self.products)]

    @functools.cached_property
    def _char_idf(self) -> np.ndarray:
        """float64 [char_buckets]: each held bucket's idf, as `tfidf` reads it (float(idf[g]))."""
        return self.idf[np.asarray(self.char_buckets)].astype(np.float64)

    @functools.cached_property
    def _log_counts(self) -> np.ndarray:
        return log_table(int(self.char_counts.max(initial=1)))

    def _words(self, ragged: Ragged, row: int) -> list[str]:
        return [self.vocabulary[i] for i in ragged.row(row).tolist()]

    def _title_sizes(self, rows: np.ndarray) -> np.ndarray:
        """float32: each title's distinct terms."""
        return self.title_ids.lengths(rows).astype(np.float32)

    def _char_weights(self, entries: np.ndarray, rows: np.ndarray,
                      columns: np.ndarray | None = None) -> np.ndarray:
        """float64: the TF-IDF weight of char_vectors' `entries`, each of catalogue row
        rows[j]: `tfidf`'s sub-linear TF × IDF / norm, the same float64 operations in the same
        order, so the same bits. `columns`: the entries' ids, where the caller has them."""
        counts = self.char_counts[entries]
        if columns is None:
            columns = self.char_vectors.ids[entries]
        return ((1.0 + self._log_counts[counts]) * self._char_idf[columns]
                / self.char_norms[rows])

    def _pair_keys(self, tokens: Sequence[str]) -> np.ndarray:
        """int64 keys of the adjacent pairs of `tokens` whose terms are both known."""
        ids = [self.index.get(t, -1) for t in tokens]
        return np.array([a * self.pair_width + b for a, b in pairwise(ids) if a >= 0 and b >= 0],
                        dtype=np.int64)

    def bigram_id_list(self, pairs: set[tuple[str, str]]) -> list[int]:
        """The ids of the pairs some title holds (the others match nothing)."""
        keys = np.array([self.index[a] * self.pair_width + self.index[b] for a, b in pairs
                         if a in self.index and b in self.index], dtype=np.int64)
        position, held = find_sorted(self.bigram_keys, keys)
        return position[held].tolist()

    def char_cosine(self, queries: Sequence[str], rows: np.ndarray,
                    owner: np.ndarray) -> np.ndarray:
        """float32 [len(rows)]: cosine of each candidate's title and its query (`owner`) in
        character-trigram TF-IDF space, which still matches misspelt or run-together words."""
        query_vectors = [tfidf(char_trigrams(q), self.idf) for q in queries]
        buckets = np.fromiter((g for v in query_vectors for g in v), dtype=np.int64)
        weights = np.fromiter((w for v in query_vectors for w in v.values()), dtype=np.float64,
                              count=len(buckets))
        query = np.repeat(np.arange(len(queries)), [len(v) for v in query_vectors])
        # The query trigrams some title holds, by their column of char_vectors.
        column, held = find_sorted(self.char_buckets, buckets)
        table = PairTable(query[held], column[held], weights[held], len(queries),
                          len(self.char_buckets))
        entries, candidate = self.char_vectors.gather(rows)
        columns = self.char_vectors.ids[entries]
        products = self._char_weights(entries, rows[candidate], columns) * table(
            owner[candidate], columns)
        return np.bincount(candidate, weights=products, minlength=len(rows)).astype(np.float32)

    def term_features(self, tokens: Sequence[list[str]], rows: np.ndarray,
                      owner: np.ndarray) -> dict[str, np.ndarray]:
        """The TITLE_FEATURES and HEAD_FEATURES of every candidate (catalogue `rows`, each of
        query `owner[j]`, whose corrected terms are `tokens[owner[j]]`), by name."""
        query = QueryTerms.of(tokens, self)
        title = _CandidateIds(self.title_ids, rows, owner)
        found = title.count(query.terms).astype(np.float32)  # query terms the title holds
        return (self._title_features(query, title, found, rows, owner)
                | self._head_features(query, found, rows, owner))

    def _title_features(self, query: QueryTerms, title: _CandidateIds, found: np.ndarray,
                        rows: np.ndarray, owner: np.ndarray) -> dict[str, np.ndarray]:
        """The TITLE_FEATURES: the query's terms, term pairs and numbers against the title's."""
        bigrams = _CandidateIds(self.bigram_ids, rows, owner).count(query.bigrams)
        return {
            "overlap": found / np.maximum(query.distinct[owner], 1).astype(np.float32),
            "title_cover": found / np.maximum(self._title_sizes(rows), 1),
            "query_terms": (query.length / 10.0).astype(np.float32)[owner],
            "last_term": title.holds(query.last),
            "first_term": title.holds(query.first),
            "bigrams": _share(bigrams, query.pairs[owner], empty=0.0),
            "numbers": _share(title.count(query.numbers), query.numeric[owner], empty=1.0),
            "title_terms": self._title_sizes(rows) / 20.0,
        }

    def _head_features(self, query: QueryTerms, found: np.ndarray, rows: np.ndarray,
                       owner: np.ndarray) -> dict[str, np.ndarray]:
        """The HEAD_FEATURES: the query's terms against the title's first term (its brand),
        its kind (the head phrase's last term, and the one before) and its head phrase."""
        query_size = query.distinct[owner]
        found_all = found.astype(np.int64)
        # The kind is the head phrase's last term; -1 (nothing) for a title without one.
        kind = query.terms(owner, self.head_tokens.last(rows, default=-1))
        kind_before = query.terms(owner, self.head_tokens.last(rows, default=-1, back=2))
        head_sizes = self.head_tokens.lengths(rows).astype(np.float64)
        pair_size = np.maximum(np.minimum(head_sizes, 2), 1)
        head = _CandidateIds(self.head_ids, rows, owner).count(query.terms)
        return {
            "brand_match": query.terms(owner, self.first_id[rows]).astype(np.float32),
            "kind_match": kind.astype(np.float32),
            "kind_pair": ((kind.astype(np.float64) + kind_before) / pair_size).astype(np.float32),
            "all_found": ((query_size > 0) & (found_all == query_size)).astype(np.float32),
            "missing_terms": ((query_size - found_all) / 5.0).astype(np.float32),
            "head_overlap": (head / np.maximum(query_size, 1)).astype(np.float32),
            "head_terms": (head_sizes / 10.0).astype(np.float32),
        }


@dataclass(frozen=True)
class QueryTerms:
    """A batch of queries' (corrected) terms as lookups over TitleTerms' ids: which terms,
    numeric terms and adjacent term pairs each query holds, and how many."""

    length: np.ndarray  # int64 [queries]: terms, repeats included
    distinct: np.ndarray  # int64 [queries]: distinct terms
    terms: PairTable  # (query, term id): whether the query holds the term
    numbers: PairTable  # the same for its terms with a digit ("18v", "60")
    numeric: np.ndarray  # float32 [queries]: how many distinct terms with a digit
    bigrams: PairTable  # (query, bigram id): whether it holds the title pair adjacently
    pairs: np.ndarray  # float32 [queries]: how many distinct adjacent pairs
    first: np.ndarray  # int64 [queries]: id of its first term; -1 if unknown or none
    last: np.ndarray  # int64 [queries]: id of its last term (usually the kind: "drill")

    @classmethod
    def of(cls, tokens: Sequence[list[str]], titles: TitleTerms) -> QueryTerms:
        index = titles.index
        distinct = [set(t) for t in tokens]
        numbers = [{t for t in d if any(c.isdigit() for c in t)} for d in distinct]
        pairs = [set(pairwise(t)) for t in tokens]
        return cls(
            length=np.array([len(t) for t in tokens], dtype=np.int64),
            distinct=np.array([len(d) for d in distinct], dtype=np.int64),
            terms=PairTable.holding([_known(index, d) for d in distinct],
                                    len(titles.vocabulary)),
            numbers=PairTable.holding([_known(index, d) for d in numbers],
                                      len(titles.vocabulary)),
            numeric=np.array([len(d) for d in numbers], dtype=np.float32),
            bigrams=PairTable.holding([titles.bigram_id_list(p) for p in pairs],
                                      len(titles.bigram_keys)),
            pairs=np.array([len(p) for p in pairs], dtype=np.float32),
            first=np.array([index.get(t[0], -1) if t else -1 for t in tokens], dtype=np.int64),
            last=np.array([index.get(t[-1], -1) if t else -1 for t in tokens], dtype=np.int64))


class _CandidateIds:
    """One Ragged structure's row of every candidate, flat: the ids, the candidate each
    belongs to and that candidate's query."""

    def __init__(self, ragged: Ragged, rows: np.ndarray, owner: np.ndarray):
        self.ids, self.candidate = ragged.gather_ids(rows)
        self.query = owner[self.candidate]
        self.candidates = len(rows)

    def count(self, table: PairTable) -> np.ndarray:
        """float64 [candidates]: how many of its ids its query holds in `table`."""
        return np.bincount(self.candidate, weights=table(self.query, self.ids),
                           minlength=self.candidates)

    def holds(self, wanted: np.ndarray) -> np.ndarray:
        """float32 [candidates]: 1 if its ids include wanted[its query] (-1: nothing)."""
        return np.bincount(self.candidate, weights=self.ids == wanted[self.query],
                           minlength=self.candidates).astype(np.float32)


def _known(index: Mapping[str, int], terms: set[str]) -> list[int]:
    """The ids of the terms some title holds (the others match nothing)."""
    return [index[t] for t in terms if t in index]


def _share(count: np.ndarray, total: np.ndarray, empty: float) -> np.ndarray:
    """float32 count / total; `empty` where total is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, count.astype(np.float32) / total, empty).astype(np.float32)


def _commonest_forms(titles: Sequence[str]) -> dict[str, str]:
    """Each term's commonest written form in the titles ("christma" → "christmas"), to show a
    corrected query in words a shopper reads."""
    written = Counter((light_stem(w), w) for t in titles for w in query_words(t)
                      if w not in STOPWORDS)
    surface: dict[str, str] = {}
    for (term, word), _ in written.most_common():
        surface.setdefault(term, word)
    return surface


def _joined(strings: Sequence[str], name: str) -> np.ndarray:
    """uint8: the strings' UTF-8 bytes, each ended by a NUL (a tenth of a unicode array's size,
    whose every string takes 4 bytes per character of the longest)."""
    if any("\0" in s for s in strings):
        raise ValueError(f"a string of {name} holds a NUL character; cannot save it")
    return np.frombuffer("".join(f"{s}\0" for s in strings).encode("utf-8"), dtype=np.uint8)


def _split(joined: np.ndarray) -> list[str]:
    """The strings `_joined` wrote."""
    return joined.tobytes().decode("utf-8").split("\0")[:-1]
