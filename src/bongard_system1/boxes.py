"""Box arithmetic on COCO ``[x, y, w, h]`` boxes (plain Python and NumPy; torchvision.ops does the batched tensor work)."""

from __future__ import annotations

import numpy as np


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


def pairwise_iou_xywh(a, b):
    """IoU and intersection areas (each N x M) of two lists of ``[x, y, w, h]`` boxes, COCO convention
    (continuous coordinates, area w*h; IoU 0 where the union is empty)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, 0, None] + a[:, 2, None], b[None, :, 0] + b[None, :, 2])
                 - np.maximum(a[:, 0, None], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 1, None] + a[:, 3, None], b[None, :, 1] + b[None, :, 3])
                 - np.maximum(a[:, 1, None], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = a[:, 2:].prod(1)[:, None] + b[:, 2:].prod(1)[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0), inter
