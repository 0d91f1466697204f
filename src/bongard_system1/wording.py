"""Counts in messages: ``counted(1, "image")`` is "1 image", ``counted(4000, "image")`` "4,000 images".
Standard library only, so ``status`` stays fast."""

from __future__ import annotations


def number(n) -> str:
    """A count as a message writes it: thousands grouped ("3,600"), an unknown one (None) as "?"."""
    if n is None:
        return "?"
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else str(n)


def counted(n, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, the noun plural unless ``n`` is 1 (``plural`` where adding "s" is wrong)."""
    return f"{number(n)} {noun if n == 1 else (plural or noun + 's')}"
