"""Text normalisation for lexical matching: the same terms for titles and queries, in BM25,
the spelling correction and the feedback features."""

from __future__ import annotations

import functools
import re

TOKEN_PATTERN = re.compile(r"[a-z0-9]+")
# The Home Depot titles are full of units and sizes ("1/2 in.", "60 ft"): single characters and
# digits carry meaning there, so only a handful of English function words are dropped.
STOPWORDS = frozenset([
    "a", "an", "and", "the", "of", "for", "to", "in", "on", "with", "by", "or", "at", "from",
    "is", "are", "as", "be", "it", "this", "that"])


# Titles repeat their words: a million of them make ~11 million calls for ~10⁵ distinct words.
@functools.lru_cache(maxsize=1 << 18)
def light_stem(word: str) -> str:
    """'drills' → 'drill', 'boxes' → 'box'; crude, but the same on both sides of the match."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("xes", "ches", "shes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def query_words(text: str) -> list[str]:
    """Lower-cased alphanumeric runs, as written."""
    return TOKEN_PATTERN.findall(text.lower())


def lexical_tokens(text: str) -> list[str]:
    """Lower-cased alphanumeric runs, light-stemmed, without stopwords."""
    return [light_stem(t) for t in query_words(text) if t not in STOPWORDS]
