"""The detector's goals, measured: real shapes and strokes beside the classical baseline, synthetic
validation, per problem type, synthetic shapes beside the baseline where they touch, and CPU
inference time for ResNet-18 and ResNet-50.

    python benchmarks/detector_goals.py --run WORKDIR/runs/quick --data WORKDIR/processed_data/quick_synthetic \
        [--real ../shared/real-bongard-logo] [--out results/detector_goals.json] [--test-size S]

The network runs once per image (on each of its test-time views); the three ways shape boxes meet the
ink (model, snap, hybrid; see ``bongard_system1.predict``) are scored from the same outputs, the hybrid's
shapes with and without the rescorer's shape nets (``hybrid``, what ``detect`` gives, and
``hybrid_unrescored``), strokes with and without the rescorer, with and without their snap to the ink (unsnapped strokes are not
rescored: the rescorer reads snapped ones), and real strokes also from the first view alone (what
``--views 1`` gives; the rescorer, trained on four views, is left out there), side by side.
"""

import json
import os
import sys
import time

import cv2

from _common import REAL_DEFAULT, check_out, existing, parser, real_folder, run, write_out
from bongard_system1.argtypes import non_empty_path, positive_float, test_size_px
from bongard_system1.baseline import ClassicalBaseline, unseparated_shapes
from bongard_system1.evaluate import coco_metrics, combined_gt, load_coco, map_categories
from bongard_system1.precision import autocast, autocast_dtype
from bongard_system1.predict import SHAPE_MODES, System1, refine_shapes
from bongard_system1.settings import MAX_VIEWS

HERE = os.path.dirname(os.path.abspath(__file__))
GOALS = [("real shapes AP", ("real_shapes", "hybrid", "AP"), 0.99),
         ("real shapes AP (bd)", ("real_shapes", "hybrid", "per_type", "bd", "AP"), 0.99),
         ("real strokes AP50", ("real_strokes", "AP50"), 0.90),
         ("real strokes AP", ("real_strokes", "AP"), 0.70),
         ("real stroke style accuracy", ("real_strokes", "style_accuracy"), 0.95),
         ("synthetic AP (all categories)", ("synthetic_all", "AP"), 0.85),
         ("synthetic AP50 (all categories)", ("synthetic_all", "AP50"), 0.95)]


def _get(d, path):
    for k in path:
        d = d[k]
    return d


def detect_variants(system, gray, one_view=False):
    """From one network pass: shapes four ways (the network's, snapped, the hybrid's, the hybrid's
    rescored: what ``detect`` gives); strokes with the stamp vote, snapped to the ink and
    rescored (what ``detect`` gives), not rescored (``unrescored``), neither snapped nor rescored
    (``unsnapped``), and snapped and rescored without the vote (``plain``); the seconds that pass and
    the post-processing took (what ``detect`` costs); with ``one_view``, also the strokes (vote,
    snapped, no rescorer) from the first view's outputs alone. ``system`` has shape mode ``model``
    (the network's boxes, refined here; the hybrid that ``detect`` gives is its own pass) and stroke
    mode ``snap``."""
    def strokes_of(dets):
        return [d for d in dets if d.category != "shape"]

    t = time.perf_counter()
    out = system.network_outputs([gray])[0]
    mode, system.shape_mode = system.shape_mode, "hybrid"
    try:
        raw = system.postprocess(gray, out)         # what detect gives
    finally:
        system.shape_mode = mode
    seconds = time.perf_counter() - t
    strokes = strokes_of(raw)
    rescored_shapes = [d for d in raw if d.category == "shape"]
    network = system.postprocess(gray, out, rescore=False)
    shapes = [d for d in network if d.category == "shape"]
    unrescored = strokes_of(network)
    plain = strokes_of(system.postprocess(gray, out, stamp_vote=False))
    single = None
    mode, system.stroke_mode = system.stroke_mode, "model"      # the rescorer is skipped for unsnapped boxes
    try:
        unsnapped = strokes_of(system.postprocess(gray, out))
    finally:
        system.stroke_mode = mode
    if one_view:
        first = {k: v[out["views"] == 0] for k, v in out.items()}
        views, system.views = system.views, 1
        try:
            single = strokes_of(system.postprocess(gray, first))
        finally:
            system.views = views
    shape_sets = {mode: refine_shapes(gray, shapes, mode) for mode in SHAPE_MODES}
    shape_sets["hybrid_unrescored"], shape_sets["hybrid"] = shape_sets["hybrid"], rescored_shapes
    return (shape_sets,
            {"strokes": strokes, "unrescored": unrescored, "unsnapped": unsnapped, "plain": plain,
             "single": single}, seconds)


def _as_results(dets, image_id):
    return [dict(d.to_dict(), image_id=image_id) for d in dets]


def score_real(system, real_dir, progress=True):
    shapes_gt = load_coco(os.path.join(real_dir, "shapes_coco.json"))
    strokes_gt = load_coco(os.path.join(real_dir, "strokes_coco.json"))
    base = ClassicalBaseline()
    variants = {"model": [], "snap": [], "hybrid_unrescored": [], "hybrid": []}
    strokes = {"strokes": [], "unrescored": [], "unsnapped": [], "plain": [], "single": []}
    baseline = []
    t_model = 0.0
    for k, im in enumerate(shapes_gt["images"]):
        gray = cv2.imread(os.path.join(real_dir, im["file_name"]), cv2.IMREAD_GRAYSCALE)
        shape_sets, stroke_sets, seconds = detect_variants(system, gray, one_view=True)
        t_model += seconds
        for name, dets in shape_sets.items():
            variants[name] += _as_results(dets, im["id"])
        for name, dets in stroke_sets.items():
            strokes[name] += _as_results(dets, im["id"])
        baseline += [dict(d, image_id=im["id"]) for d in base.detect(gray)]
        if progress and k % 100 == 0:
            print(f"  real image {k}/{len(shapes_gt['images'])}", file=sys.stderr)
    out = {"real_shapes": {n: coco_metrics(shapes_gt, map_categories(v, shapes_gt)) for n, v in variants.items()},
           "real_strokes": coco_metrics(strokes_gt, map_categories(strokes["strokes"], strokes_gt)),
           "real_strokes_without_rescorer": coco_metrics(strokes_gt, map_categories(strokes["unrescored"], strokes_gt)),
           "real_strokes_unsnapped": coco_metrics(strokes_gt, map_categories(strokes["unsnapped"], strokes_gt)),
           "real_strokes_without_stamp_vote": coco_metrics(strokes_gt, map_categories(strokes["plain"], strokes_gt)),
           "real_strokes_first_view_only": coco_metrics(strokes_gt, map_categories(strokes["single"], strokes_gt)),
           "baseline_real_shapes": coco_metrics(shapes_gt, map_categories(baseline, shapes_gt)),
           "real_ms_per_image": round(1000 * t_model / len(shapes_gt["images"]), 1)}
    # strokes per problem type are in real_strokes["per_type"]
    return out


def _subset(gt, image_ids, category=None):
    cats = [c for c in gt["categories"] if category is None or c["name"] == category]
    ids = {c["id"] for c in cats}
    return dict(gt, categories=cats, images=[im for im in gt["images"] if im["id"] in image_ids],
                annotations=[a for a in gt["annotations"] if a["image_id"] in image_ids and a["category_id"] in ids])


def score_synthetic(system, data_dir, max_images=400):
    """All categories on the synthetic validation images (the goals), and their shapes beside the
    classical baseline: on every image, and on the images where shapes touch or cross (some shape
    that no ink component boxes on its own; see ``baseline.unseparated_shapes``)."""
    gt = combined_gt(data_dir, split="val", max_images=max_images)
    shape_id = next(c["id"] for c in gt["categories"] if c["name"] == "shape")
    shape_boxes = {}
    for a in gt["annotations"]:
        if a["category_id"] == shape_id:
            shape_boxes.setdefault(a["image_id"], []).append(a["bbox"])
    base = ClassicalBaseline()
    dets, plain, unsnapped, unrescored, baseline, touching = [], [], [], [], [], set()
    shapes = {mode: [] for mode in (*SHAPE_MODES, "hybrid_unrescored")}
    for im in gt["images"]:
        gray = cv2.imread(os.path.join(data_dir, im["file_name"]), cv2.IMREAD_GRAYSCALE)
        shape_sets, st, _ = detect_variants(system, gray)
        dets += _as_results(shape_sets["hybrid"] + st["strokes"], im["id"])
        plain += _as_results(shape_sets["hybrid"] + st["plain"], im["id"])
        unsnapped += _as_results(shape_sets["hybrid_unrescored"] + st["unsnapped"], im["id"])
        unrescored += _as_results(shape_sets["hybrid_unrescored"] + st["unrescored"], im["id"])
        for mode, found in shape_sets.items():
            shapes[mode] += _as_results(found, im["id"])
        comps = base.detect(gray)
        baseline += [dict(d, image_id=im["id"]) for d in comps]
        if unseparated_shapes(gray, shape_boxes.get(im["id"], []), components=comps):
            touching.add(im["id"])
    all_m = coco_metrics(gt, map_categories(dets, gt), per_type=False)
    without = coco_metrics(gt, map_categories(plain, gt), per_type=False)
    by_images = {}
    for name, ids in (("all", {im["id"] for im in gt["images"]}), ("touching", touching)):
        sub = _subset(gt, ids, "shape")
        by_images[name] = {"images": len(ids), **{
            mode: coco_metrics(sub, map_categories([d for d in found if d["image_id"] in ids], sub), per_type=False)
            for mode, found in (("baseline", baseline), *shapes.items())}}
    return {"synthetic_all": all_m,
            "synthetic_all_without_rescorer": coco_metrics(gt, map_categories(unrescored, gt), per_type=False),
            "synthetic_all_strokes_unsnapped": coco_metrics(gt, map_categories(unsnapped, gt), per_type=False),
            "synthetic_style_accuracy": {"with_stamp_vote": all_m.get("style_accuracy"),
                                         "without": without.get("style_accuracy")},
            "synthetic_shapes": by_images}


def inference_ms(backbone, image_size, repeats=10):
    """ms per 512 px image, batch 1, with the network seeing ``image_size`` px: in fp32 and, where this
    CPU multiplies bf16 in hardware, under bf16 autocast (what inference uses there), timed in turn."""
    import torch
    from bongard_system1.model import ModelConfig, build_model
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, image_size=image_size)).eval()
    x = [torch.rand(1, 512, 512)]
    fast = autocast_dtype("cpu")
    dtypes = {"fp32": None} if fast is None else {"fp32": None, "bf16": fast}
    times = {k: [] for k in dtypes}
    with torch.inference_mode():
        for name, dtype in dtypes.items():
            with autocast("cpu", dtype):
                for _ in range(2):
                    model(x)
        for _ in range(repeats):          # alternate, so that both see the same machine load
            for name, dtype in dtypes.items():
                with autocast("cpu", dtype):
                    t = time.perf_counter()
                    model(x)
                    times[name].append(time.perf_counter() - t)
    return {k: round(1000 * sum(v) / len(v), 1) for k, v in times.items()}


def main():
    ap = parser(__doc__)
    ap.add_argument("--run", required=True, type=non_empty_path, help="training run folder or best.pt")
    ap.add_argument("--data", required=True, type=non_empty_path,
                    help="the synthetic dataset the model was trained on (val split)")
    ap.add_argument("--real", default=REAL_DEFAULT, type=non_empty_path,
                    help="the real set's folder (or one of its COCO files)")
    ap.add_argument("--out", default=None, type=non_empty_path, help="write every figure as JSON here")
    ap.add_argument("--wall-minutes", type=positive_float, default=None, help="pipeline wall time to report")
    ap.add_argument("--test-size", type=test_size_px, default=None,
                    help="inference size (default: the model's, 1.15x its training size)")
    ap.add_argument("--views", type=int, default=None, choices=range(1, MAX_VIEWS + 1),
                    help="test-time views (default: the package's, see bongard_system1.views)")
    ap.add_argument("--fp32", action="store_true", help="run the network in fp32 (default: as the package does)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="where the model runs (the CPU inference timings are taken only with cpu)")
    a = ap.parse_args()
    existing(a.data, "--data")
    a.real = real_folder(a.real)
    check_out(a.out, [a.run, a.data, a.real])
    import torch                    # torch only now: --help and bad flags answer at once
    torch.set_num_threads(os.cpu_count() or 1)
    system = System1.load(a.run, device=a.device, shape_mode="model", stroke_mode="snap", test_size=a.test_size,
                          views=a.views, amp=not a.fp32)
    res = {"run": os.path.abspath(a.run), "model_config": system.config, "test_size": system.test_size, "views": system.views,
           "stamp_vote": system.stamp_vote is not None, "rescorer": system.rescorer is not None,
           "precision": system.precision}
    res.update(score_real(system, a.real))
    res.update(score_synthetic(system, a.data))
    sizes = sorted({416, system.test_size})
    res["cpu_inference_ms_512px"] = {f"{b}@{n}": inference_ms(b, n) for b in ("resnet18", "resnet50")
                                     for n in sizes} if a.device == "cpu" else None
    res["wall_minutes"] = a.wall_minutes
    rows = []
    for label, path, goal in GOALS:
        v = _get(res, path)
        v = 0.0 if v is None else float(v)
        rows.append({"goal": label, "target": goal, "measured": round(v, 4), "met": v >= goal,
                     "distance": round(v - goal, 4)})
    res["goals"] = rows
    print(json.dumps(res["goals"], indent=1))
    print("\n| | baseline AP | model AP | snap AP | hybrid AP, not rescored | hybrid AP | hybrid AP50 |")
    print("|---|---|---|---|---|---|---|")
    for t in ["all"] + sorted(res["baseline_real_shapes"].get("per_type", {})):
        def g(m):
            return m if t == "all" else m["per_type"][t]
        print(f"| shapes {t} | {g(res['baseline_real_shapes'])['AP']:.3f} | {g(res['real_shapes']['model'])['AP']:.3f} | "
              f"{g(res['real_shapes']['snap'])['AP']:.3f} | {g(res['real_shapes']['hybrid_unrescored'])['AP']:.3f} | "
              f"{g(res['real_shapes']['hybrid'])['AP']:.3f} | "
              f"{g(res['real_shapes']['hybrid'])['AP50']:.3f} |")
    print("\n| strokes | AP | AP50 | AP75 | style accuracy |\n|---|---|---|---|---|")
    for t in ["all"] + sorted(res["real_strokes"].get("per_type", {})):
        m = res["real_strokes"] if t == "all" else res["real_strokes"]["per_type"][t]
        p = res["real_strokes_without_stamp_vote"]
        p = p if t == "all" else p["per_type"][t]
        sa, sp = m.get("style_accuracy"), p.get("style_accuracy")
        print(f"| {t} | {m['AP']:.3f} | {m['AP50']:.3f} | {m['AP75']:.3f} | {'-' if sa is None else f'{sa:.3f}'}"
              f" (without the stamp vote {'-' if sp is None else f'{sp:.3f}'}) |")
    for t in ["all"] + sorted(res["real_strokes"].get("per_type", {})):
        m, u = res["real_strokes_without_rescorer"], res["real_strokes_unsnapped"]
        m, u = (m, u) if t == "all" else (m["per_type"][t], u["per_type"][t])
        print(f"strokes {t} (no rescorer): AP / AP50 / AP75 snapped to the ink {m['AP']:.3f} / {m['AP50']:.3f} / {m['AP75']:.3f}, "
              f"as the network gives them {u['AP']:.3f} / {u['AP50']:.3f} / {u['AP75']:.3f}")
    for t in ["all"] + sorted(res["real_strokes"].get("per_type", {})):
        m, u = res["real_strokes"], res["real_strokes_without_rescorer"]
        m, u = (m, u) if t == "all" else (m["per_type"][t], u["per_type"][t])
        print(f"strokes {t}: AP / AP50 / AP75 rescored {m['AP']:.3f} / {m['AP50']:.3f} / {m['AP75']:.3f}, "
              f"without the rescorer {u['AP']:.3f} / {u['AP50']:.3f} / {u['AP75']:.3f}")
    m = res["real_strokes_first_view_only"]
    print(f"first view only: AP {m['AP']:.3f} AP50 {m['AP50']:.3f} AP75 {m['AP75']:.3f} style {m['style_accuracy']:.3f}; "
          + ", ".join(f"{t} {v['AP']:.3f}/{v['AP50']:.3f}" for t, v in sorted(m.get("per_type", {}).items())))
    for label, s in (("", res["synthetic_all"]), (", without the rescorer", res["synthetic_all_without_rescorer"]),
                     (", strokes unsnapped, without the rescorer", res["synthetic_all_strokes_unsnapped"])):
        print(f"\nsynthetic val (all categories{label}): AP {s['AP']:.3f} AP50 {s['AP50']:.3f}; per category "
              + ", ".join(f"{k} {v['AP']:.3f}" for k, v in s.get("per_category", {}).items()))
    print("\n| synthetic val shapes, AP / AP50 | images | baseline | model | snap | hybrid, not rescored | hybrid |\n"
          "|---|---|---|---|---|---|---|")
    for name, m in res["synthetic_shapes"].items():
        label = "every image" if name == "all" else "images where shapes touch or cross"
        print(f"| {label} | {m['images']} | " + " | ".join(f"{m[k]['AP']:.3f} / {m[k]['AP50']:.3f}"
                                                       for k in ("baseline", "model", "snap", "hybrid_unrescored",
                                                                 "hybrid")) + " |")
    print("synthetic val stroke style accuracy, with / without the stamp vote (the vote reads holes at 512 px:",
          "it means little on a dataset drawn smaller with band stamps):", res["synthetic_style_accuracy"])
    print("CPU inference ms per 512 px image (network, one view, fp32 / bf16 autocast):", res["cpu_inference_ms_512px"])
    print(f"ms per real image, {system.views} view(s), {res['precision']}, network + fusion + vote + stroke snap + hybrid + rescorer:",
          res["real_ms_per_image"])
    write_out(a.out, res)
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    run(main)
