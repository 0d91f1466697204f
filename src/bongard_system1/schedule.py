"""A training run's epoch plan (SWA and progressive-resizing epochs) and how long the rest of it
should take, read from the epochs done.

Standard library only: ``--status`` reads a running or interrupted run's progress through
:func:`run_progress` without importing torch.
"""

from __future__ import annotations

import csv
import json
import os


def epoch_plan(epochs, swa_fraction, image_size, early_scale):
    """``(swa_epochs, early_epochs, early_size)`` of a run: SWA over the last ``swa_fraction`` of the
    epochs (none below 4 epochs); the first half of the other (one-cycle) epochs at ``early_size``,
    ``early_scale`` times the image size rounded to a multiple of 32 (no early epochs when that is not
    smaller than the image size)."""
    swa_epochs = int(round(epochs * swa_fraction)) if epochs >= 4 else 0
    early_size = max(32, int(round(image_size * early_scale / 32)) * 32)
    early_epochs = (epochs - swa_epochs) // 2 if early_size < image_size else 0
    return swa_epochs, early_epochs, early_size


def one_cycle_warmup(total_steps, pct_start=0.2):
    """``pct_start`` for torch's OneCycleLR over ``total_steps``. Its warm-up ends at step
    ``pct_start * total_steps - 1``, and it divides by that length: zero at exactly one step (5 steps
    at 0.2), a ZeroDivisionError. Then the warm-up is left out, as torch leaves it out of fewer
    steps (each starts near the peak); any other run keeps ``pct_start``."""
    if abs(pct_start * total_steps - 1.0) < 1e-9:
        return 0.5 / total_steps
    return pct_start


def remaining_epoch_seconds(history, epochs, early_epochs, early_size, image_size):
    """Seconds the epochs after ``history`` should take, from the ones done: an epoch at a size
    already trained costs the mean of those; one at a new size, the last epoch scaled by the pixel
    count (320 -> 416 px: 1.69x; measured 1.61 to 1.74x in epoch times on an AMD EPYC with AVX-512
    BF16, 1.68x in images/s on one with AVX2 only). None before the first epoch."""
    done = [r for r in history if r.get("seconds") not in (None, "")]
    if not done:
        return None
    by_size = {}
    for r in done:
        by_size.setdefault(int(r["image_size"]), []).append(float(r["seconds"]))
    last = done[-1]
    total = 0.0
    for epoch in range(len(history), epochs):
        size = early_size if epoch < early_epochs else image_size
        if size in by_size:
            total += sum(by_size[size]) / len(by_size[size])
        else:
            total += float(last["seconds"]) * (size / int(last["image_size"])) ** 2
    return total


def format_duration(seconds):
    """``"40 s"`` below a minute and a half, ``"25 min"`` below 90 minutes, else ``"3.4 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


def run_progress(run_dir):
    """``"2/8 epochs done, the last in 1180 s (val AP 0.494); about 3.1 h of epochs left"`` for a run
    folder with a ``config.json`` and a ``metrics.csv``; None when it has no finished epoch or the
    files cannot be read."""
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            cfg = json.load(f)
        with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
            history = list(csv.DictReader(f))
        epochs = int(cfg.get("planned_epochs") or cfg["epochs"])
        _, early_epochs, early_size = epoch_plan(epochs, float(cfg["swa_fraction"]), int(cfg["image_size"]),
                                                 float(cfg.get("early_scale", 1.0)))
        left = remaining_epoch_seconds(history, epochs, early_epochs, early_size, int(cfg["image_size"]))
        if left is None:
            return None
        last = history[-1]
        line = (f"{len(history)}/{epochs} epochs done, the last in {float(last['seconds']):.0f} s "
                f"(val AP {float(last['val_AP']):.3f})")
        return line + (f"; about {format_duration(left)} of epochs left" if left else "")
    except (OSError, ValueError, KeyError, TypeError):
        return None
