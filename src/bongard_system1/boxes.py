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


def greedy_match(iou, thr: float, allowed=None) -> dict[int, int]:
    """COCO's matching of detections to ground truth: detections (rows of ``iou``, in the order
    given, best score first) each take the still-free ground-truth box (column) of highest IoU, if
    that IoU is at least ``thr``; ``allowed`` (same shape, bool) excludes pairs, such as other
    classes. Returns {detection row: ground-truth column}."""
    iou = np.asarray(iou, np.float64)
    if allowed is not None:
        iou = np.where(allowed, iou, -1.0)
    out: dict[int, int] = {}
    if iou.ndim != 2 or not iou.shape[0] or not iou.shape[1]:
        return out
    free = np.ones(iou.shape[1], bool)
    for i, row in enumerate(iou):
        cand = np.where(free, row, -1.0)
        j = int(cand.argmax())
        if cand[j] >= thr:
            free[j] = False
            out[i] = j
    return out
