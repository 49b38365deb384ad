"""Counts as a person writes them ("1 fix", "2 fixes"), for every line a rider reads: one
definition, so `tracker status`, the ride list, the page and the demo never disagree on a word."""

from __future__ import annotations


def plural(n: int, word: str, words: str | None = None) -> str:
    """`n` and `word`, or `words` (default `word` + "s") unless n is 1."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def duration(seconds: float) -> str:
    """A span as a rider says it: "40 s", "12 min", "1 h 5 min", "2 d 3 h"."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    m = round(s / 60)
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"
