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
from collections.abc import Mapping

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

    def correct(self, terms: list[str]) -> list[str]:
        out: list[str] = []
        for term in terms:
            out.extend([term] if term in self.vocabulary else self._remembered(term))
        return out

    def _correction(self, term: str) -> tuple[str, ...]:
        runs = RUNS.findall(term)
        if len(runs) > 1 and all(r in self.vocabulary for r in runs):
            return tuple(runs)
        if term.isdigit() or len(term) < MIN_LENGTH:
            return (term,)
        distance = 1 if len(term) < LONG_TERM else 2
        suggestions = self._symspell.lookup(term, Verbosity.TOP, max_edit_distance=distance)
        return (suggestions[0].term,) if suggestions else (term,)
