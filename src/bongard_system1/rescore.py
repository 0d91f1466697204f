"""The rescorer: a small second stage that re-ranks the detector's stroke detections and the hybrid's shapes.

The detector's candidate boxes hold nearly every real stroke (an earlier model's held a box at IoU
>= 0.5 for 97 to 99% of them); what it loses is ranking: confident pieces of a stroke, boxes over two strokes in a row, and
duplicates score above right boxes. Hand-made rules against each of those lost AP (see
docs/measurements.md); this stage learns the ranking instead. For each stroke detection, after the
views are fused, the stamp vote and the snap, it reads 34 features (:data:`FEATURES`):

* the detector: the fused score, its rank in the image, each view's best score for a box of the same
  type there (mean, minimum, spread, how many views see it) and the other type's best score;
* its neighbours: overlap with better-scored strokes of the same and the other type, better-scored
  boxes that hold it, smaller confident boxes inside it, the best shape box around it;
* the ink: how much of the box is ink, how much of its diagonals and midlines runs on ink, whether
  the ink runs on past the ends of that line (a piece of a longer stroke), ink on the box's four
  edges, and ink in a ring just outside it;
* the box's size and aspect.

Small MLPs (:func:`build_rescorer_net`), :data:`NETS` of them trained alike from different seeds, map
them to a new score, the mean of their probabilities. They are trained after the detector,
on the detector's own outputs for synthetic images it never saw (drawn like its training data, from
the random stream ``(seed, 0x5C0E, i)``), with a soft target: the IoU of the true stroke each
detection matches when the detections are matched greedily by score as COCO matches them (0 for a
duplicate, a piece, a merge, or a false alarm). It never sees a real image.

Measured offline on the 8-epoch quick model's dumped four-view outputs, trained on 800 synthetic
images: synthetic validation strokes AP 0.706 -> 0.734, real strokes AP 0.691 -> 0.723 and AP50
0.871 -> 0.904 (see docs/measurements.md).

Its shape part (:mod:`rescore_shapes`, since version 3): :data:`NETS` more MLPs of the same make,
trained in the same pass over the same images, re-rank the hybrid's shape boxes (see that module).

The features depend on how the detector ran (views, test sizes, stroke boxes snapped or not), so a
rescorer is used only with the settings it was trained with (:meth:`Rescorer.matches`), and its
shape part only in the hybrid shape mode (:meth:`Rescorer.rescores_shapes`).
"""

from __future__ import annotations

import sys
import time

import cv2
import numpy as np

from .boxes import greedy_match, pairwise_iou_xywh

RESCORE_MIN_SCORE = 0.05      # the fused score from which strokes are rescored (the default threshold)
FEATURES = ("score", "rank", "rel", "rank_t", "arc", "w", "h", "lasp", "larea", "n_str",
            "hi_same", "hi_other", "lo_same", "n_in", "s_in", "in_hi", "in_hi_s",
            "v_mean", "v_min", "v_std", "v_n", "vo_max", "shape_iou",
            "ink", "cov", "cov_diag", "cov_axis", "ext_min", "ext_max", "b0", "b1", "b2", "b3", "ring")
HIDDEN = 32
EPOCHS = 15
NETS = 5                      # nets averaged (seeds seed * 1009 + k)
MIN_DETECTIONS = 64           # fewer rows (or none right) train no rescorer part: strokes, or shapes


def on_ink(ink: np.ndarray, p0, p1, n: int = 24) -> float:
    """The share of ``n`` points evenly spaced from ``p0`` to ``p1`` that fall on ink (outside the
    image counts as no ink)."""
    return float(on_ink_many(ink, [p0], [p1], n)[0])


def on_ink_many(ink: np.ndarray, p0, p1, n: int = 24) -> np.ndarray:
    """:func:`on_ink` for many segments at once: ``p0`` and ``p1`` hold one ``(x, y)`` a row; returns
    one share a row (the same figures as :func:`on_ink` row by row, in one pass)."""
    p0 = np.asarray(p0, np.float64).reshape(-1, 2)
    p1 = np.asarray(p1, np.float64).reshape(-1, 2)
    t = np.linspace(0.0, 1.0, n)[None, :, None]
    pts = p0[:, None] * (1 - t) + p1[:, None] * t
    h, w = ink.shape
    xs = np.clip(np.round(pts[..., 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(pts[..., 1]).astype(int), 0, h - 1)
    inside = (pts[..., 0] >= 0) & (pts[..., 0] < w) & (pts[..., 1] >= 0) & (pts[..., 1] < h)
    return (ink[ys, xs] & inside).mean(axis=1)


def stroke_features(gray: np.ndarray, strokes: list, shapes: list, out: dict, names: list[str],
                    n_views: int) -> np.ndarray:
    """The :data:`FEATURES` of each stroke detection (``.bbox`` xywh, ``.score``, ``.category``), in the
    order given; ``shapes``: the network's shape detections (fused, before the hybrid or the snap,
    so that the features do not depend on the shape mode); ``out``: the image's network outputs
    (``System1.network_outputs``: every view's boxes xyxy, scores, labels, views); ``names``: the
    model's class names."""
    n = len(strokes)
    feats = np.zeros((n, len(FEATURES)), np.float32)
    if not n:
        return feats
    order = np.argsort([-d.score for d in strokes], kind="stable")
    rank_of = np.empty(n, int)
    rank_of[order] = np.arange(n)
    boxes = np.array([d.bbox for d in strokes], np.float64)
    scores = np.array([d.score for d in strokes], np.float64)
    types = np.array([d.category for d in strokes])
    iou, inter = pairwise_iou_xywh(boxes, boxes)
    area = boxes[:, 2] * boxes[:, 3] + 1e-9
    top = float(scores.max())
    shape_iou = pairwise_iou_xywh(boxes, [d.bbox for d in shapes])[0] if shapes else np.zeros((n, 0))
    rb = np.asarray(out["boxes"], np.float64).reshape(-1, 4)
    rs = np.asarray(out["scores"], np.float64)
    rv = np.asarray(out.get("views", np.zeros(len(rs), np.int64)))
    rtype = np.array([names[int(l) - 1].split("/")[0] for l in np.asarray(out["labels"])])
    view_iou = pairwise_iou_xywh(boxes, np.c_[rb[:, :2], rb[:, 2:] - rb[:, :2]])[0] if len(rb) else np.zeros((n, 0))
    h_img, w_img = gray.shape
    s = 512.0 / max(h_img, w_img)                     # lengths are read at the real images' 512 px
    ink = gray < 128
    ink_wide = cv2.dilate(ink.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    index = np.arange(n)
    covs, best, past, edges = _ink_lines(ink, ink_wide, boxes, s)
    for i, d in enumerate(strokes):
        x, y, w, h = d.bbox
        same = types == d.category
        higher = rank_of < rank_of[i]
        others = index != i
        inside_me = inter[i] / area                   # the share of each other box inside this one
        me_inside = inter[i] / area[i]                # the share of this box inside each other one
        f = {"score": d.score, "rank": rank_of[i] / n, "rel": d.score / top,
             "rank_t": float((same & higher).sum()), "arc": float(d.category == "arc"),
             "w": w * s / 100, "h": h * s / 100, "lasp": np.log((w + 1) / (h + 1)), "larea": np.log(w * h * s * s + 1),
             "n_str": n / 50,
             "hi_same": iou[i, same & higher].max(initial=0), "hi_other": iou[i, ~same & higher].max(initial=0),
             "lo_same": iou[i, same & ~higher & others].max(initial=0),
             "n_in": float(((inside_me > 0.9) & same & others & (scores >= 0.3)).sum()),
             "s_in": scores[(inside_me > 0.9) & same & others].max(initial=0),
             "in_hi": me_inside[same & higher].max(initial=0),
             "in_hi_s": scores[(me_inside > 0.9) & same & higher].max(initial=0),
             "shape_iou": shape_iou[i].max(initial=0) if shape_iou.shape[1] else 0.0}
        # each view's best score for a box of this type (and of the other stroke type) at this box
        own, other = np.zeros(n_views), np.zeros(n_views)
        if view_iou.shape[1]:
            near = view_iou[i] >= 0.6
            for v in range(n_views):
                sel = near & (rv == v)
                own[v] = rs[sel & (rtype == d.category)].max(initial=0)
                other[v] = rs[sel & (rtype != d.category) & (rtype != "shape")].max(initial=0)
        f.update(v_mean=own.mean(), v_min=own.min(), v_std=own.std(), v_n=float((own > 0.05).sum()) * 4 / n_views,
                 vo_max=other.max())
        # the ink in and around the box
        x0, y0, x1, y1 = x, y, x + w, y + h
        ix0, iy0 = int(max(0, x0)), int(max(0, y0))
        ix1, iy1 = int(min(w_img, x1 + 1)), int(min(h_img, y1 + 1))
        f["ink"] = float(ink[iy0:iy1, ix0:ix1].mean()) if ix1 > ix0 and iy1 > iy0 else 0.0
        k = int(best[i])
        f.update(cov=covs[i, k], cov_diag=covs[i, :2].max(), cov_axis=covs[i, 2:].max(),
                 ext_min=past[i].min(), ext_max=past[i].max(), b0=edges[i, 0], b1=edges[i, 1], b2=edges[i, 2],
                 b3=edges[i, 3])
        m = int(6 / s)
        ox0, oy0, ox1, oy1 = max(0, ix0 - m), max(0, iy0 - m), min(w_img, ix1 + m), min(h_img, iy1 + m)
        around, within = ink[oy0:oy1, ox0:ox1].sum(), ink[iy0:iy1, ix0:ix1].sum()
        f["ring"] = float(around - within) / (float(around) + 1)
        feats[i] = [f[k] for k in FEATURES]
    return feats


def _ink_lines(ink: np.ndarray, ink_wide: np.ndarray, boxes: np.ndarray, s: float):
    """The ink along lines of each stroke box (xywh rows), for all boxes in one pass each: ``covs``
    (n x 4), the wide ink along the two diagonals and the two midlines; ``best``, the line of each
    that runs most on ink; ``past`` (n x 2), the wide ink just past either end of that line (12 px
    at 512); ``edges`` (n x 4), the ink along the box's four edges, sorted."""
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    my, mx = (y0 + y1) / 2, (x0 + x1) / 2
    # each box's four lines: the diagonals, the horizontal midline, the vertical one
    starts = np.stack([np.c_[x0, y0], np.c_[x0, y1], np.c_[x0, my], np.c_[mx, y0]], axis=1)
    ends = np.stack([np.c_[x1, y1], np.c_[x1, y0], np.c_[x1, my], np.c_[mx, y1]], axis=1)
    n = len(boxes)
    covs = on_ink_many(ink_wide, starts.reshape(-1, 2), ends.reshape(-1, 2)).reshape(n, 4)
    best = covs.argmax(axis=1)
    a, b = starts[np.arange(n), best], ends[np.arange(n), best]
    u = (b - a) / (np.linalg.norm(b - a, axis=1, keepdims=True) + 1e-9)
    past = np.c_[on_ink_many(ink_wide, a - u * 12 / s, a - u * 2 / s, 8), on_ink_many(ink_wide, b + u * 2 / s, b + u * 12 / s, 8)]
    return covs, best, past, edge_ink(ink, x0, y0, x1, y1, 16)


def edge_ink(ink: np.ndarray, x0, y0, x1, y1, n: int) -> np.ndarray:
    """The ink along the four edges of each box (corner coordinates as arrays), ``n`` points an
    edge, sorted: one row of four a box."""
    starts = np.stack([np.c_[x0, y0], np.c_[x0, y1], np.c_[x0, y0], np.c_[x1, y0]], axis=1).reshape(-1, 2)
    ends = np.stack([np.c_[x1, y0], np.c_[x1, y1], np.c_[x0, y1], np.c_[x1, y1]], axis=1).reshape(-1, 2)
    return np.sort(on_ink_many(ink, starts, ends, n).reshape(-1, 4), axis=1)


def greedy_targets(strokes: list, truth: dict[str, list]) -> np.ndarray:
    """The rescorer's target for each stroke detection: the IoU of the true stroke it matches when
    the detections of each type are matched by falling score, as COCO matches them (IoU >= 0.5, each
    true stroke once), else 0. ``truth``: true ``[x, y, w, h]`` boxes by type (line, arc)."""
    target = np.zeros(len(strokes), np.float32)
    for typ, boxes in truth.items():
        idx = [i for i in sorted(range(len(strokes)), key=lambda i: -strokes[i].score) if strokes[i].category == typ]
        if not boxes or not idx:
            continue
        iou = pairwise_iou_xywh([strokes[i].bbox for i in idx], boxes)[0]
        for row, j in greedy_match(iou, 0.5).items():
            target[idx[row]] = iou[row, j]
    return target


def build_rescorer_net(num_features: int = len(FEATURES), hidden: int = HIDDEN):
    from torch import nn
    return nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1))


class Rescorer:
    """A trained rescorer (a checkpoint's ``rescorer`` entry), applied to one image's strokes and,
    where the entry holds its shape nets (version 3 on), to the hybrid's shapes."""

    def __init__(self, entry: dict):
        self.settings = dict(entry["settings"])
        self.mean, self.std, self.nets = _load_nets(entry, len(FEATURES))
        self.shapes = None
        if entry.get("shapes") is not None:
            from .rescore_shapes import SHAPE_FEATURES
            self.shapes = _load_nets(entry["shapes"], len(SHAPE_FEATURES))

    def matches(self, system) -> bool:
        """True when ``system`` (a :class:`predict.System1`) runs as the rescorer was trained to read."""
        return (self.settings.get("views") == system.views and list(self.settings.get("test_sizes", ()))
                == list(system.test_sizes) and self.settings.get("stroke_mode") == system.stroke_mode)

    def rescores_shapes(self, system) -> bool:
        """True when it also re-ranks ``system``'s shapes: it has shape nets and the shapes are the hybrid's."""
        return self.shapes is not None and system.shape_mode == "hybrid"

    def scores(self, features: np.ndarray) -> np.ndarray:
        """New stroke scores (the mean of the nets' probabilities) from :func:`stroke_features`."""
        return _mean_probability(self.mean, self.std, self.nets, features)

    def shape_scores(self, features: np.ndarray) -> np.ndarray:
        """New shape scores from :func:`rescore_shapes.shape_features`."""
        return _mean_probability(*self.shapes, features)


def _load_nets(entry: dict, num_features: int):
    """The normalisation and the MLPs of one part of a rescorer entry."""
    import torch
    mean = torch.as_tensor(np.asarray(entry["mean"], np.float32))
    std = torch.as_tensor(np.asarray(entry["std"], np.float32))
    if len(mean) != num_features:
        raise ValueError(f"it reads {len(mean)} features where this version reads {num_features}")
    nets = []
    for state in entry.get("state_dicts") or [entry["state_dict"]]:    # one net before version 2
        net = build_rescorer_net(len(mean))
        net.load_state_dict(state)
        nets.append(net.eval())
    return mean, std, nets


def _mean_probability(mean, std, nets, features: np.ndarray) -> np.ndarray:
    import torch
    if not len(features):
        return np.zeros(0, np.float32)
    with torch.inference_mode():
        x = (torch.from_numpy(np.asarray(features, np.float32)) - mean) / std
        return torch.stack([torch.sigmoid(net(x).squeeze(1)) for net in nets]).mean(0).numpy()


def rescorer_training_set(system, num_images: int, seed: int, image_size: int, max_shapes: int = 3,
                          progress: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Features and targets of ``system``'s stroke detections (without a rescorer) and of its hybrid's
    shape candidates on ``num_images`` synthetic images drawn like its training data (image ``i``
    from the stream ``(seed, 0x5C0E, i)``): ``{"strokes": (x, y), "shapes": (x, y)}``."""
    from tqdm import tqdm
    from .logo.render import render
    from .logo.sample import sample_image
    from .baseline import classical_shapes
    from .predict import hybrid_shapes, refine_shapes
    from .rescore_shapes import shape_features, shape_targets
    parts = {"strokes": ([], []), "shapes": ([], [])}
    for i in tqdm(range(num_images), desc="rescorer images", unit="img", disable=not progress, file=sys.stderr,
                  leave=False):
        shapes, pen = sample_image(np.random.default_rng([int(seed), 0x5C0E, i]), max_shapes=max_shapes)
        r = render(shapes, image_size, pen_width=pen)
        truth = {"line": [], "arc": []}
        for shape, boxes in zip(shapes, r.stroke_boxes or []):
            for action, box in zip(shape.actions, boxes):
                if box is not None:
                    truth[action.kind].append(box)
        out = system.network_outputs([r.image])[0]
        mode, system.shape_mode = system.shape_mode, "model"       # the network's own shape boxes
        try:
            dets = system.postprocess(r.image, out, RESCORE_MIN_SCORE, rescore=False)
        finally:
            system.shape_mode = mode
        strokes = [d for d in dets if d.category != "shape"]
        network_shapes = [d for d in dets if d.category == "shape"]
        parts["strokes"][0].append(stroke_features(r.image, strokes, network_shapes, out, system.names, system.n_views))
        parts["strokes"][1].append(greedy_targets(strokes, truth))
        snapped, comps = refine_shapes(r.image, network_shapes, "snap"), classical_shapes(r.image)
        candidates = hybrid_shapes(r.image, snapped, components=comps)
        parts["shapes"][0].append(shape_features(r.image, candidates, snapped, strokes, out, system.names,
                                                 system.n_views, components=comps))
        parts["shapes"][1].append(shape_targets(candidates, [b for b in r.shape_boxes or [] if b is not None]))
    return {k: (np.concatenate(x), np.concatenate(y)) for k, (x, y) in parts.items()}


def _train_net(xn, yt, seed: int):
    """One rescorer MLP trained from ``seed`` on normalised features and soft targets; returns it and
    its mean loss over the last 20 batches."""
    import torch
    torch.manual_seed(seed)
    net = build_rescorer_net(xn.shape[1])
    opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-4)
    losses = []
    for _ in range(EPOCHS):
        for b in torch.randperm(len(xn)).split(512):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xn[b]).squeeze(1), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return net, float(np.mean(losses[-20:]))


def _train_part(x: np.ndarray, y: np.ndarray, seed: int) -> dict | None:
    """:data:`NETS` MLPs trained alike on one part's features and targets (seeds ``seed * 1009 + k``):
    its normalisation, state_dicts and metrics, or None when there are fewer than
    :data:`MIN_DETECTIONS` rows or none right (nothing to learn from)."""
    import torch
    if len(x) < MIN_DETECTIONS or not (y > 0).any():
        return None
    mean, std = x.mean(0), x.std(0) + 1e-6
    xn = torch.from_numpy((x - mean) / std)
    yt = torch.from_numpy(y)
    nets, final = zip(*(_train_net(xn, yt, seed * 1009 + k) for k in range(NETS)))
    metrics = {"detections": int(len(x)), "matched": int((y > 0).sum()),
               "final_loss": round(float(np.mean(final)), 4), "nets": NETS}
    return {"mean": mean.tolist(), "std": std.tolist(),
            "state_dicts": [{k: v.detach().cpu() for k, v in net.state_dict().items()} for net in nets],
            "metrics": metrics}


def train_rescorer(system, num_images: int, seed: int = 0, image_size: int = 416, progress: bool = True) -> dict | None:
    """Train a rescorer for ``system`` (a :class:`predict.System1` loaded without one) on
    ``num_images`` synthetic images; returns the checkpoint entry (settings, mean, std, state_dicts: one per net,
    metrics, and ``shapes``: the shape nets' own mean, std, state_dicts and metrics, or None), or None
    when the detector gave fewer than ``MIN_DETECTIONS`` stroke detections or none that matches a
    true stroke (nothing to learn from)."""
    t0 = time.time()
    data = rescorer_training_set(system, num_images, seed, image_size, progress=progress)
    entry = _train_part(*data["strokes"], seed)
    if entry is None:
        return None
    entry["shapes"] = _train_part(*data["shapes"], seed)
    entry["settings"] = {"images": int(num_images), "seed": int(seed), "image_size": int(image_size),
                         "views": system.views, "test_sizes": list(system.test_sizes),
                         "stroke_mode": system.stroke_mode}
    entry["metrics"]["seconds"] = round(time.time() - t0, 1)
    return entry
