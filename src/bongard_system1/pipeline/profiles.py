"""Pipeline profiles (smoke, quick, standard, professional), flag overrides and the Phase 1 targets.

A profile is a flat dict of settings. :func:`resolve_settings` applies command-line overrides on
top (any flag wins over the profile) and :func:`stage_configs` splits the result into the three
stage configs whose hashes decide whether a stage must run again. Only keys that change a
stage's result go into its config: worker counts, devices, progress bars and log settings do not.

Standard library only: ``--status`` and ``--help`` import this module.
"""

from __future__ import annotations

import os

from ..errors import System1Error
from ..settings import (DATA_FORMAT_VERSION, FUSE_IOU, GROUPING_VERSION, HYBRID_CONFIDENT, HYBRID_PARTS_MIN,
                        HYBRID_WHOLE, INFERENCE_AMP, MIN_STAMP_IMAGES, STAMP_VOTE_ARC_HOLES, STAMP_VOTE_DETECTOR_WEIGHT,
                        STAMP_VOTE_LINE_DISTANCE, STAMP_VOTE_LINE_HOLES, STAMP_VOTE_LINE_SPAN, STAMP_VOTE_RULES,
                        STAMP_VOTE_VERSION, PARSE_MIN_SCORE, RESCORER_VERSION,
                        STROKE_SNAP_INSIDE, STROKE_SNAP_OUTSIDE, TEST_VIEWS, default_test_size)

DEFAULT_PROFILE = "quick"


def _loader_workers(low: int, high: int) -> int:
    """Loader workers for big profiles: ``low`` to ``high``, never more than the cores minus one."""
    cores = os.cpu_count() or 1
    return max(0, min(high, max(low, cores - 2), cores - 1))


PROFILES: dict[str, dict] = {
    # A few dozen tiny images and 2 epochs: the whole pipeline in well under a minute on CPU (tests).
    "smoke": {
        "dataset_size": 24, "image_size": 128, "val_fraction": 0.25, "max_shapes": 2,
        "backbone": "resnet18", "categories": "all", "epochs": 2, "batch_size": 4,
        "lr": None, "time_budget": None, "stamp_images": 60, "rescore_images": 6,
        "real_max_images": 8, "workers": 0, "early_scale": 0.75,
    },
    # The CPU recipe: a useful model in 1 to 1.5 hours on 2 cores (58.1 min on a Zen 5 EPYC; 82.7 and 89.2 min on
    # an AMD EPYC with data format 5, 83.9 and 89.7 with format 6, then the stroke rescorer's 5.4
    # min on 800 images; 91.8 min in all from a fresh clone; in fp32 on an AVX2-only EPYC about 4.4
    # hours, estimated from epochs of 1,235 s at 320 px and 1,979 s at 416). On a CPU with AMX or AVX-512 BF16 the
    # trainer uses bf16 autocast (ResNet-18 at 416 px: 9.0 images/s with AMX at best, against 3.6 in
    # fp32; 6.3 against 3.2 on an AMD EPYC), and so does inference, so 8 epochs at 416 px fit; the
    # first 3 train at 320 px (early_scale, progressive resizing: 8.3 min less on the AMD EPYC, the
    # same final validation AP; see the README for the measured wall times).
    "quick": {
        "dataset_size": 4000, "image_size": 416, "val_fraction": 0.1, "max_shapes": 3,
        "backbone": "resnet18", "categories": "all", "epochs": 8, "batch_size": 8,
        "lr": None, "time_budget": None, "stamp_images": 3000, "rescore_images": 800,
        "real_max_images": None, "workers": None, "early_scale": 0.75,
    },
    "standard": {
        "dataset_size": 5000, "image_size": 416, "val_fraction": 0.1, "max_shapes": 3,
        "backbone": "resnet18", "categories": "all", "epochs": 25, "batch_size": 8,
        "lr": None, "time_budget": None, "stamp_images": 3000, "rescore_images": 800,
        "real_max_images": None, "workers": None, "early_scale": 1.0,
    },
    # 10,000 images at 416x416, ResNet-50, 50 epochs, 4 to 6 loader workers. OneCycleLR, SWA (the
    # last quarter of the epochs) and mixed precision on GPU are the trainer's own behaviour.
    # Batch 32: on an H200 it trains 2.3x faster than batch 8 (200 vs 87 images/s, measured with
    # benchmarks/train_speed.py) and converged well in a short run (peak LR scales as sqrt(batch/8)).
    "professional": {
        "dataset_size": 10000, "image_size": 416, "val_fraction": 0.1, "max_shapes": 3,
        "backbone": "resnet50", "categories": "all", "epochs": 50, "batch_size": 32,
        "lr": None, "time_budget": None, "stamp_images": 3000, "rescore_images": 800,
        "real_max_images": None, "workers": _loader_workers(4, 6), "early_scale": 1.0,
    },
}

# Settings a command-line flag may override (flag dest -> settings key).
OVERRIDABLE = ("dataset_size", "image_size", "val_fraction", "max_shapes", "backbone", "categories",
               "epochs", "batch_size", "lr", "time_budget", "seed", "real_max_images", "workers",
               "device", "stamp_images", "early_scale", "rescore_images")

# Settings shared by every profile unless overridden.
COMMON = {"seed": 0, "device": "auto"}

# Keys of each stage's config (the ones that change its result).
DATA_KEYS = ("dataset_size", "image_size", "seed", "val_fraction", "max_shapes")
TRAIN_KEYS = ("backbone", "categories", "epochs", "batch_size", "image_size", "seed", "lr", "time_budget",
              "stamp_images")

# Phase 1 targets: (key in the summary, label, threshold).
TARGETS = (
    ("synthetic_AP", "synthetic AP@[.5:.95]", 0.85),
    ("synthetic_AP50", "synthetic AP50", 0.95),
    ("real_AP50", "real AP50", 0.70),
)


def profile_names() -> tuple[str, ...]:
    return tuple(PROFILES)


def resolve_settings(profile: str, overrides: dict | None = None) -> dict:
    """The profile's settings with ``overrides`` (values that are not None) applied on top."""
    if profile not in PROFILES:
        raise System1Error(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    settings = dict(COMMON)
    settings.update(PROFILES[profile])
    settings["profile"] = profile
    for key, value in (overrides or {}).items():
        if key not in OVERRIDABLE:
            raise System1Error(f"unknown setting {key!r}")
        if value is not None:
            settings[key] = value
    for key in ("dataset_size", "image_size", "epochs", "batch_size", "max_shapes"):
        if not isinstance(settings[key], int) or settings[key] <= 0:
            raise System1Error(f"{key} must be a positive integer, got {settings[key]!r}")
    if settings.get("real_max_images") is not None and settings["real_max_images"] <= 0:
        raise System1Error(f"real_max_images must be positive, got {settings['real_max_images']!r}")
    if not 0.0 < float(settings["val_fraction"]) < 1.0:
        raise System1Error(f"val_fraction must be in (0, 1), got {settings['val_fraction']!r}")
    n_val = round(settings["dataset_size"] * float(settings["val_fraction"]))      # as the generator splits
    if not 1 <= n_val < settings["dataset_size"]:
        raise System1Error(f"dataset_size {settings['dataset_size']} with val_fraction {settings['val_fraction']} "
                           f"gives {n_val} validation and {settings['dataset_size'] - n_val} training images; "
                           "both must be at least 1")
    if settings["time_budget"] is not None and settings["time_budget"] <= 0:
        raise System1Error(f"time_budget must be positive minutes, got {settings['time_budget']!r}")
    if not 0.0 < float(settings["early_scale"]) <= 1.0:
        raise System1Error(f"early_scale must be in (0, 1], got {settings['early_scale']!r}")
    if not isinstance(settings["rescore_images"], int) or settings["rescore_images"] < 0:
        raise System1Error(f"rescore_images must be 0 (no rescorer) or more, got {settings['rescore_images']!r}")
    if settings["stamp_images"] != 0 and settings["stamp_images"] < MIN_STAMP_IMAGES:
        raise System1Error(f"stamp_images must be 0 (no stamp vote) or at least {MIN_STAMP_IMAGES}, "
                           f"got {settings['stamp_images']!r}")
    return settings


def data_config(settings: dict) -> dict:
    return dict({k: settings[k] for k in DATA_KEYS}, format_version=DATA_FORMAT_VERSION)


# What a stage's config holds when a key is left out of it (left out when off, so that configs made
# before the key existed keep their hash): the "config changed" message reads these, not "(unset)".
CONFIG_DEFAULTS = {"training": {"early_scale": 1.0, "rescore_images": 0, "rescorer_version": None}}


def train_config(settings: dict) -> dict:
    cfg = {k: settings[k] for k in TRAIN_KEYS}
    if settings["early_scale"] != 1.0:      # absent when off: configs made before it keep their hash
        cfg["early_scale"] = settings["early_scale"]
    cfg["stamp_vote_version"] = STAMP_VOTE_VERSION if settings["stamp_images"] else None
    if settings["rescore_images"]:          # absent when off: configs made before it keep their hash
        cfg["rescore_images"] = settings["rescore_images"]
        cfg["rescorer_version"] = RESCORER_VERSION
    return cfg


def eval_config(settings: dict, real_data: str | None, real_sha: str | None) -> dict:
    cfg = {"categories": settings["categories"], "real_data": real_data, "real_data_sha256": real_sha,
           "real_max_images": settings.get("real_max_images") if real_data else None,
           "test_size": default_test_size(settings["image_size"]), "test_views": TEST_VIEWS, "fuse_iou": FUSE_IOU,
           "inference_amp": INFERENCE_AMP,
           "stroke_snap": [STROKE_SNAP_INSIDE, STROKE_SNAP_OUTSIDE],
           "hybrid_confident": HYBRID_CONFIDENT, "hybrid_whole": HYBRID_WHOLE,
           "hybrid_parts_min": HYBRID_PARTS_MIN,
           "stamp_vote_detector_weight": STAMP_VOTE_DETECTOR_WEIGHT,
           "stamp_vote_line_holes": STAMP_VOTE_LINE_HOLES, "stamp_vote_line_distance": STAMP_VOTE_LINE_DISTANCE,
           "stamp_vote_line_span": STAMP_VOTE_LINE_SPAN,
           "stamp_vote_rules": STAMP_VOTE_RULES,
           "stamp_vote_arc_holes": STAMP_VOTE_ARC_HOLES,
           "parse_min_score": PARSE_MIN_SCORE, "grouping_version": GROUPING_VERSION}
    return cfg
