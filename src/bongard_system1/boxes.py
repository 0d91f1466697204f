"""Box arithmetic on COCO ``[x, y, w, h]`` boxes (plain Python; torchvision.ops does the batched work)."""

from __future__ import annotations


def intersection_xywh(a, b) -> float:
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iw * ih


def iou_xywh(a, b) -> float:
    inter = intersection_xywh(a, b)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def fraction_inside(a, b) -> float:
    """The fraction of box ``a`` that lies in box ``b``."""
    return intersection_xywh(a, b) / max(a[2] * a[3], 1e-9)
