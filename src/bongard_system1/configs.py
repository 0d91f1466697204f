"""Config dicts as the stages and the trainer record them: a short stable hash, and the keys that
differ between two (``epochs 25 -> 50``), for the messages that say why a run is redone or refused.
Standard library only, so ``status`` stays fast."""

from __future__ import annotations

import hashlib
import json


def config_hash(config: dict) -> str:
    """A short, stable hash of a config dict (canonical JSON)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def config_diff(old: dict | None, new: dict) -> str:
    """``epochs 25 -> 50, image_size 320 -> 416`` for the keys whose values differ: the new config's
    keys in its order, then the keys only the old one has ("(unset)" on the side that lacks a key)."""
    old = old or {}
    parts = []
    for key in list(new) + [k for k in old if k not in new]:
        a, b = old.get(key, "(unset)"), new.get(key, "(unset)")
        if a != b:
            parts.append(f"{key} {_short(a)} -> {_short(b)}")
    return ", ".join(parts)


def _short(value) -> str:
    text = "none" if value is None else str(value)
    if isinstance(value, str) and len(text) > 40:
        text = "..." + text[-37:]
    return text
