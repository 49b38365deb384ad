"""Counts as a person writes them ("1 fix", "2 fixes"), for every line a rider reads: one
definition, so `tracker status`, the ride list and the demo never disagree on a word."""

from __future__ import annotations


def plural(n: int, word: str, words: str | None = None) -> str:
    """`n` and `word`, or `words` (default `word` + "s") unless n is 1."""
    return f"{n} {word if n == 1 else (words or word + 's')}"
