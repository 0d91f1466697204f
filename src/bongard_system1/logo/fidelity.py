"""How closely the renderer reproduces real Bongard-LOGO images: re-render every real shape and stroke
from its recorded action program and placement, and compare boxes (IoU) with the real ones."""

from __future__ import annotations

import json
import os

import numpy as np

from ..boxes import iou_xywh
from .actions import PlacedShape, parse_program
from .render import render


def fidelity_report(shapes_coco_path, strokes=True) -> dict:
    """Median and 10th-percentile box IoU of re-rendered shapes (and strokes) against a real COCO file."""
    with open(shapes_coco_path) as f:
        coco = json.load(f)
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    types = {im["id"]: im.get("problem_type", "all") for im in coco["images"]}
    shape_iou, stroke_iou, by_type = [], [], {}
    for a in coco["annotations"]:
        w, h = sizes[a["image_id"]]
        shape = PlacedShape(parse_program(a["action_program"]), tuple(a["start_coordinates"]),
                            float(a["start_orientation"]), float(a["scaling_factor"]))
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
