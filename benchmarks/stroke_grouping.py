"""Which shape each stroke is drawn in, measured: the grouping rule of ``bongard_system1.grouping`` on
ground-truth boxes (the rule alone), beside a plain box-overlap rule, and, given a model, whole parses
(``System1.parse``: kept shapes, kept strokes, each stroke put in a shape) against the ground truth, at
each minimum score, with the gaps filled by lower-scored strokes (the default) and without.

    python benchmarks/stroke_grouping.py [--real ../shared/real-bongard-logo]
        [--data WORKDIR/processed_data/quick_synthetic] [--run WORKDIR/runs/quick] [--out FILE.json]

On a synthetic dataset (``--data``, its val split) it also scores the images where shapes touch or
cross (no ink component boxes a shape on its own), where the rule has to do more than split the ink.
Measures only; there is no goal.
"""

import os
import sys
import time

import numpy as np

from _common import REAL_DEFAULT, REAL_NAMES, check_out, existing, is_none, parser, real_folder, run, write_out
from bongard_system1 import grouping
from bongard_system1.argtypes import non_empty_path
from bongard_system1.errors import System1Error
from bongard_system1.baseline import unseparated_shapes
from bongard_system1.boxes import pairwise_iou_xywh
from bongard_system1.evaluate import coco_subset, load_coco, val_split
from bongard_system1.predict import as_gray

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def box_overlap_rule(gray, shape_boxes, stroke_boxes, shape_scores=None, labels=None):
    """The plain alternative: each stroke to the shape box that overlaps its box most."""
    if not len(shape_boxes):
        return [-1] * len(stroke_boxes)
    _, inter = pairwise_iou_xywh(stroke_boxes, shape_boxes)
    return [int(np.argmax(r)) if r.max() > 0 else -1 for r in inter]


def load_sets(real, data):
    """{name: (shapes COCO, strokes COCO, images root)}: the real set, and a dataset's val split, whole
    and where shapes touch."""
    sets = {}
    if real:
        sets["real"] = (load_coco(os.path.join(real, "shapes_coco.json")),
                        load_coco(os.path.join(real, "strokes_coco.json")), real)
    if data:
        shapes = val_split(load_coco(os.path.join(data, "shapes_coco.json")))
        strokes = coco_subset(load_coco(os.path.join(data, "strokes_coco.json")), [im["id"] for im in shapes["images"]])
        boxes = {}
        for a in shapes["annotations"]:
            boxes.setdefault(a["image_id"], []).append(a["bbox"])
        touch = {im["id"] for im in shapes["images"]
                 if unseparated_shapes(as_gray(os.path.join(data, im["file_name"])), boxes.get(im["id"], []))}
        sets["synthetic val"] = (shapes, strokes, data)
        sets["synthetic val, shapes touch"] = (coco_subset(shapes, touch), coco_subset(strokes, touch), data)
    return sets


def rule_alone(sets):
    out = {}
    rule = grouping.assign_strokes
    for rule_name, fn in (("grouping rule", rule), ("box overlap", box_overlap_rule)):
        grouping.assign_strokes = fn
        try:
            for name, (shapes, strokes, root) in sets.items():
                out.setdefault(name, {})[rule_name] = grouping.parse_scores(
                    shapes, strokes, grouping.ground_truth_parses(shapes, strokes, root))
        finally:
            grouping.assign_strokes = rule
    return out


def whole_parses(system, sets):
    out = {}
    detections = {}
    for name, (shapes, strokes, root) in sets.items():
        t = time.perf_counter()
        for im in shapes["images"]:
            key = (root, im["file_name"])
            if key not in detections:
                gray = as_gray(os.path.join(root, im["file_name"]))
                detections[key] = (gray, system.detect(gray))
        seconds = time.perf_counter() - t
        out[name] = {"detect_seconds": round(seconds, 1)}
        for thr, fill in ((t, f) for t in THRESHOLDS for f in (grouping.FILL_FLOOR, None)):
            t = time.perf_counter()
            parses = {im["id"]: grouping.parse_detections(*detections[(root, im["file_name"])], thr, thr, fill)
                      for im in shapes["images"]}
            ms = 1000 * (time.perf_counter() - t) / max(len(parses), 1)
            out[name][f"min score {thr:g}" + ("" if fill else ", no fill")] = dict(
                grouping.parse_scores(shapes, strokes, parses), grouping_ms_per_image=round(ms, 2))
    return out


def show(title, table):
    print(f"\n{title}")
    keys = ("shapes_found", "shapes_precision", "strokes_found", "strokes_precision", "assigned_right",
            "shapes_exact", "shapes_exact_styled")
    print(f"  {'set':30s} {'variant':22s} {'type':4s} " + " ".join(f"{k[:14]:>14s}" for k in keys))
    for name, variants in table.items():
        for variant, scores in variants.items():
            if not isinstance(scores, dict):
                continue
            for typ, s in scores.items():
                if isinstance(s, dict):
                    cells = (f"{s[k]:14.4f}" if s[k] is not None else f"{'n/a':>14s}" for k in keys)
                    print(f"  {name:30s} {variant:22s} {typ:4s} " + " ".join(cells))


def main():
    ap = parser(__doc__)
    ap.add_argument("--real", default=None, type=non_empty_path,
                    help="the real set's folder (or one of its COCO files); 'none' to leave it out "
                         "(default: ../shared/real-bongard-logo beside the repository, when it is there)")
    ap.add_argument("--data", default=None, type=non_empty_path, help="a synthetic dataset folder (its val split is scored)")
    ap.add_argument("--run", default=None, type=non_empty_path, help="a training run folder or .pt: score whole parses too")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default=None, type=non_empty_path, help="write every figure as JSON")
    args = ap.parse_args()
    if args.data is not None:
        existing(args.data, "--data")
    if args.real is None:           # the default set, where it is; else only --data (said so)
        there = all(os.path.isfile(os.path.join(REAL_DEFAULT, n)) for n in REAL_NAMES)
        real = real_folder(REAL_DEFAULT) if there else None
        if real is None and args.data is None:
            raise System1Error(f"no real set at {os.path.normpath(REAL_DEFAULT)} and no --data: give --real DIR "
                               "or --data DATASET")
        if real is None:
            print(f"note: no real set at {os.path.normpath(REAL_DEFAULT)}: scoring --data only", file=sys.stderr)
    elif is_none(args.real):
        if args.data is None:
            ap.error("--real none leaves nothing to score without --data")
        real = None
    else:
        real = real_folder(args.real)
    check_out(args.out, [args.data, args.run, real])
    system = None
    if args.run:                    # the model loads before minutes of grouping
        from bongard_system1.predict import System1
        system = System1.load(args.run, device=args.device)
    sets = load_sets(real, args.data)
    report = {"sets": {n: {"images": len(s[0]["images"]), "shapes": len(s[0]["annotations"]),
                           "strokes": len(s[1]["annotations"])} for n, s in sets.items()}}
    t = time.perf_counter()
    report["rule_alone"] = rule_alone(sets)
    print(f"the rule on ground-truth boxes: {time.perf_counter() - t:.1f} s")
    show("Ground-truth shapes and strokes, grouped by each rule (assigned_right: strokes put in their own shape)",
         report["rule_alone"])
    if system is not None:
        report["model"] = {"run": args.run, "precision": system.precision}
        report["whole_parses"] = whole_parses(system, sets)
        show(f"System1.parse with {args.run} ({system.precision}), at each minimum score", report["whole_parses"])
    if args.out:
        write_out(args.out, report)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    run(main)
