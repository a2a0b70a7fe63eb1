"""How closely each query term matches its candidates' title terms by meaning (`TermVectors`):
a close word, such as "faucet" for "tap", counts where an exact match does not.

TERM_VECTOR_FEATURES, per (query, candidate) pair, where a query term's match is the cosine of
its vector and its nearest title term's:
  weakest_term      the worst-matched query term's match
  term_match        the mean match of the query's terms
  kind_similarity   the title's kind (last head-phrase term) against its nearest query term
  last_term_match   the query's last term's match (usually the product kind: "drill")
  first_term_match  its first term's
  weak_terms        the share of query terms matched below WEAK_MATCH
  idf_term_match    the mean match weighted by each query term's IDF
  head_cover        each head-phrase term against its nearest query term, averaged
  second_weakest    the second-worst match (the worst again for a one-term query)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from fusionrank.core.search.ragged import Ragged, distinct, segment_reduce
from fusionrank.core.search.title_terms import TitleTerms

TERM_VECTOR_FEATURES = ("weakest_term", "term_match", "kind_similarity", "last_term_match",
                        "first_term_match", "weak_terms", "idf_term_match", "head_cover",
                        "second_weakest")
WEAK_MATCH = 0.6  # a query term whose nearest title term is further than this is "weak"


@dataclass
class TermVectors:
    """A unit vector for every term of the catalogue's titles: the mean embedding of the
    titles that hold it. Made from the catalogue embeddings alone (under a second for 50k
    titles; `fusionrank build` saves them beside TitleTerms, see title_features.py), so no
    word needs encoding at query time. A query term no title holds has none,
    and matches nothing."""

    index: dict[str, int]  # term → row of `vectors`
    vectors: np.ndarray  # float32 [terms, d]
    idf: np.ndarray  # float32 [terms]
    title_terms: Ragged  # per catalogue row: its terms' rows in `vectors`, ascending
    head_terms: Ragged  # per catalogue row: its head phrase's, in order
    # Titles the statistics were taken over (None: every row; a live catalogue's rows include
    # replaced and deleted titles, core/search/live_titles.py).
    documents: int | None = None

    # What `arrays` holds: its terms as ids of the titles' vocabulary, and its title_terms and
    # head_terms only where they differ from the titles' title_ids and head_tokens (OPTIONAL):
    # where every term of the vocabulary is some title's (the usual case) they are the same
    # arrays, saved once.
    SAVED = ("terms", "vectors", "idf")
    OPTIONAL = (*Ragged.names("title_terms"), *Ragged.names("head_terms"))

    @classmethod
    def fit(cls, titles: TitleTerms, catalogue: np.ndarray) -> TermVectors:
        vocabulary = sorted({term for terms in titles.terms for term in terms})
        index = {term: i for i, term in enumerate(vocabulary)}
        title_terms = Ragged.of([sorted(index[t] for t in terms) for terms in titles.terms],
                                "title_terms")
        head_terms = Ragged.of([[index[t] for t in head if t in index] for head in titles.heads],
                               "head_terms")
        holders = sparse.csr_matrix(
            (np.ones(len(title_terms.ids), dtype=np.float32),
             (title_terms.ids, np.repeat(np.arange(len(titles.terms)),
                                         np.diff(title_terms.indptr)))),
            shape=(len(vocabulary), len(titles.terms)))
        vectors = np.asarray(holders @ np.asarray(catalogue, dtype=np.float32))
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        titles_holding = np.asarray(holders.sum(axis=1)).ravel()
        idf = np.log((1.0 + len(titles.terms)) / (1.0 + titles_holding)).astype(np.float32)
        return cls(index, vectors.astype(np.float32), idf, title_terms, head_terms)

    def arrays(self, titles: TitleTerms) -> dict[str, np.ndarray]:
        """The SAVED arrays (and those OPTIONAL ones that differ from `titles`' arrays):
        `index` as its terms' ids in `titles`' vocabulary, in row order."""
        terms = sorted(self.index, key=self.index.__getitem__)
        out = {"terms": np.array([titles.index[t] for t in terms], dtype=np.int32),
               "vectors": self.vectors, "idf": self.idf}
        for name, own, shared in (("title_terms", self.title_terms, titles.title_ids),
                                  ("head_terms", self.head_terms, titles.head_tokens)):
            if not (np.array_equal(own.indptr, shared.indptr) and np.array_equal(own.ids,
                                                                                  shared.ids)):
                out |= own.arrays(name)
        return out

    @classmethod
    def from_arrays(cls, saved: Mapping[str, np.ndarray], titles: TitleTerms) -> TermVectors:
        """What `arrays(titles)` saved; an absent title_terms or head_terms is `titles`'."""
        vocabulary = titles.vocabulary
        return cls({vocabulary[i]: row for row, i in enumerate(saved["terms"].tolist())},
                   saved["vectors"], saved["idf"],
                   Ragged.from_arrays(saved, "title_terms") if "title_terms.ids" in saved
                   else titles.title_ids,
                   Ragged.from_arrays(saved, "head_terms") if "head_terms.ids" in saved
                   else titles.head_tokens)

    def features(self, tokens: Sequence[list[str]], rows: np.ndarray,
                 sizes: Sequence[int]) -> np.ndarray:
        """float32 [len(rows), len(TERM_VECTOR_FEATURES)] for the candidates of a batch of
        queries: query i's (corrected) terms are `tokens[i]`, its candidates the next
        `sizes[i]` catalogue `rows`. Array operations over the whole batch, but for one
        matrix product per query: its term vectors against every distinct term its candidates'
        titles hold. That product has the same operands whatever the batch, so a query's
        features do not depend on the queries beside it, bit for bit (the head's trees split
        on them)."""
        # Each query's distinct terms in order, as rows of `vectors` (-1: no title holds it).
        known = [np.array([self.index.get(t, -1) for t in dict.fromkeys(query)], dtype=np.int64)
                 for query in tokens]
        term_count = np.array([len(k) for k in known], dtype=np.int64)
        if len(rows) == 0 or term_count.max(initial=0) == 0:
            return np.zeros((len(rows), len(TERM_VECTOR_FEATURES)), dtype=np.float32)
        owner = np.repeat(np.arange(len(known)), sizes)
        keyed = self._candidate_terms(rows, owner, len(known))
        cosine = self._cosines(known, keyed, int(term_count.max()))
        matches = _Matches.of(cosine, keyed, term_count[owner])
        columns = matches.columns(keyed) | {
            "idf_term_match": _idf_match(matches.best, [self._idf_weights(k) for k in known],
                                         term_count, sizes)}
        out = np.stack([columns[name] for name in TERM_VECTOR_FEATURES],
                       axis=1).astype(np.float32)
        out[(keyed.held == 0) | (matches.count == 0)] = 0.0  # a title without terms: nothing
        return out

    def _candidate_terms(self, rows: np.ndarray, owner: np.ndarray,
                         queries: int) -> _CandidateTerms:
        """Every distinct (query, term) among the candidates' title terms, head phrases and
        kinds, as keys sorted by query, then term (each query's terms as np.unique of its own
        would give them), and each candidate term's key."""
        title_entries, title_owner = self.title_terms.gather(rows)
        head_entries, head_owner = self.head_terms.gather(rows)
        head_size = self.head_terms.lengths(rows)
        kind = self.head_terms.last(rows)  # term 0 for a title without a head phrase: masked
        wanted = np.concatenate([self.title_terms.ids[title_entries],
                                 self.head_terms.ids[head_entries], kind])
        wanted_owner = np.concatenate([owner[title_owner], owner[head_owner], owner])
        space = len(self.vectors)
        keys, position = distinct(wanted_owner * space + wanted, queries * space)
        key_owner, key_term = np.divmod(keys, space)
        title, head, kinds = np.split(position, np.cumsum([len(title_entries),
                                                           len(head_entries)]))
        return _CandidateTerms(key_term, np.searchsorted(key_owner, np.arange(queries + 1)),
                               title, head, kinds, self.title_terms.lengths(rows), head_size)

    def _cosines(self, known: list[np.ndarray], keyed: _CandidateTerms,
                 longest: int) -> np.ndarray:
        """float32 [longest, keys]: each query term against each of its query's keys' terms;
        -inf below a query's last term, and 0 for a term no title holds. One matrix product
        per query, whose operands do not depend on the batch."""
        cosine = np.full((longest, len(keyed.key_term)), -np.inf, dtype=np.float32)
        for i, ids in enumerate(known):
            part = slice(keyed.key_bounds[i], keyed.key_bounds[i + 1])
            if len(ids) and part.start < part.stop:
                query = np.where(ids[:, None] >= 0, self.vectors[ids], 0.0).astype(np.float32)
                cosine[:len(ids), part] = query @ self.vectors[keyed.key_term[part]].T
        return cosine

    def _idf_weights(self, ids: np.ndarray) -> np.ndarray:
        """float32: each query term's IDF; a term no title holds gets the highest possible."""
        # The idf of a term no title holds.
        unseen = np.log1p(self.title_terms.rows if self.documents is None else self.documents)
        return np.where(ids >= 0, self.idf[ids], unseen).astype(np.float32)


@dataclass(frozen=True)
class _CandidateTerms:
    """A batch's candidate terms keyed by (query, term): see TermVectors._candidate_terms."""

    key_term: np.ndarray  # int64 [keys]: the term (row of `vectors`) of each key
    key_bounds: np.ndarray  # [queries + 1]: query i's keys are key_bounds[i]:key_bounds[i + 1]
    title: np.ndarray  # the key of each candidate's title terms, candidate after candidate
    head: np.ndarray  # the key of each candidate's head-phrase terms
    kind: np.ndarray  # [candidates]: the key of each candidate's kind
    held: np.ndarray  # int64 [candidates]: how many title terms each holds
    head_size: np.ndarray  # int64 [candidates]: how many head-phrase terms


@dataclass(frozen=True)
class _Matches:
    """Each query term's match with each of its candidates: `best` [longest, candidates], the
    cosine of its nearest title term (valid only above the query's term count); `nearest`
    [keys], each key's term against its nearest query term."""

    best: np.ndarray
    nearest: np.ndarray
    count: np.ndarray  # int64 [candidates]: its query's distinct terms
    valid: np.ndarray  # bool [longest, candidates]: row t < count

    @classmethod
    def of(cls, cosine: np.ndarray, keyed: _CandidateTerms, count: np.ndarray) -> _Matches:
        best = segment_reduce(np.maximum, cosine[:, keyed.title], keyed.held)
        valid = np.arange(len(cosine))[:, None] < count
        return cls(best, cosine.max(axis=0), count, valid)

    def columns(self, keyed: _CandidateTerms) -> dict[str, np.ndarray]:
        """Every TERM_VECTOR_FEATURES column but idf_term_match, by name (queries without
        terms give nan or inf here; `features` zeroes them)."""
        best, valid, count = self.best, self.valid, self.count
        ordered = np.sort(np.where(valid, best, np.inf), axis=0)  # weakest match first
        last = np.maximum(count - 1, 0)
        candidates = np.arange(best.shape[1])
        head_cover = segment_reduce(np.add, self.nearest[keyed.head][None], keyed.head_size)[0] \
            / np.maximum(keyed.head_size, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "weakest_term": ordered[0],
                "term_match": np.where(valid, best, 0.0).sum(axis=0) / count.astype(np.float32),
                "kind_similarity": np.where(keyed.head_size > 0, self.nearest[keyed.kind], 0),
                "last_term_match": best[last, candidates],
                "first_term_match": best[0],
                "weak_terms": ((best < WEAK_MATCH) & valid).sum(axis=0) / count,
                "head_cover": head_cover,
                "second_weakest": ordered[np.minimum(1, last), candidates],
            }


def _idf_match(best: np.ndarray, weights: list[np.ndarray], term_count: np.ndarray,
               sizes: Sequence[int]) -> np.ndarray:
    """The IDF-weighted mean match of each candidate's query terms, query by query (a vector
    product whose operands do not depend on the batch)."""
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.concatenate([
            weights[i] @ np.ascontiguousarray(best[:term_count[i], bounds[i]:bounds[i + 1]])
            / max(float(weights[i].sum()), 1e-6) for i in range(len(weights))])
