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


def config_diff(old: dict | None, new: dict, defaults: dict | None = None) -> str:
    """``epochs 25 -> 50, image_size 320 -> 416`` for the keys whose values differ: the new config's
    keys in its order, then the keys only the old one has. A key one side lacks takes its value from
    ``defaults`` (a key left out of a config when it has its default), else reads "(unset)". Nested
    dicts are compared key by key (``dataset.params.seed 0 -> 1``)."""
    return ", ".join(_diff_parts(old or {}, new, defaults or {}))


def _diff_parts(old: dict, new: dict, defaults: dict) -> list[str]:
    parts = []
    for key in list(new) + [k for k in old if k not in new]:
        a, b = old.get(key, defaults.get(key, "(unset)")), new.get(key, defaults.get(key, "(unset)"))
        if isinstance(a, dict) and isinstance(b, dict):
            parts += [f"{key}.{part}" for part in _diff_parts(a, b, {})]
        elif a != b:
            parts.append(f"{key} {_short(a)} -> {_short(b)}")
    return parts


def _short(value) -> str:
    text = "none" if value is None else str(value)
    if isinstance(value, str) and len(text) > 40:
        text = "..." + text[-37:]
    return text
