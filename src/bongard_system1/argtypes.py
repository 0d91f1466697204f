"""Argument parsing shared by the command lines: one-line errors and checked number types.

Standard library only, so ``--help`` and ``status`` stay fast.
"""

from __future__ import annotations

import argparse
import math

from .settings import IMAGE_SIZE_RANGE, MAX_DATASET_IMAGES, MAX_TEST_SIZES, TEST_SIZE_RANGE


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``error: ...`` line and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


def _number(kind, test, expected):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not test(v):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {v}")
        return v
    parse.__name__ = expected
    return parse


def int_in(lo: int, hi: int, expected: str | None = None):
    """An argparse type: an integer from ``lo`` to ``hi``."""
    return _number(int, lambda v: lo <= v <= hi, expected or f"an integer from {lo} to {hi}")


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
image_px = _number(int, lambda v: IMAGE_SIZE_RANGE[0] <= v <= IMAGE_SIZE_RANGE[1],
                   "an image size from {} to {} px".format(*IMAGE_SIZE_RANGE))
image_count = _number(int, lambda v: 1 <= v <= MAX_DATASET_IMAGES, f"an image count from 1 to {MAX_DATASET_IMAGES}")
turtle_scale = _number(float, lambda v: 0 < v <= 1000, "a scale above 0 and at most 1000 turtle units")
max_shapes = _number(int, lambda v: 1 <= v <= 8, "1 to 8 shapes")
seed_int = _number(int, lambda v: 0 <= v < 2**31, "a seed from 0 to 2147483647")
open_fraction = _number(float, lambda v: 0.0 < v < 1.0, "a number in (0, 1)")
scale_fraction = _number(float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")
half_open_fraction = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
unit_fraction = _number(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
test_size_px = _number(int, lambda v: TEST_SIZE_RANGE[0] <= v <= TEST_SIZE_RANGE[1],
                       "an integer from {} to {}".format(*TEST_SIZE_RANGE))


def non_empty_path(text):
    """A path that is not an empty string (which would silently mean the current folder)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


non_empty_path.__name__ = "path"


def png_path(text):
    """A non-empty path ending in .png: drawings with exact boxes are kept lossless (a JPEG's
    artefacts spread ink past the boxes)."""
    text = non_empty_path(text)
    if not str(text).lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"expected a .png file (lossless, so the boxes stay exact), got {text!r}")
    return text


png_path.__name__ = "PNG path"


def test_sizes_px(text):
    """``S`` or ``S1,S2,...``: the sizes images are resized to for the network (distinct, each in range)."""
    parts = [p.strip() for p in str(text).split(",")]
    sizes = tuple(test_size_px(p) for p in parts)
    if len(set(sizes)) != len(sizes) or not 1 <= len(sizes) <= MAX_TEST_SIZES:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_TEST_SIZES} distinct sizes, got {text!r}")
    return sizes[0] if len(sizes) == 1 else sizes


test_sizes_px.__name__ = "test sizes"
