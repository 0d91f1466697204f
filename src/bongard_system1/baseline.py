"""The classical shape baseline: ink pixels, a 9x9 dilation and connected components, one box per
component around its original (undilated) ink. No learning; a yardstick for the detector."""

from __future__ import annotations

import cv2
import numpy as np

DILATE = 9          # side of the square dilation kernel that joins a shape's strokes
MIN_INK_PIXELS = 4  # components with fewer ink pixels are dropped as specks
# On a lossy (JPEG) or off-white page, pixels this light or lighter are paper. Ink is every pixel
# darker than 255 on a clean page, as the real set's boxes are defined, but a JPEG's ringing puts
# faint grey around every stroke: the classical baseline's real shapes AP fell from 0.990 to 0.770
# with the real set saved as JPEG at quality 75, 90 or 95. Clearing pixels from 223 up (255 - 32)
# gave 0.990 at each quality, and 0.990 on a page of 252; 255 - 8 and - 16 left some ringing at
# quality 75 (0.811, 0.948), 255 - 64 began to eat the anti-aliased fringe (0.989): every other
# real image, 2026-12-07 (``docs/measurements.md``).
PAPER_FLOOR = 223
# The median pixel is taken for the page only when it is this light: an image mostly of ink (or
# too small to tell, under PAGE_MIN_PIXELS pixels) is left as it is.
PAGE_MIN_LEVEL = 192
PAGE_MIN_PIXELS = 256


def clean_page(gray: np.ndarray, lossy: bool = False) -> np.ndarray:
    """A 2-D uint8 image with its page made pure white where it is not already: when ``lossy`` (a
    JPEG's noise) or when the page (the median pixel, if at least :data:`PAGE_MIN_LEVEL`) is darker
    than 255, the page is scaled to 255 and every pixel of :data:`PAPER_FLOOR` or lighter set to 255.
    A clean page (the real set's PNGs, the generator's), an image of fewer than
    :data:`PAGE_MIN_PIXELS` pixels and one whose median pixel is darker than :data:`PAGE_MIN_LEVEL`
    (mostly ink: no page to tell) are returned as they are."""
    if gray.size < PAGE_MIN_PIXELS:
        return gray
    paper = float(np.median(gray[::4, ::4]))
    if paper < PAGE_MIN_LEVEL or (paper >= 255.0 and not lossy):
        return gray
    out = np.array(gray, dtype=np.uint8, copy=True)
    if paper < 255.0:
        out = np.clip(np.rint(out.astype(np.float32) * (255.0 / paper)), 0, 255).astype(np.uint8)
    out[out >= PAPER_FLOOR] = 255
    return out


def classical_shapes(gray: np.ndarray, *, dilate: int = DILATE, min_pixels: int = MIN_INK_PIXELS) -> list[dict]:
    """Shape boxes of a black-on-white image (uint8 grayscale; BGR is converted).

    Ink is every pixel darker than 255. The ink is dilated with a ``dilate`` x ``dilate`` square,
    split into 8-connected components, and each component's box is that of the ink pixels inside
    it: ``[x, y, w, h]`` with ``w = xmax - xmin + 1``, as the ground truth. Components with fewer
    than ``min_pixels`` ink pixels are dropped. Score: a constant 1.0 (on the real set, ranking by
    box area gave AP 0.9887 against 0.9897 for the constant).
    """
    gray = np.asarray(gray)
    if gray.ndim == 3:
        gray = cv2.cvtColor(gray, cv2.COLOR_BGRA2GRAY if gray.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    if gray.dtype != np.uint8:
        gray = np.clip(gray, 0, 255).astype(np.uint8)
    labels = ink_components(gray, dilate)
    ys, xs = np.nonzero(labels)
    if ys.size == 0:
        return []
    n = int(labels.max()) + 1
    lab = labels[ys, xs]
    count = np.bincount(lab, minlength=n)
    big = np.iinfo(np.int64).max
    x0 = np.full(n, big, np.int64)
    y0 = np.full(n, big, np.int64)
    x1 = np.full(n, -1, np.int64)
    y1 = np.full(n, -1, np.int64)
    np.minimum.at(x0, lab, xs)
    np.minimum.at(y0, lab, ys)
    np.maximum.at(x1, lab, xs)
    np.maximum.at(y1, lab, ys)
    out = []
    for k in range(1, n):
        if count[k] < max(1, min_pixels):
            continue
        out.append({
            "bbox": [int(x0[k]), int(y0[k]), int(x1[k] - x0[k] + 1), int(y1[k] - y0[k] + 1)],
            "score": 1.0,
            "category": "shape",
        })
    return out


def ink_components(gray: np.ndarray, dilate: int = DILATE) -> np.ndarray:
    """Component label of every ink pixel (0 where there is no ink), int32: the ink (darker than 255)
    dilated by a ``dilate`` x ``dilate`` square, 8-connected; the components the baseline boxes."""
    ink = (np.asarray(gray) < 255).astype(np.uint8)
    grown = cv2.dilate(ink, np.ones((dilate, dilate), np.uint8)) if dilate > 1 else ink
    _, labels = cv2.connectedComponents(grown, connectivity=8)
    return np.where(ink > 0, labels, 0).astype(np.int32)


def unseparated_shapes(gray: np.ndarray, shape_boxes, *, iou: float = 0.9, components=None) -> list[int]:
    """Indices of the given shapes (``[x, y, w, h]`` boxes, the ground truth) that no ink component
    of :func:`classical_shapes` boxes on its own (none at IoU >= ``iou`` with the shape's box). Every
    Bongard-LOGO shape is one connected stroke, so these are the shapes that touch or cross another
    one: where the baseline cannot tell shapes apart and a learned detector must. ``components``:
    :func:`classical_shapes` of ``gray``, when the caller has them already."""
    from .boxes import iou_xywh
    comps = [c["bbox"] for c in (classical_shapes(gray) if components is None else components)]
    return [i for i, b in enumerate(shape_boxes) if max((iou_xywh(b, c) for c in comps), default=0.0) < iou]


class ClassicalBaseline:
    """:func:`classical_shapes` as an object; ``.detect`` (or calling it) can serve as a predict_fn.
    It takes the images ``System1.detect`` takes (a path, a PIL image or an array; see
    :func:`predict.as_gray`) and returns dicts (``bbox``, ``score``, ``category``) of shapes."""

    name = "classical"

    def __init__(self, dilate: int = DILATE, min_pixels: int = MIN_INK_PIXELS):
        self.dilate = int(dilate)
        self.min_pixels = int(min_pixels)

    def detect(self, image) -> list[dict]:
        from .predict import as_gray          # predict imports this module
        return classical_shapes(as_gray(image), dilate=self.dilate, min_pixels=self.min_pixels)

    __call__ = detect

    def __repr__(self) -> str:
        return f"ClassicalBaseline(dilate={self.dilate}, min_pixels={self.min_pixels})"
