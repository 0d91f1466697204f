"""Stamps drawn as the original's raster draws them: thin sub-pixel rings with a white hole inside.

Used by :func:`render.render` with ``stamps="ring"``. Every stamp is drawn ``STAMP_SUPERSAMPLE``
times finer and area-averaged to image pixels, so the outline keeps its sub-pixel width and the
white hole inside each stamp survives, as in real Bongard-LOGO images at 512 px. That hole is what
tells circle, square and triangle stamps apart (see :mod:`bongard_system1.stamps`).
"""

from __future__ import annotations

import cv2
import numpy as np

from .turtle_trace import STAMP_OUTLINE

_SHIFT = 4               # OpenCV sub-pixel bits (as in render)
_ONE = 1 << _SHIFT

# A stamp's outline is STAMP_OUTLINE (2.5) turtle units wide in the original painter, centred on the
# stamp polygon's edges, with round corners. Its PostScript raster widens such thin outlines: drawn
# STAMP_WIDENING units wider, STAMP_INNER_SHARE of the width inside the edge, our stamps match real
# ones (fitted on real images re-rendered from their programs at 512 px: stamped stroke boxes within
# 0.25 px of the real size, median IoU 0.984 to 0.987; 2,655 holes inside stamps against the real
# 2,763 in 100 images; stamp ink relative to plain lines 0.96 to 1.00 at 416 px). Stamps are drawn
# STAMP_SUPERSAMPLE times finer and area-averaged, so the outline's sub-pixel width and the white
# hole inside it survive. (Whole-pixel outlines gave stamps half the real ink at 416 px; a blurred
# 2-px band closed the holes, and real circle stamps then looked like our square ones.)
STAMP_WIDENING = 1.25
STAMP_INNER_SHARE = 0.4
STAMP_SUPERSAMPLE = 4


def stamp_layer(pts, first, spans, outline_px, size):
    """The stamps of one stroke drawn finely and area-averaged to image pixels: ``(x0, y0, keep,
    ink)`` (or None when they fall outside the image), where ``keep`` is the share of each pixel the
    stamps leave uncovered (what lies under a stamp is erased) and ``ink`` the darkness they add
    there, each stamp drawn over the ones before it."""
    f = STAMP_SUPERSAMPLE
    lo = pts.min(axis=0) >> _SHIFT
    hi = (pts.max(axis=0) >> _SHIFT) + 1
    pad = int(np.ceil(outline_px)) + 2
    x0, y0 = max(int(lo[0]) - pad, 0), max(int(lo[1]) - pad, 0)
    x1, y1 = min(int(hi[0]) + pad + 1, size), min(int(hi[1]) + pad + 1, size)
    if x1 <= x0 or y1 <= y0:
        return None
    shape = ((y1 - y0) * f, (x1 - x0) * f)
    cover, ink = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    # pixel centres: coarse p -> fine f * (p + 0.5) - 0.5
    origin = np.array([x0, y0], np.float64) - 0.5
    polys = np.stack([pts[a - first:b - first] for a, b in spans]).astype(np.float64) / _ONE
    polys = (polys - origin) * f - 0.5
    # Every stamp is a regular polygon. Its outline, ``outline_px`` wide and centred on the edges,
    # runs from the polygon shrunk to inradius r - w/2 out to the polygon grown by w/2 with round
    # corners (Tk's default join).
    centre = polys.mean(axis=1, keepdims=True)
    inradius = np.linalg.norm((polys[:, :1] + polys[:, 1:2]) / 2 - centre, axis=2, keepdims=True)
    inradius = np.maximum(inradius, 1e-6)
    d_in, d_out = outline_px * f * STAMP_INNER_SHARE, outline_px * f * (1 - STAMP_INNER_SHARE)
    inner = centre + (polys - centre) * np.maximum(inradius - d_in, 0) / inradius
    outer = _grown(polys, centre, d_out)
    outer = np.round(outer * _ONE).astype(np.int32)
    inner = np.round(inner * _ONE).astype(np.int32)
    for out_poly, in_poly in zip(outer, inner):
        cv2.fillPoly(cover, [out_poly], 255, cv2.LINE_AA, _SHIFT)
        cv2.fillPoly(ink, [out_poly], 255, cv2.LINE_AA, _SHIFT)
        cv2.fillPoly(ink, [in_poly], 0, cv2.LINE_AA, _SHIFT)
    area = (x1 - x0, y1 - y0)
    keep = 1.0 - cv2.resize(cover, area, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return x0, y0, keep, cv2.resize(ink, area, interpolation=cv2.INTER_AREA).astype(np.float32)


def _grown(polys, centre, d, steps=4):
    """Convex polygons ``(n, k, 2)`` grown by ``d`` with round corners: each corner becomes an arc of
    ``steps + 1`` points between the outward normals of its two edges."""
    edge = np.roll(polys, -1, axis=1) - polys
    normal = np.stack([edge[..., 1], -edge[..., 0]], axis=2)
    normal /= np.maximum(np.linalg.norm(normal, axis=2, keepdims=True), 1e-9)
    mid = polys + edge / 2
    flip = np.sum(normal * (mid - centre), axis=2, keepdims=True) < 0
    normal = np.where(flip, -normal, normal)
    a_out = np.arctan2(normal[..., 1], normal[..., 0])           # edge i, from vertex i to i + 1
    a_in = np.roll(a_out, 1, axis=1)                             # edge i - 1, ending at vertex i
    turn = (a_out - a_in + np.pi) % (2 * np.pi) - np.pi
    t = np.linspace(0.0, 1.0, steps + 1)
    ang = a_in[..., None] + turn[..., None] * t                  # (n, k, steps + 1)
    pts = polys[:, :, None, :] + d * np.stack([np.cos(ang), np.sin(ang)], axis=3)
    return pts.reshape(len(polys), -1, 2)


def composite(canvas, ox, oy, layer):
    """Lay a :func:`stamp_layer` on ``canvas`` (whose pixel (0, 0) is image pixel (ox, oy))."""
    if layer is None:
        return
    x0, y0, keep, ink = layer
    h, w = keep.shape
    cx0, cy0 = max(x0 - ox, 0), max(y0 - oy, 0)
    cx1, cy1 = min(x0 - ox + w, canvas.shape[1]), min(y0 - oy + h, canvas.shape[0])
    if cx1 <= cx0 or cy1 <= cy0:
        return
    lx, ly = cx0 - (x0 - ox), cy0 - (y0 - oy)
    sub = (slice(ly, ly + cy1 - cy0), slice(lx, lx + cx1 - cx0))
    roi = canvas[cy0:cy1, cx0:cx1]
    out = roi.astype(np.float32) * keep[sub] + ink[sub]
    np.clip(out + 0.5, 0, 255, out=out)
    roi[:] = out.astype(np.uint8)


def outline_pixels(size: int, span: float) -> float:
    """Width of a stamp's outline as drawn, in pixels of a ``size`` image (sub-pixel)."""
    return (STAMP_OUTLINE + STAMP_WIDENING) * size / span
