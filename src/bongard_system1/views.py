"""Test-time views: an image and its mirror images seen by the network, and their detections fused.

The detector is trained with flips and 90-degree rotations, so the image mirrored left-right,
mirrored top-bottom or transposed is as familiar to it as the image itself, and its mistakes on
the four differ. Four more views complete the image's eight symmetries (rotated by 180 degrees, by
90 degrees either way, and mirrored across the other diagonal), for ``--views`` 5 to 8.
:func:`view_images` makes the views, :func:`to_original` maps a view's boxes back, and
:func:`fuse` merges the detections of all views, one cluster per object:

* clusters: greedy NMS over every view's detections at once (IoU ``FUSE_IOU``, per category
  group); each detection joins the best-scoring cluster head it overlaps;
* score: the mean over the views of each view's best score in the cluster (a view that saw
  nothing there adds 0), so objects every view agrees on rank first;
* box: the score-weighted mean of each view's best box in the cluster;
* class: the class whose per-view best scores sum highest.

With one view this is plain NMS at ``FUSE_IOU``. Measured on the real set with the quick model
(see the README): strokes AP 0.634 -> 0.667 with four views, synthetic validation strokes AP
0.643 -> 0.672; the IoU was chosen on both (0.7: 0.661 / 0.668, 0.8: 0.667 / 0.673, 0.5 far worse).
All eight views, on the 2026-11-29 quick model's outputs (README): real strokes AP 0.687 -> 0.695,
AP50 0.870 -> 0.873, synthetic validation AP (all categories) 0.714 -> 0.720, at twice the network's
time; the default stays at four (fusion IoU 0.7 and 0.8 with eight views: 0.693 and 0.693 real,
0.719 and 0.721 synthetic).
"""

from __future__ import annotations

import numpy as np

from .settings import MAX_VIEWS

VIEW_NAMES = ("image", "mirrored left-right", "mirrored top-bottom", "transposed", "rotated 180 degrees",
              "rotated 90 degrees counter-clockwise", "rotated 90 degrees clockwise",
              "mirrored across the other diagonal")
assert len(VIEW_NAMES) == MAX_VIEWS


def view_images(gray: np.ndarray, n: int) -> list[np.ndarray]:
    """The first ``n`` views of a 2-D image (contiguous arrays)."""
    views = (gray, gray[:, ::-1], gray[::-1, :], gray.T, gray[::-1, ::-1], gray[:, ::-1].T, gray[::-1, :].T,
             gray[::-1, ::-1].T)
    # a copy, not np.ascontiguousarray: numpy calls a reversed view with an axis of length 1
    # contiguous and returns it with a negative stride, which torch.from_numpy refuses
    return [np.array(v, order="C", copy=True) for v in views[:n]]


def to_original(boxes, view: int, width: int, height: int):
    """Boxes (an N x 4 xyxy tensor) detected in view ``view`` mapped to the original image's pixels."""
    import torch
    if view == 0:
        return boxes
    x0, y0, x1, y1 = boxes.unbind(1)
    corners = {1: (width - x1, y0, width - x0, y1),
               2: (x0, height - y1, x1, height - y0),
               3: (y0, x0, y1, x1),
               4: (width - x1, height - y1, width - x0, height - y0),
               5: (width - y1, x0, width - y0, x1),
               6: (y0, height - x1, y1, height - x0),
               7: (width - y1, height - x1, width - y0, height - x0)}[view]
    return torch.stack(corners, 1)


def fuse(boxes, scores, labels, views, groups, n_views: int, iou: float):
    """Fused detections ``(boxes, scores, labels)`` (tensors, by falling score) from the detections of
    ``n_views`` views: ``boxes`` N x 4 xyxy in original pixels, ``scores``, ``labels`` (class ids),
    ``views`` (view index of each) and ``groups`` (only detections of one group are fused)."""
    import torch
    from torchvision.ops import batched_nms, box_iou
    if not len(boxes):
        return boxes.reshape(0, 4), scores[:0], labels[:0]
    heads = batched_nms(boxes, scores, groups, iou)                      # by falling score
    overlap = box_iou(boxes[heads], boxes)
    overlap[groups[heads][:, None] != groups[None, :]] = 0.0
    # each head is its own cluster's, and each other box joins the first head that suppressed it
    # (within rounding: NMS and box_iou need not agree to the last bit at exactly ``iou``)
    overlap[:, heads] = 0.0
    overlap[torch.arange(len(heads)), heads] = 1.0
    cluster = (overlap > iou - 1e-6).float().argmax(0).numpy()
    sc, lab, vw = scores.numpy(), labels.numpy(), views.numpy()
    h = len(heads)
    best = np.zeros((h, n_views, int(lab.max()) + 1), np.float32)        # cluster x view x class
    np.maximum.at(best, (cluster, vw, lab), sc)
    top = np.full((h, n_views), -1)                                      # each view's best member
    for i in np.argsort(-sc, kind="stable"):
        if top[cluster[i], vw[i]] < 0:
            top[cluster[i], vw[i]] = i
    seen = top >= 0
    weight = np.where(seen, sc[np.maximum(top, 0)], 0.0)
    fused_boxes = (boxes.numpy()[np.maximum(top, 0)] * weight[..., None]).sum(1) / weight.sum(1, keepdims=True)
    fused_scores = best.max(2).sum(1) / n_views
    fused_labels = best.sum(1).argmax(1)
    order = np.argsort(-fused_scores, kind="stable")
    return (torch.from_numpy(fused_boxes[order].astype(np.float32)), torch.from_numpy(fused_scores[order]),
            torch.from_numpy(fused_labels[order].astype(np.int64)))
