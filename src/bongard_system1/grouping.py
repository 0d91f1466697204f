"""Which shape each stroke is drawn in: an image's detections parsed into shapes, each with its strokes.

A Bongard-LOGO shape is one connected pen trace, and a box drawn tight around ink (as every box here
is: ground truth, snapped strokes, the hybrid's shapes) meets that ink on all four of its sides. So a
stroke belongs to the ink component (the classical baseline's: ink, a 9x9 dilation, connected
components) that reaches the most sides of its box, and to the shape whose box meets that same
component; where shapes touch or cross, one component holds several shapes, and the stroke goes to
the one whose box holds most of the stroke's ink. And since every ink pixel of a shape lies in one of
its strokes' boxes, ink of a kept shape that no kept stroke covers is a stroke the threshold dropped:
the best lower-scored stroke that covers it joins (:func:`fill_gaps`). Nothing here is learned, and
nothing imports torch.

:func:`assign_strokes` is the rule; :func:`parse_detections` applies it to the detections kept at an
operating point; :func:`parse_scores` measures a set of parses against COCO files whose strokes carry
``shape_ann_id`` (the real set's and the generator's do), and :func:`score_parses` a detector's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .baseline import ink_components
from .boxes import greedy_match, pairwise_iou_xywh
from .settings import PARSE_MIN_SCORE

EDGE_BAND = 2          # px: ink this close inside a box's side counts as meeting that side
TIE = 0.9              # shapes whose boxes hold at least this share of the best one's ink tie
FILL_MIN_INK = 25      # px of a 512 px image (scaled by area): uncovered ink a stroke must cover to fill a gap
FILL_NEW_SHARE = 0.5   # ... and at least this share of the stroke box's ink must be uncovered
FILL_FLOOR = 0.05      # strokes scored this or more (below the parse's threshold) may fill gaps: all that
                       # System1.detect gives by default


def _window(box, shape) -> tuple[int, int, int, int]:
    """Integer pixel window [x0, x1) x [y0, y1) of an ``[x, y, w, h]`` box, clipped to the image."""
    h, w = shape
    x0 = min(max(int(math.floor(box[0])), 0), w)
    y0 = min(max(int(math.floor(box[1])), 0), h)
    x1 = min(max(int(math.ceil(box[0] + box[2])), x0), w)
    y1 = min(max(int(math.ceil(box[1] + box[3])), y0), h)
    return x0, y0, x1, y1


def box_component(labels: np.ndarray, box, band: int = EDGE_BAND) -> int:
    """The ink component a tight box was drawn around: the one whose ink meets the most of the box's
    four sides (within ``band`` px inside each), then the one with the most ink in the box; 0 when the
    box holds no ink."""
    x0, y0, x1, y1 = _window(box, labels.shape)
    win = labels[y0:y1, x0:x1]
    if not win.size or not win.any():
        return 0
    sides = (win[:, :band], win[:, -band:], win[:band, :], win[-band:, :])
    found, amount = np.unique(win[win > 0], return_counts=True)
    best = max(range(len(found)), key=lambda k: (sum(bool((s == found[k]).any()) for s in sides), amount[k]))
    return int(found[best])


def assign_strokes(gray: np.ndarray, shape_boxes, stroke_boxes, shape_scores=None, *,
                   labels: np.ndarray | None = None) -> list[int]:
    """For each stroke box, the index of the shape box it is drawn in, or -1 when no shape box holds
    any of it. Boxes are ``[x, y, w, h]`` in ``gray``'s pixels (a 2-D uint8 image, black on white).

    A stroke's candidates are the shapes drawn around its ink component (:func:`box_component`); when
    none is (that shape was not kept), the stroke stays unassigned, unless no shape box meets any ink.
    Among them it goes to the one whose box holds most of the component's ink inside the stroke's box,
    then (``shape_scores``) the higher scored, then the smaller box; where another holds nearly as
    much (``TIE``: the stroke lies in two shapes' boxes, where shapes touch), :func:`_settle_ties`
    decides. With no ink to go by, the shape box that covers most of the stroke box wins."""
    gray = np.asarray(gray)
    labels = ink_components(gray) if labels is None else labels
    shape_boxes = [list(map(float, b)) for b in shape_boxes]
    if not shape_boxes:
        return [-1] * len(stroke_boxes)
    scores = [0.0] * len(shape_boxes) if shape_scores is None else [float(s) for s in shape_scores]
    shape_comp = [box_component(labels, b) for b in shape_boxes]
    windows = [_window(b, labels.shape) for b in shape_boxes]
    _, inter = pairwise_iou_xywh(stroke_boxes, shape_boxes)
    out, tied = [], {}
    for i, sb in enumerate(stroke_boxes):
        comp = box_component(labels, sb)
        if comp == 0:
            j = int(np.argmax(inter[i]))
            out.append(j if inter[i, j] > 0 else -1)
            continue
        sx0, sy0, sx1, sy1 = _window(sb, labels.shape)
        mine = labels[sy0:sy1, sx0:sx1] == comp
        cands = [j for j, c in enumerate(shape_comp) if c == comp]
        if not cands and not any(shape_comp):      # no shape box meets ink: go by the boxes alone
            cands = list(range(len(shape_boxes)))
        if not cands:                                # the stroke's shape was not kept
            out.append(-1)
            continue

        def held(j):     # the stroke's own ink (its component, inside its box) that shape j's box holds
            x0, y0, x1, y1 = windows[j]
            return int(mine[max(y0 - sy0, 0):max(y1 - sy0, 0), max(x0 - sx0, 0):max(x1 - sx0, 0)].sum())

        amount = {j: held(j) for j in cands}
        best = max(cands, key=lambda j: (amount[j], scores[j], -shape_boxes[j][2] * shape_boxes[j][3]))
        out.append(best if amount[best] > 0 or inter[i, best] > 0 else -1)
        ties = [j for j in cands if amount[best] > 0 and amount[j] >= TIE * amount[best]]
        if len(ties) > 1:
            tied[i] = ties
    return _settle_ties(out, tied, shape_boxes, stroke_boxes)


def fill_gaps(gray: np.ndarray, shape_boxes, kept_boxes, spare_boxes, *, labels: np.ndarray | None = None,
              min_ink: float = FILL_MIN_INK, new_share: float = FILL_NEW_SHARE) -> list[int]:
    """Which of the ``spare_boxes`` (strokes scored below the threshold, best first) fill the gaps that
    the ``kept_boxes`` leave in the kept shapes: indices into ``spare_boxes``, in the order taken.

    Every ink pixel of a shape lies in the box of one of its strokes (on the real set's ground truth:
    every pixel, in all 1,302 shapes). So ink of a kept shape (its component, inside its box) that no
    kept stroke box covers is a stroke the threshold dropped. The best scored spare stroke that covers
    ``min_ink`` such pixels or more (``min_ink`` is for a 512 px image and scales with the image's
    area), with at least ``new_share`` of its box's ink uncovered (not a box over a kept stroke and the
    gap), joins; then the next, until no spare stroke covers enough of what is left."""
    if not len(shape_boxes) or not len(spare_boxes):
        return []
    labels = ink_components(gray) if labels is None else labels
    comps = {box_component(labels, b) for b in shape_boxes} - {0}
    inside = np.zeros(labels.shape, bool)
    for b in shape_boxes:
        x0, y0, x1, y1 = _window(b, labels.shape)
        inside[y0:y1, x0:x1] = True
    gap = inside & np.isin(labels, list(comps))
    for b in kept_boxes:
        x0, y0, x1, y1 = _window(b, labels.shape)
        gap[y0:y1, x0:x1] = False
    if not gap.any():                 # the usual case: the kept strokes cover every kept shape's ink
        return []
    need = min_ink * labels.shape[0] * labels.shape[1] / 512 ** 2
    windows = [_window(b, labels.shape) for b in spare_boxes]
    ink_in = [int((labels[y0:y1, x0:x1] > 0).sum()) for x0, y0, x1, y1 in windows]
    taken = []
    while gap.any():
        pick = None
        for k, (x0, y0, x1, y1) in enumerate(windows):
            if k in taken:
                continue
            new = int(gap[y0:y1, x0:x1].sum())
            if new >= need and new >= new_share * ink_in[k]:
                pick = k                # spare boxes come best first: the first that fits is the best scored
                break
        if pick is None:
            break
        taken.append(pick)
        x0, y0, x1, y1 = windows[pick]
        gap[y0:y1, x0:x1] = False
    return taken


def _settle_ties(owner: list[int], tied: dict, shape_boxes, stroke_boxes) -> list[int]:
    """Strokes whose ink lies in several shapes' boxes nearly alike (where shapes touch, in the boxes'
    overlap) go to the shape whose box they explain: a shape's box is the union of its strokes' boxes,
    so each such stroke joins the shape whose box the union of its other strokes' boxes, with this one
    added, matches best (the biggest gain in IoU)."""
    if not tied:
        return owner
    owner = list(owner)

    def union_iou(members, j):
        if not members:
            return 0.0
        b = np.asarray([stroke_boxes[m] for m in members], np.float64)
        x0, y0 = b[:, 0].min(), b[:, 1].min()
        x1, y1 = (b[:, 0] + b[:, 2]).max(), (b[:, 1] + b[:, 3]).max()
        return float(pairwise_iou_xywh([[x0, y0, x1 - x0, y1 - y0]], [shape_boxes[j]])[0][0, 0])

    for _ in range(2):                      # a second pass sees the first pass's choices
        for i, ties in tied.items():
            def gain(j):
                others = [m for m, o in enumerate(owner) if o == j and m != i]
                return union_iou(others + [i], j) - union_iou(others, j)
            owner[i] = max(ties, key=lambda j: (round(gain(j), 6), j == owner[i]))
    return owner


@dataclass
class ParsedShape:
    """A shape and the strokes drawn in it (each a :class:`predict.Detection`, best score first)."""
    bbox: list            # [x, y, w, h] in the image's pixels
    score: float
    strokes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"bbox": [round(float(v), 2) for v in self.bbox], "score": round(float(self.score), 5),
                "strokes": [_det_dict(d) for d in self.strokes]}


@dataclass
class ImageParse:
    """An image's shapes with their strokes, and the kept strokes that no kept shape holds."""
    shapes: list
    unassigned: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"shapes": [s.to_dict() for s in self.shapes],
                "unassigned_strokes": [_det_dict(d) for d in self.unassigned]}


def _det_dict(d) -> dict:
    out = {"bbox": [round(float(v), 2) for v in d.bbox], "score": round(float(d.score), 5), "category": d.category}
    if getattr(d, "style", None):
        out["style"] = d.style
    return out


def parse_detections(gray, detections, shape_threshold: float = PARSE_MIN_SCORE,
                     stroke_threshold: float = PARSE_MIN_SCORE, fill_floor: float | None = FILL_FLOOR) -> ImageParse:
    """The shapes scored ``shape_threshold`` or more, best first, each with the strokes scored
    ``stroke_threshold`` or more that :func:`assign_strokes` puts in it. ``detections``: objects with
    ``bbox``, ``score``, ``category`` (shape, line or arc) and ``style``, as ``System1.detect`` gives,
    or dicts with those keys (as the classical baseline gives).

    Strokes scored from ``fill_floor`` up to ``stroke_threshold`` join where they fill a gap, ink of a
    kept shape that no kept stroke's box covers (:func:`fill_gaps`); they keep their own scores.
    ``fill_floor=None`` keeps the strokes above the threshold alone."""
    from .predict import Detection            # here: predict imports this module
    detections = [Detection(**d) if isinstance(d, dict) else d for d in detections]
    shapes = sorted((d for d in detections if d.category == "shape" and d.score >= shape_threshold),
                    key=lambda d: -d.score)
    strokes = sorted((d for d in detections if d.category != "shape"), key=lambda d: -d.score)
    kept = [d for d in strokes if d.score >= stroke_threshold]
    labels = ink_components(np.asarray(gray))
    if fill_floor is not None and fill_floor < stroke_threshold:
        spare = [d for d in strokes if fill_floor <= d.score < stroke_threshold]
        taken = fill_gaps(gray, [s.bbox for s in shapes], [d.bbox for d in kept], [d.bbox for d in spare],
                          labels=labels)
        kept += [spare[k] for k in sorted(taken)]
    owner = assign_strokes(gray, [s.bbox for s in shapes], [d.bbox for d in kept], [s.score for s in shapes],
                           labels=labels)
    parsed = [ParsedShape(list(s.bbox), float(s.score)) for s in shapes]
    loose = []
    for d, j in zip(kept, owner):
        (parsed[j].strokes if j >= 0 else loose).append(d)
    return ImageParse(parsed, loose)


# ----------------------------------------------------------------------------------------------
# measuring parses against ground truth


def _match(gt_boxes, det_boxes, same_class, iou_thr: float) -> dict[int, int]:
    """Greedy one-to-one matching, detections in the given order (best score first), each to the
    free ground-truth box of its class with the highest IoU >= ``iou_thr``: {detection: gt}."""
    if not len(gt_boxes) or not len(det_boxes):
        return {}
    iou, _ = pairwise_iou_xywh(det_boxes, gt_boxes)
    allowed = np.array([[same_class(i, g) for g in range(len(gt_boxes))] for i in range(len(det_boxes))], bool)
    return greedy_match(iou, iou_thr, allowed)


def parse_scores(shapes_gt: dict, strokes_gt: dict, parses: dict, *, iou_thr: float = 0.5) -> dict:
    """How right a set of parses is, overall and per ``problem_type`` where images have one.

    ``shapes_gt`` and ``strokes_gt``: COCO dicts of the same images (shape boxes; stroke boxes whose
    annotations carry ``shape_ann_id``, the id of their shape's annotation, and ``style``);
    ``parses``: {image_id: :class:`ImageParse`}. Shapes and strokes are matched one-to-one at IoU >=
    ``iou_thr`` (strokes only to the same type, line or arc). Returns fractions (None where there was
    nothing to count, and for the last three where no stroke annotation has ``shape_ann_id``):

    * ``shapes_found`` / ``shapes_precision``: ground-truth shapes matched / kept shapes that match;
    * ``strokes_found`` / ``strokes_precision``: the same for strokes, wherever they were put;
    * ``assigned_right``: of the found strokes whose shape was found too, those put in that shape;
    * ``shapes_exact``: ground-truth shapes found with every stroke found, put in them, and no other
      stroke put in them; ``shapes_exact_styled``: the same with every stroke's style right too.
    """
    cat_name = {c["id"]: c["name"] for c in strokes_gt["categories"]}
    by_img_shapes, by_img_strokes = defaultdict(list), defaultdict(list)
    for a in shapes_gt["annotations"]:
        by_img_shapes[a["image_id"]].append(a)
    for a in strokes_gt["annotations"]:
        by_img_strokes[a["image_id"]].append(a)
    counts = defaultdict(lambda: defaultdict(int))
    counts.setdefault("all", defaultdict(int))      # present even for a file without images
    linked = any("shape_ann_id" in a for a in strokes_gt["annotations"])
    for im in shapes_gt["images"]:
        iid = im["id"]
        parse = parses.get(iid, ImageParse([]))
        gshapes, gstrokes = by_img_shapes[iid], by_img_strokes[iid]
        kept = [(d, k) for k, s in enumerate(parse.shapes) for d in s.strokes] + [(d, -1) for d in parse.unassigned]
        kept.sort(key=lambda t: -t[0].score)
        smatch = _match([a["bbox"] for a in gshapes], [s.bbox for s in parse.shapes], lambda i, g: True, iou_thr)
        tmatch = _match([a["bbox"] for a in gstrokes], [d.bbox for d, _ in kept],
                        lambda i, g: kept[i][0].category == cat_name[gstrokes[g]["category_id"]], iou_thr)
        shape_of_gt = {g: k for k, g in smatch.items()}                     # gt shape index -> parsed shape
        gt_shape_index = {a["id"]: n for n, a in enumerate(gshapes)}
        stroke_of_gt = {g: i for i, g in tmatch.items()}
        c_all = [counts["all"]] + ([counts[im["problem_type"]]] if im.get("problem_type") else [])
        for c in c_all:
            c["images"] += 1
        good = defaultdict(lambda: [True, True])       # gt shape index -> [exact, exact with styles]
        for g, a in enumerate(gstrokes):
            gs = gt_shape_index.get(a.get("shape_ann_id"))
            i = stroke_of_gt.get(g)
            ks = shape_of_gt.get(gs)
            right = i is not None and ks is not None and kept[i][1] == ks
            if i is not None and ks is not None:
                for c in c_all:
                    c["assignable"] += 1
                    c["assigned_right"] += right
            if not right:
                good[gs] = [False, False]
            elif kept[i][0].style != a.get("style"):
                good[gs][1] = False
        for k, gs in smatch.items():                    # strokes put in a found shape that are not its own
            own = {g for g, a in enumerate(gstrokes) if gt_shape_index.get(a.get("shape_ann_id")) == gs}
            if any(owner == k and tmatch.get(i) not in own for i, (_, owner) in enumerate(kept)):
                good[gs] = [False, False]
        for c in c_all:
            c["gt_shapes"] += len(gshapes)
            c["kept_shapes"] += len(parse.shapes)
            c["shapes_matched"] += len(smatch)
            c["gt_strokes"] += len(gstrokes)
            c["kept_strokes"] += len(kept)
            c["strokes_matched"] += len(tmatch)
            for gs in range(len(gshapes)):
                exact = gs in shape_of_gt and good[gs][0]
                c["shapes_exact"] += exact
                c["shapes_exact_styled"] += exact and good[gs][1]

    def frac(a, b, needs_links=False):     # None where nothing was there to count
        return round(a / b, 4) if b and (linked or not needs_links) else None

    out = {}
    for key, c in counts.items():
        out[key] = {"images": c["images"], "shapes_found": frac(c["shapes_matched"], c["gt_shapes"]),
                    "shapes_precision": frac(c["shapes_matched"], c["kept_shapes"]),
                    "strokes_found": frac(c["strokes_matched"], c["gt_strokes"]),
                    "strokes_precision": frac(c["strokes_matched"], c["kept_strokes"]),
                    "assigned_right": frac(c["assigned_right"], c["assignable"], True),
                    "shapes_exact": frac(c["shapes_exact"], c["gt_shapes"], True),
                    "shapes_exact_styled": frac(c["shapes_exact_styled"], c["gt_shapes"], True),
                    "gt_shapes": c["gt_shapes"], "gt_strokes": c["gt_strokes"]}
    return out


def score_parses(detector, shapes_path, strokes_path, images_root=None, min_score: float = PARSE_MIN_SCORE) -> dict:
    """:func:`parse_scores` of the parses of ``detector.detect``'s detections (kept at ``min_score``)
    over the images of a shapes file and its strokes file (their val split when images carry one;
    images under ``images_root``, default the shapes file's folder), with the ``min_score``."""
    import os
    from .evaluate import load_coco, val_split
    from .predict import as_gray
    shapes_gt, strokes_gt = val_split(load_coco(shapes_path)), load_coco(strokes_path)
    root = images_root if images_root is not None else os.path.dirname(os.path.abspath(shapes_path))
    parses = {}
    for im in shapes_gt["images"]:
        gray = as_gray(os.path.join(root, im["file_name"]))
        parses[im["id"]] = parse_detections(gray, detector.detect(gray), min_score, min_score)
    return dict(parse_scores(shapes_gt, strokes_gt, parses), min_score=min_score)


def ground_truth_parses(shapes_gt: dict, strokes_gt: dict, images_root) -> dict:
    """The parse :func:`assign_strokes` makes of each image's ground-truth boxes (every score 1): what
    the rule alone gets right, with perfect shapes and strokes. {image_id: :class:`ImageParse`}."""
    import os
    from .predict import Detection, as_gray
    cat_name = {c["id"]: c["name"] for c in strokes_gt["categories"]}
    shapes, strokes = defaultdict(list), defaultdict(list)
    for a in shapes_gt["annotations"]:
        shapes[a["image_id"]].append(Detection(list(a["bbox"]), 1.0, "shape"))
    for a in strokes_gt["annotations"]:
        strokes[a["image_id"]].append(Detection(list(a["bbox"]), 1.0, cat_name[a["category_id"]], a.get("style")))
    out = {}
    for im in shapes_gt["images"]:
        gray = as_gray(os.path.join(images_root, im["file_name"]))
        out[im["id"]] = parse_detections(gray, shapes[im["id"]] + strokes[im["id"]], 1.0, 1.0)
    return out
