"""Argument parsing shared by the command lines: one-line errors and checked number types.

Standard library only, so ``--help`` and ``status`` stay fast.
"""

from __future__ import annotations

import argparse

from .settings import TEST_SIZE_RANGE


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


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
positive_float = _number(float, lambda v: v > 0, "a positive number")
open_fraction = _number(float, lambda v: 0.0 < v < 1.0, "a number in (0, 1)")
scale_fraction = _number(float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")
half_open_fraction = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
test_size_px = _number(int, lambda v: TEST_SIZE_RANGE[0] <= v <= TEST_SIZE_RANGE[1],
                       "an integer from {} to {}".format(*TEST_SIZE_RANGE))
