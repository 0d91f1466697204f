"""How closely the renderer reproduces real Bongard-LOGO images: re-render every real shape and stroke
from its recorded action program and placement, and compare boxes (IoU) with the real ones, and the
ink each stroke style carries relative to plain lines (what tells a stamped stroke from a zigzag), and
the white holes inside stamps (what tells circle, square and triangle stamps apart)."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np

from .. import STYLES
from ..boxes import iou_xywh
from ..errors import System1Error
from .actions import PlacedShape, parse_program
from .render import render


def _placed(ann: dict) -> PlacedShape:
    """A real shape annotation as a placed shape: its program at the painter's own placement."""
    return PlacedShape(parse_program(ann["action_program"]), tuple(ann["start_coordinates"]),
                       float(ann["start_orientation"]), float(ann["scaling_factor"]))


def _images_with_shapes(shapes_coco_path):
    """``(folder, image record, its shape annotations)`` for every image of a real shapes COCO file."""
    with open(shapes_coco_path) as f:
        coco = json.load(f)
    root = os.path.dirname(os.path.abspath(shapes_coco_path))
    per_image = {}
    for a in coco["annotations"]:
        per_image.setdefault(a["image_id"], []).append(a)
    for im in coco["images"]:
        yield root, im, per_image.get(im["id"], [])


def fidelity_report(shapes_coco_path, strokes=True) -> dict:
    """Median and 10th-percentile box IoU of re-rendered shapes (and strokes) against a real COCO file."""
    with open(shapes_coco_path) as f:
        coco = json.load(f)
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    types = {im["id"]: im.get("problem_type", "all") for im in coco["images"]}
    shape_iou, stroke_iou, by_type = [], [], {}
    for a in coco["annotations"]:
        w, h = sizes[a["image_id"]]
        shape = _placed(a)
        r = render([shape], size=w)
        iou = iou_xywh(r.shape_boxes[0], a["bbox"]) if r.shape_boxes[0] else 0.0
        shape_iou.append(iou)
        by_type.setdefault(types[a["image_id"]], []).append(iou)
        if strokes:
            for mine, real in zip(r.stroke_boxes[0], a.get("strokes", [])):
                stroke_iou.append(iou_xywh(mine, real["bbox"]) if mine else 0.0)

    def stats(v):
        v = np.asarray(v)
        return {"n": int(v.size), "median": round(float(np.median(v)), 4), "p10": round(float(np.percentile(v, 10)), 4),
                "mean": round(float(v.mean()), 4)}

    out = {"shapes": stats(shape_iou), "per_type": {t: stats(v) for t, v in sorted(by_type.items())}}
    if stroke_iou:
        out["strokes"] = stats(stroke_iou)
    out["source"] = os.path.abspath(shapes_coco_path)
    return out


def ink_report(shapes_coco_path, size=512) -> dict:
    """Ink of each stroke style relative to plain lines, ours against real, at ``size`` px.

    Every real image (resized to ``size`` bilinearly, as the detector sees it) is modelled as
    ``sum over styles k_style * (our ink of that style's strokes, each drawn alone)``, fitted by least
    squares. ``ratio[style] = k_normal / k_style`` is then our ink for that style relative to plain lines,
    divided by the same in real images: 1.0 when the renderer matches, above 1 when ours is heavier."""
    rows, target = [], []
    for root, im, anns in _images_with_shapes(shapes_coco_path):
        gray = cv2.imread(os.path.join(root, im["file_name"]), cv2.IMREAD_GRAYSCALE)
        if not anns or gray is None or any("strokes" not in a for a in anns):
            continue
        if gray.shape != (size, size):
            gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_LINEAR)
        feat = np.zeros(len(STYLES))
        for a in anns:
            shape = _placed(a)
            r = render([shape], size=size, with_ink=True)
            for ink, s in zip(r.stroke_ink[0], a["strokes"]):
                feat[STYLES.index(s["style"])] += ink
        rows.append(feat)
        target.append(float((255.0 - gray.astype(np.float64)).sum()))
    if not rows:
        raise System1Error(f"{shapes_coco_path}: no readable images with per-stroke records to compare ink with")
    x, y = np.array(rows), np.array(target)
    used = x.sum(axis=0) > 0
    k = np.zeros(len(STYLES))
    k[used] = np.linalg.lstsq(x[:, used], y, rcond=None)[0]
    out = {"size": size, "images": len(rows)}
    # a style whose fit is not positive has no meaningful ratio: None (the benchmark counts it as failed)
    out["ratio"] = {s: round(float(k[0] / k[i]), 3) if k[i] > 0 and k[0] > 0 else None
                    for i, s in enumerate(STYLES) if used[i]}
    return out


STAMPED = ("circle", "square", "triangle")


def stamp_hole_centres(gray: np.ndarray, max_area: int = 60) -> np.ndarray:
    """Centres ``(n, 2)`` of the white specks enclosed by ink (at most ``max_area`` px; darkness
    < 128 is paper): the insides of stamps, and the odd small loop where strokes cross."""
    n, _, stats, centres = cv2.connectedComponentsWithStats((gray >= 128).astype(np.uint8), connectivity=4)
    h, w = gray.shape
    x, y, bw, bh, area = stats.T
    inside = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h) & (area <= max_area)
    inside[0] = False
    return centres[inside]


def stamp_holes(gray: np.ndarray, max_area: int = 60) -> int:
    """How many :func:`stamp_hole_centres` an image has."""
    return len(stamp_hole_centres(gray, max_area))


def stamp_hole_report(shapes_coco_path, max_images: int | None = 100) -> dict:
    """Holes (:func:`stamp_holes`) in real images that have stamped strokes, against the same images
    re-rendered from their programs at their own size: ``ratio`` 1.0 when the renderer leaves stamps
    as open as the original does."""
    real = ours = used = 0
    for root, im, anns in _images_with_shapes(shapes_coco_path):
        if not any(s["style"] in STAMPED for a in anns for s in a.get("strokes", [])):
            continue
        gray = cv2.imread(os.path.join(root, im["file_name"]), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            continue
        shapes = [_placed(a) for a in anns]
        real += stamp_holes(gray)
        ours += stamp_holes(render(shapes, size=gray.shape[1], with_boxes=False).image)
        used += 1
        if max_images and used >= max_images:
            break
    if not used or not real:
        raise System1Error(f"{shapes_coco_path}: no readable images with stamped strokes to count holes in")
    return {"images": used, "real": real, "ours": ours, "ratio": round(ours / real, 3)}
