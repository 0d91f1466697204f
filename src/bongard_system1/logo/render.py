"""Headless anti-aliased rendering of placed LOGO shapes with exact per-shape and per-stroke boxes.

Geometry comes from :mod:`turtle_trace`; OpenCV draws it. The original painter works on an 800x800
turtle canvas exported through PostScript and resized to 512x512; ``CANVAS_SPAN`` is the width of
turtle space that ends up in the image, calibrated against real Bongard-LOGO images.

Boxes follow the real set's definition: ``[x, y, w, h]`` of the pixels that carry any ink when the
object (a shape, or one stroke) is drawn alone, with ``w = xmax - xmin + 1``. Shapes are drawn
alone and combined by darkest pixel, so a shape's box is exactly its own ink in the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import stamp_rings
from .actions import PlacedShape
from .turtle_trace import STAMP_OUTLINE, trace_shape

CANVAS_SPAN = 783.5      # turtle units across the exported image (fitted to real boxes)
CANVAS_CENTER = (-2.0, 2.5)  # turtle point at the image centre (fitted likewise)
PEN_WIDTH = 8.0          # turtle units (the original pen size)
INK_FLOOR = 128          # faint anti-aliasing fringe (darkness <= this) is cleared, as in real images
# A stamp's outline is STAMP_OUTLINE turtle units wide: 1.33 px at 416, 1.63 px at 512. It is drawn as
# a 1-px core at full darkness inside a 2-px band whose darkness grows with that width, from 0 at
# STAMP_BAND_PX[0] to 255 at STAMP_BAND_PX[1] px. Fitted so that stamped strokes carry the same ink,
# relative to plain lines, as in real images at 416 px (real images resized) and at 512 px
# (``fidelity.ink_report`` measures it); a whole-pixel outline gave them about half
# the real ink at 416 px and 1.2x at 512 px.
STAMP_BAND_PX = (0.71, 1.85)
STAMP_MODES = ("band", "ring")   # ring: see stamp_rings (the original's look at 512 px)
_SHIFT = 4               # OpenCV sub-pixel bits
_ONE = 1 << _SHIFT


@dataclass
class Rendering:
    image: np.ndarray            # HxW uint8, 255 white paper, 0 black ink
    shape_boxes: list | None     # per shape: [x, y, w, h] or None when no ink is visible
    stroke_boxes: list | None    # per shape, per action: [x, y, w, h] or None
    stroke_ink: list | None = None  # with_ink: per shape, per action, summed darkness drawn alone


def _to_pixels(points, size, span, origin=(0.0, 0.0)):
    """Turtle points (relative to ``origin``) to pixel coordinates of a ``size`` image."""
    s = size / span
    cx, cy = CANVAS_CENTER
    pts = np.array(points, dtype=np.float64).reshape(-1, 2)
    pts[:, 0] += origin[0] - cx
    pts[:, 0] *= s
    pts[:, 0] += size / 2.0 - 0.5
    pts[:, 1] = (cy - origin[1] - pts[:, 1]) * s + (size / 2.0 - 0.5)
    return pts


def _clear_fringe(canvas):
    """Drop the faint anti-aliasing fringe (darkness <= INK_FLOOR), in place."""
    cv2.threshold(canvas, INK_FLOOR, 255, cv2.THRESH_TOZERO, dst=canvas)


def _ink_box(canvas, ox, oy):
    x, y, w, h = cv2.boundingRect(canvas)        # of the non-zero pixels
    if w == 0:
        return None
    return [int(ox + x), int(oy + y), int(w), int(h)]


class _Pieces:
    """The pixel geometry of one stroke, ready for OpenCV: its polylines and stamps as fixed-point
    (``_SHIFT`` bits) int32 points in one array, converted from turtle space in one go."""

    def __init__(self, trace, size, span, origin):
        lines = [p for p in trace.polylines if len(p) >= 2]
        stamps = trace.stamp_polygons()
        self.n_lines = len(lines)
        self.size = size
        self._layer = None
        self.fixed = None
        if not lines and not len(stamps):
            return
        pts = _to_pixels([q for seq in lines for q in seq], size, span, origin)
        if len(stamps):
            pts = np.concatenate([pts, _to_pixels(stamps.reshape(-1, 2), size, span, origin)])
        self.lo, self.hi = pts.min(axis=0), pts.max(axis=0)
        self.fixed = np.round(pts * _ONE).astype(np.int32)
        lens = [len(seq) for seq in lines] + [stamps.shape[1]] * len(stamps)
        ends = np.cumsum(lens).tolist()
        self.spans = list(zip([0] + ends[:-1], ends))

    def bounds(self):
        return None if self.fixed is None else (self.lo, self.hi)

    def draw(self, canvas, ox, oy, pen_px, band, outline_px=None):
        """Lines first, then each stamp: a white fill (erasing what lies under it) and its outline:
        a ring ``outline_px`` wide drawn finely (``stamp_rings``) when that is given, else a 1-px
        core inside a 2-px band of darkness ``band`` (see ``STAMP_BAND_PX``)."""
        if self.fixed is None:
            return
        pts = self.fixed - np.array([ox << _SHIFT, oy << _SHIFT], np.int32)
        parts = [pts[a:b] for a, b in self.spans]
        if self.n_lines:
            cv2.polylines(canvas, parts[:self.n_lines], False, 255, pen_px, cv2.LINE_AA, _SHIFT)
        if len(parts) == self.n_lines:
            return
        if outline_px is not None:
            if self._layer is None:
                first = self.spans[self.n_lines][0]
                self._layer = stamp_rings.stamp_layer(self.fixed[first:], first, self.spans[self.n_lines:],
                                                      outline_px, self.size)
            stamp_rings.composite(canvas, ox, oy, self._layer)
            return
        for stamp in parts[self.n_lines:]:
            cv2.fillPoly(canvas, [stamp], 0, cv2.LINE_AA, _SHIFT)
            if band:
                cv2.polylines(canvas, [stamp], True, band, 2, cv2.LINE_AA, _SHIFT)
            cv2.polylines(canvas, [stamp], True, 255, 1, cv2.LINE_AA, _SHIFT)


def _roi(bounds, pad, size):
    lo, hi = bounds
    x0 = max(int(np.floor(lo[0])) - pad, 0)
    y0 = max(int(np.floor(lo[1])) - pad, 0)
    x1 = min(int(np.ceil(hi[0])) + pad + 1, size)
    y1 = min(int(np.ceil(hi[1])) + pad + 1, size)
    return x0, y0, x1, y1


def pen_pixels(pen_width: float, size: int, span: float = CANVAS_SPAN) -> int:
    return max(1, int(round(pen_width * size / span)))


def stamp_band_darkness(size: int, span: float = CANVAS_SPAN) -> int:
    """Darkness of the 2-px band around a stamp outline's 1-px core at this image size."""
    lo, hi = STAMP_BAND_PX
    width = STAMP_OUTLINE * size / span
    return int(round(255 * min(max((width - lo) / (hi - lo), 0.0), 1.0)))


def render(shapes: list[PlacedShape], size: int = 512, pen_width: float = PEN_WIDTH,
           magnify: bool = True, span: float = CANVAS_SPAN, with_boxes: bool = True,
           with_ink: bool = False, stamps: str = "band") -> Rendering:
    """Draw placed shapes on a ``size`` x ``size`` image and measure each shape's and stroke's ink.

    ``with_boxes``: measure shape and stroke boxes (else both are None). ``with_ink``: also sum each
    stroke's darkness when drawn alone (it needs that per-stroke pass, so boxes come with it).
    ``stamps``: how stamp outlines are drawn, ``band`` or ``ring`` (:mod:`stamp_rings`)."""
    if stamps not in STAMP_MODES:
        raise ValueError(f"stamps must be one of {STAMP_MODES}, got {stamps!r}")
    dark = np.zeros((size, size), np.uint8)
    pen_px = pen_pixels(pen_width, size, span)
    band = stamp_band_darkness(size, span)
    outline_px = stamp_rings.outline_pixels(size, span) if stamps == "ring" else None
    pad = pen_px + 4
    shape_boxes, stroke_boxes, stroke_ink = [], [], []
    for shape in shapes:
        pieces = [_Pieces(tr, size, span, shape.start) for tr in trace_shape(shape, magnify=magnify)]
        bounds = [p.bounds() for p in pieces]
        present = [b for b in bounds if b is not None]
        if not present:
            shape_boxes.append(None)
            stroke_boxes.append([None] * len(pieces))
            stroke_ink.append([0] * len(pieces))
            continue
        lo = np.min([b[0] for b in present], axis=0)
        hi = np.max([b[1] for b in present], axis=0)
        x0, y0, x1, y1 = _roi((lo, hi), pad, size)
        if x1 <= x0 or y1 <= y0:
            shape_boxes.append(None)
            stroke_boxes.append([None] * len(pieces))
            stroke_ink.append([0] * len(pieces))
            continue
        canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
        for p in pieces:
            p.draw(canvas, x0, y0, pen_px, band, outline_px)
        _clear_fringe(canvas)
        np.maximum(dark[y0:y1, x0:x1], canvas, out=dark[y0:y1, x0:x1])
        if not (with_boxes or with_ink):
            continue
        shape_boxes.append(_ink_box(canvas, x0, y0))
        boxes, ink = [], []
        for p, b in zip(pieces, bounds):
            sx0, sy0, sx1, sy1 = _roi(b, pad, size) if b is not None else (0, 0, 0, 0)
            if sx1 <= sx0 or sy1 <= sy0:
                boxes.append(None)
                ink.append(0)
                continue
            c = np.zeros((sy1 - sy0, sx1 - sx0), np.uint8)
            p.draw(c, sx0, sy0, pen_px, band, outline_px)
            _clear_fringe(c)
            boxes.append(_ink_box(c, sx0, sy0))
            if with_ink:
                ink.append(int(c.sum(dtype=np.int64)))
        stroke_boxes.append(boxes)
        stroke_ink.append(ink)
    measured = with_boxes or with_ink
    return Rendering(image=255 - dark, shape_boxes=shape_boxes if measured else None,
                     stroke_boxes=stroke_boxes if measured else None, stroke_ink=stroke_ink if with_ink else None)


def cli_draw(args):
    """``system1 draw``: shapes side by side in a grid of slots, each centred in its own, heading east."""
    import json
    import sys

    from .actions import parse_program
    from .sample import layout_in_slots
    from ..errors import System1Error
    from ..io_utils import check_output_image, write_image
    check_output_image(args.out)
    programs = []
    for text in args.program:
        actions = parse_program([t.strip() for t in text.split(",") if t.strip()])
        if not actions:
            raise System1Error(f"--program {text!r} holds no action")
        programs.append(actions)
    shapes = layout_in_slots(programs, float(args.scale), PEN_WIDTH)
    r = render(shapes, args.size)
    for k, box in enumerate(r.shape_boxes):
        if box is None:
            raise System1Error(f"--program {args.program[k]!r} draws no ink (every stroke has zero length)")
    for k, shape in enumerate(shapes):
        if shape.scale < float(args.scale):
            where = "the canvas" if len(shapes) == 1 else f"its slot ({len(shapes)} shapes in a grid)"
            print(f"warning: shape {k + 1} drawn at scale {shape.scale:.1f}: at {float(args.scale):g} "
                  f"it does not fit {where}", file=sys.stderr)
    write_image(args.out, r.image)
    print(json.dumps({"image": args.out, "scales": [round(s.scale, 3) for s in shapes],
                      "shape_boxes": r.shape_boxes, "stroke_boxes": r.stroke_boxes}))
    return 0
