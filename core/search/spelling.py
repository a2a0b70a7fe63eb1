"""Query spelling correction against the catalogue's own vocabulary (SymSpell, `symspellpy`).

A quarter of the Home Depot queries carry a term no title contains: typos ("aluminuim",
"shefl") and run-together sizes ("100feet", "1inch"). BM25 matches none of them, and the term
features count them as missing. Each such term is replaced by

    its digit / letter runs, if every run is a title term      "100feet" → "100", "feet"
    else the most frequent title term within edit distance 1    "shefl"   → "shelf"
    (2 from 7 characters on); else it stays as it is

Terms that titles contain are never touched, nor numbers or terms under 4 characters (too
many near neighbours: "12v" vs "12"). The dictionary is built from the titles in well under a
second, so the server builds it on load rather than storing it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping

from symspellpy import SymSpell, Verbosity

RUNS = re.compile(r"\d+|[a-z]+")
MIN_LENGTH = 4  # shorter terms are left alone
LONG_TERM = 7  # from this length on, two edits are allowed
REMEMBERED = 1 << 16  # corrections kept per process (least recently used go first), so a
# server fed endless made-up words does not grow without bound


class QuerySpeller:
    def __init__(self, term_counts: Mapping[str, int]):
        """`term_counts`: each catalogue term and how many titles contain it (the more
        frequent of two equally close terms wins)."""
        self.vocabulary = frozenset(term_counts)
        self._symspell = SymSpell(max_dictionary_edit_distance=2, prefix_length=LONG_TERM)
        for term, count in sorted(term_counts.items()):  # ties resolve the same everywhere
            self._symspell.create_dictionary_entry(term, int(count))
        self._remembered = functools.lru_cache(maxsize=REMEMBERED)(self._correction)
        # A live catalogue's spellers (one per state) ask the base's dictionary the same
        # lookups again and again: remembered here, where they do not change.
        self.suggest = functools.lru_cache(maxsize=REMEMBERED)(self._suggest)
        self.near = functools.lru_cache(maxsize=REMEMBERED)(self._near)

    def known(self, term: str) -> bool:
        """Whether a title holds `term` (then it is never corrected)."""
        return term in self.vocabulary

    def correct(self, terms: list[str]) -> list[str]:
        out: list[str] = []
        for term in terms:
            out.extend([term] if self.known(term) else self._remembered(term))
        return out

    def _suggest(self, term: str, distance: int) -> str | None:
        """The most frequent title term within `distance` edits (None: none)."""
        found = self._symspell.lookup(term, Verbosity.TOP, max_edit_distance=distance)
        return found[0].term if found else None

    def _near(self, term: str, distance: int) -> tuple[tuple[int, str], ...]:
        """Every title term within `distance` edits, with its distance."""
        return tuple((s.distance, s.term) for s in self._symspell.lookup(
            term, Verbosity.ALL, max_edit_distance=distance))

    def _correction(self, term: str) -> tuple[str, ...]:
        runs = RUNS.findall(term)
        if len(runs) > 1 and all(self.known(r) for r in runs):
            return tuple(runs)
        if term.isdigit() or len(term) < MIN_LENGTH:
            return (term,)
        best = self.suggest(term, 1 if len(term) < LONG_TERM else 2)
        return (best,) if best is not None else (term,)


class LiveSpeller(QuerySpeller):
    """The base's speller over a live catalogue's titles (docs/live_catalogue.md): a term is
    known while a live title holds it, and a misspelling goes to the most frequent live term
    near it, new terms of the segments' titles included, with the live counts. Nothing is
    built per state but a dictionary of the segments' new terms: the base's dictionary finds
    the candidates, `frequency` counts their live titles when a query asks."""

    def __init__(self, base: QuerySpeller, frequency: Callable[[str], int],
                 new_terms: Mapping[str, int]):
        self.base = base
        self.count = functools.lru_cache(maxsize=REMEMBERED)(frequency)  # live titles holding it
        self.new = QuerySpeller(new_terms)
        self._remembered = functools.lru_cache(maxsize=REMEMBERED)(self._correction)

    def known(self, term: str) -> bool:
        return self.count(term) > 0

    def suggest(self, term: str, distance: int) -> str | None:
        near = [(d, -self.count(t), t) for d, t in
                (*self.base.near(term, distance), *self.new.near(term, distance))]
        near = [candidate for candidate in near if candidate[1] < 0]  # held by a live title
        if not near:
            return None
        best = min(candidate[:2] for candidate in near)
        tied = [t for d, negative, t in near if (d, negative) == best]
        # Equally near and frequent: the base's own choice where it is one of them (as the
        # speller served before the change), else the first in term order.
        top = self.base.suggest(term, distance)
        return top if top in tied else min(tied)
