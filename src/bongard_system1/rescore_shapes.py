"""The shape rescorer's features and targets: it re-ranks the hybrid's shape boxes.

The hybrid (:func:`predict.hybrid_shapes`) makes the shape candidates: the ink components, the
network's shapes inside a component it splits, and the network's leftover shapes below them. Its
fixed score bands rank a component above every leftover, so where shapes touch or cross (a joint
component holds two shapes that the network found, but not confidently enough to split it) the
joint box outranks the right ones. A learned ranking over the same candidates does better. For
each candidate it reads :data:`SHAPE_FEATURES`:

* the hybrid: its score and which kind of candidate it is (a component, a split part, a component
  that was split, a leftover), its rank, how many components and candidates the image has;
* the network: its best fused score for a shape there, the best IoU with its confident shapes, each
  view's best score for a shape box there (mean, minimum, how many views see it);
* its neighbours: overlap with better-ranked candidates, the share of it inside one, candidates
  inside it;
* the ink: how much of the box is ink, ink on its four edges, ink in a ring just outside it;
* the strokes (their fused scores, before the stroke nets): confident strokes inside it, and
  confident strokes its edges cut through;
* the box's size and aspect.

It is trained with the rescorer's stroke part, from the same pass of the detector over synthetic images
(:func:`rescore.train_rescorer`), with the same soft target: the IoU of the true shape each candidate
matches when they are matched greedily by the hybrid's score (0 for a duplicate or a wrong box).
A model trained on shapes only has no rescorer (its stroke part has nothing to learn from), so no
shape part either. Measured offline on the Zen 4 quick model (docs/measurements.md): synthetic validation shapes AP
0.893 -> 0.916, real shapes AP 0.990 -> 0.993 (bd 0.989 -> 0.993).
"""

from __future__ import annotations

import numpy as np

from .baseline import classical_shapes
from .boxes import greedy_match, pairwise_iou_xywh
from .rescore import edge_ink

SHAPE_FEATURES = ("score", "comp", "part", "split", "left", "net_best", "net_iou", "v_mean", "v_min", "v_n",
                  "n_comp", "n_cand", "rank", "hi_iou", "in_hi", "n_in", "s_in", "ink", "b0", "b1", "b2", "b3",
                  "ring", "st_in", "st_cut", "st_cut_s", "w", "h", "lasp", "larea", "frac_img")
CONFIDENT_STROKE = 0.5        # a stroke's fused score from which it counts as seen


def shape_features(gray: np.ndarray, candidates: list, network_shapes: list, strokes: list, out: dict,
                   names: list[str], n_views: int, components: list | None = None) -> np.ndarray:
    """The :data:`SHAPE_FEATURES` of each of the hybrid's shape ``candidates`` (``.bbox`` xywh,
    ``.score``), in the order given. ``network_shapes``: the network's fused shapes as the hybrid
    took them (snapped to the ink); ``strokes``: the fused stroke detections, with their scores
    before any rescoring; ``out``: the image's network outputs (``System1.network_outputs``);
    ``components``: ``baseline.classical_shapes(gray)`` when the caller has it already."""
    n = len(candidates)
    feats = np.zeros((n, len(SHAPE_FEATURES)), np.float32)
    if not n:
        return feats
    comps = {tuple(map(float, c["bbox"])) for c in (classical_shapes(gray) if components is None else components)}
    boxes = np.array([d.bbox for d in candidates], np.float64)
    scores = np.array([d.score for d in candidates], np.float64)
    order = np.argsort(-scores, kind="stable")
    rank_of = np.empty(n, int)
    rank_of[order] = np.arange(n)
    iou, inter = pairwise_iou_xywh(boxes, boxes)
    area = boxes[:, 2] * boxes[:, 3] + 1e-9
    net_boxes = np.array([d.bbox for d in network_shapes], np.float64).reshape(-1, 4)
    net_scores = np.array([d.score for d in network_shapes], np.float64)
    net_iou = pairwise_iou_xywh(boxes, net_boxes)[0] if len(net_boxes) else np.zeros((n, 0))
    labels = np.asarray(out["labels"])
    is_shape = np.array([names[int(l) - 1] == "shape" for l in labels], bool).reshape(-1)
    rb = np.asarray(out["boxes"], np.float64).reshape(-1, 4)[is_shape]
    rs = np.asarray(out["scores"], np.float64).reshape(-1)[is_shape]
    rv = np.asarray(out.get("views", np.zeros(len(labels), np.int64))).reshape(-1)[is_shape]
    view_iou = pairwise_iou_xywh(boxes, np.c_[rb[:, :2], rb[:, 2:] - rb[:, :2]])[0] if len(rb) else np.zeros((n, 0))
    st_boxes = np.array([d.bbox for d in strokes], np.float64).reshape(-1, 4)
    st_scores = np.array([d.score for d in strokes], np.float64)
    if len(st_boxes):        # the share of each stroke box inside each candidate
        st_in = pairwise_iou_xywh(boxes, st_boxes)[1] / (st_boxes[:, 2] * st_boxes[:, 3] + 1e-9)[None]
    h_img, w_img = gray.shape
    s = 512.0 / max(h_img, w_img)                     # lengths are read at the real images' 512 px
    ink = gray < 255
    # the ink along each box's four edges (sorted): columns x to x + w - 1, rows y to y + h - 1
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2] - 1, y0 + boxes[:, 3] - 1
    edges = edge_ink(ink, x0, y0, x1, y1, 24)
    index = np.arange(n)
    for i, d in enumerate(candidates):
        x, y, w, h = d.bbox
        comp = tuple(map(float, d.bbox)) in comps
        higher = rank_of < rank_of[i]
        inside = (inter[i] / area > 0.85) & (index != i)
        f = {"score": d.score, "comp": float(comp and d.score >= 0.5), "part": float(not comp and d.score >= 0.5),
             "split": float(comp and d.score < 0.5), "left": float(not comp and d.score < 0.5),
             "net_best": net_scores[net_iou[i] >= 0.5].max(initial=0) if net_iou.shape[1] else 0.0,
             "net_iou": net_iou[i][net_scores >= 0.3].max(initial=0) if net_iou.shape[1] else 0.0,
             "n_comp": len(comps) / 3, "n_cand": n / 10, "rank": rank_of[i] / n,
             "hi_iou": iou[i, higher].max(initial=0), "in_hi": (inter[i] / area[i])[higher].max(initial=0),
             "n_in": float((inside & (scores >= 0.5)).sum()), "s_in": scores[inside].max(initial=0)}
        seen = np.zeros(n_views)                      # each view's best score for a shape box here
        if view_iou.shape[1]:
            near = view_iou[i] >= 0.6
            for v in range(n_views):
                seen[v] = rs[near & (rv == v)].max(initial=0)
        f.update(v_mean=seen.mean(), v_min=seen.min(), v_n=float((seen > 0.05).sum()) / n_views)
        # boxes hold their ink as COCO's do: columns x to x + w - 1, rows y to y + h - 1
        ix0, iy0 = int(max(0, x)), int(max(0, y))
        ix1, iy1 = int(min(w_img, x + w)), int(min(h_img, y + h))
        f["ink"] = float(ink[iy0:iy1, ix0:ix1].mean()) if ix1 > ix0 and iy1 > iy0 else 0.0
        f.update(b0=edges[i, 0], b1=edges[i, 1], b2=edges[i, 2], b3=edges[i, 3])
        m = max(1, int(round(8 / s)))
        ox0, oy0, ox1, oy1 = max(0, ix0 - m), max(0, iy0 - m), min(w_img, ix1 + m), min(h_img, iy1 + m)
        around, within = ink[oy0:oy1, ox0:ox1].sum(), ink[iy0:iy1, ix0:ix1].sum()
        f["ring"] = float(around - within) / (float(around) + 1)
        if len(st_boxes):
            sure = st_scores >= CONFIDENT_STROKE
            cut = (st_in[i] > 0.15) & (st_in[i] <= 0.85)
            f.update(st_in=float(((st_in[i] > 0.85) & sure).sum()) / 10, st_cut=float((cut & sure).sum()),
                     st_cut_s=st_scores[cut].max(initial=0))
        else:
            f.update(st_in=0.0, st_cut=0.0, st_cut_s=0.0)
        f.update(w=w * s / 100, h=h * s / 100, lasp=np.log((w + 1) / (h + 1)), larea=np.log(w * h * s * s + 1),
                 frac_img=w * h / (w_img * h_img))
        feats[i] = [f[k] for k in SHAPE_FEATURES]
    return feats


def shape_targets(candidates: list, truth: list) -> np.ndarray:
    """The target of each shape candidate: the IoU of the true shape (``[x, y, w, h]`` boxes) it
    matches when the candidates are matched by falling score, as COCO matches them (IoU >= 0.5, each
    true shape once), else 0."""
    target = np.zeros(len(candidates), np.float32)
    if not truth or not candidates:
        return target
    idx = sorted(range(len(candidates)), key=lambda i: -candidates[i].score)
    iou = pairwise_iou_xywh([candidates[i].bbox for i in idx], truth)[0]
    for row, j in greedy_match(iou, 0.5).items():
        target[idx[row]] = iou[row, j]
    return target
