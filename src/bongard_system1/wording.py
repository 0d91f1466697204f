"""Counts in messages: ``counted(1, "image")`` is "1 image", ``counted(4, "image")`` "4 images".
Standard library only, so ``status`` stays fast."""

from __future__ import annotations


def counted(n, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, the noun plural unless ``n`` is 1 (``plural`` where adding "s" is wrong);
    a number is written with thousands separators, an unknown one (None) as "?"."""
    text = "?" if n is None else f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else str(n)
    return f"{text} {noun if n == 1 else (plural or noun + 's')}"
