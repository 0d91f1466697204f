"""COCO box metrics for shape and stroke detections: loading COCO files, AP/AR with faster-coco-eval,
per-category and per-problem-type breakdowns, stroke-style accuracy, category mapping by name, and
scoring any ``predict_fn(gray) -> detections`` over the images of a COCO file.

Nothing here imports torch; model-driven helpers import it lazily.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from .boxes import greedy_match, pairwise_iou_xywh
from .data.coco import check_usable, read_coco, warn_if_nothing_in_common
from .errors import System1Error
from .io_utils import write_json_atomic  # noqa: F401  (re-exported for callers of this module)
from .wording import counted

HEADLINE = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")


# ----------------------------------------------------------------------------------------------
# COCO files


def load_coco(path, annotations: bool = True) -> dict:
    """Read a COCO detection file; a missing file, bad JSON, a non-COCO layout or a record without
    the fields scoring needs is a System1Error (:func:`data.coco.read_coco`). ``annotations`` False:
    a file of image records only (for prediction) is taken too."""
    return read_coco(path, annotations=annotations)


# ----------------------------------------------------------------------------------------------
# metrics


def coco_subset(gt: dict, image_ids) -> dict:
    """The COCO dict restricted to the given image ids (its images and their annotations)."""
    keep = set(image_ids)
    return dict(gt, images=[im for im in gt["images"] if im["id"] in keep],
                annotations=[a for a in gt.get("annotations", []) if a["image_id"] in keep])


def val_split(gt: dict) -> dict:
    """A synthetic dataset's file (image records with ``split``) restricted to its val split; any
    other COCO dict as it is."""
    if not any(im.get("split") == "val" for im in gt["images"]):
        return gt
    return coco_subset(gt, [im["id"] for im in gt["images"] if im.get("split") == "val"])


def _slim_gt(gt: dict) -> dict:
    """A copy of the fields COCOeval needs, so that it neither mutates nor drags the caller's dict."""
    images = [{"id": im["id"], "width": im.get("width", 0), "height": im.get("height", 0)} for im in gt["images"]]
    anns = []
    for i, a in enumerate(gt["annotations"]):
        x, y, w, h = (float(v) for v in a["bbox"])
        anns.append({
            "id": a.get("id", i + 1), "image_id": a["image_id"], "category_id": a["category_id"],
            "bbox": [x, y, w, h], "area": float(a.get("area", w * h)), "iscrowd": int(a.get("iscrowd", 0)),
        })
    cats = [{"id": c["id"], "name": c.get("name", str(c["id"]))} for c in gt["categories"]]
    return {"images": images, "annotations": anns, "categories": cats}


def _slim_dets(detections: list[dict]) -> list[dict]:
    out = []
    for d in detections:
        x, y, w, h = (float(v) for v in d["bbox"])
        out.append({"image_id": d["image_id"], "category_id": d["category_id"], "bbox": [x, y, w, h],
                    "score": float(d.get("score", 1.0))})
    return out


def _mean_valid(s) -> float | None:
    s = np.asarray(s)
    v = s[s > -1]
    return float(v.mean()) if v.size else None


def _summ(ev, ap: bool, *, iou=None, area="all", max_dets=100, k=None) -> float | None:
    """One number from an accumulated COCOeval, as COCOeval._summarize; undefined (COCO's -1: no
    ground truth in that area range or category) becomes None, written as null."""
    p = ev.params
    a = list(p.areaRngLbl).index(area)
    m = list(p.maxDets).index(max_dets)
    s = ev.eval["precision"] if ap else ev.eval["recall"]
    if iou is not None:
        s = s[np.flatnonzero(np.isclose(np.asarray(p.iouThrs), iou))]
    kk = slice(None) if k is None else [k]
    s = s[:, :, kk, a, m] if ap else s[:, kk, a, m]
    return _mean_valid(s)


AREA_RANGES = {"APs": (0, 32 ** 2), "APm": (32 ** 2, 96 ** 2), "APl": (96 ** 2, 1e10)}   # COCO's


def _zeros(anns: list) -> dict:
    """The headline of no detections: 0.0, or None where no ground truth lies in the area range."""
    out = {k: 0.0 for k in HEADLINE}
    for key, (lo, hi) in AREA_RANGES.items():
        if not any(lo <= a.get("area", a["bbox"][2] * a["bbox"][3]) <= hi for a in anns if not a.get("iscrowd", 0)):
            out[key] = None
    return out


def _run_eval(coco_gt, coco_dt, img_ids, cat_names, verbose=False):
    """Headline numbers (and per-category AP/AP50) for a subset of image ids."""
    from faster_coco_eval import COCOeval_faster

    ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=(print if verbose else (lambda *a, **k: None)))
    ev.params.imgIds = sorted(img_ids)
    ev.evaluate()
    ev.accumulate()
    if verbose:
        ev.summarize()
    out = {
        "AP": _summ(ev, True), "AP50": _summ(ev, True, iou=0.5), "AP75": _summ(ev, True, iou=0.75),
        "APs": _summ(ev, True, area="small"), "APm": _summ(ev, True, area="medium"),
        "APl": _summ(ev, True, area="large"), "AR100": _summ(ev, False),
    }
    per_cat = {}
    for k, cid in enumerate(ev.params.catIds):
        name = cat_names.get(cid, str(cid))
        per_cat[name] = {"AP": _summ(ev, True, k=k), "AP50": _summ(ev, True, iou=0.5, k=k)}
    return out, per_cat


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xywh boxes, COCO convention (continuous coordinates, area w*h)."""
    return pairwise_iou_xywh(a, b)[0]


def style_matches(gt_anns: list[dict], detections: list[dict], *, iou_thr: float = 0.5) -> list[tuple[str, str | None]]:
    """Greedy one-to-one matching per (image, category): detections by falling score each take the
    unmatched gt of highest IoU (>= iou_thr). Returns (gt style, detection style) for matched gts."""
    gts, dts = defaultdict(list), defaultdict(list)
    for a in gt_anns:
        if not a.get("iscrowd", 0):
            gts[a["image_id"], a["category_id"]].append(a)
    for d in detections:
        dts[d["image_id"], d["category_id"]].append(d)
    pairs = []
    for key, g in gts.items():
        d = dts.get(key)
        if not d:
            continue
        d = sorted(d, key=lambda x: -float(x.get("score", 1.0)))
        ious = _iou_matrix(np.array([x["bbox"] for x in d], float).reshape(-1, 4),
                           np.array([x["bbox"] for x in g], float).reshape(-1, 4))
        pairs += [(g[j].get("style"), d[i].get("style")) for i, j in greedy_match(ious, iou_thr).items()]
    return pairs


def _style_block(gt_anns, detections, style_on: bool) -> dict:
    if not style_on:
        return {"style_accuracy": None, "style_matched": 0}
    # only annotations that have a style (stroke categories) take part: shapes have none
    pairs = style_matches([a for a in gt_anns if a.get("style") is not None], detections)
    per_style = defaultdict(lambda: [0, 0])
    for g, d in pairs:
        per_style[g][0] += int(g == d)
        per_style[g][1] += 1
    right = sum(v[0] for v in per_style.values())
    return {
        "style_accuracy": right / len(pairs) if pairs else 0.0,
        "style_matched": len(pairs),
        "style_accuracy_per_style": {s: v[0] / v[1] for s, v in sorted(per_style.items())},
    }


def coco_metrics(gt: dict, detections: list[dict], *, per_type: bool = True, verbose: bool = False) -> dict:
    """COCO box metrics of ``detections`` (COCO results: image_id, category_id, bbox xywh, score,
    optional style) against the COCO dict ``gt``. Returns a JSON-able dict; see the module docs.

    ``style_accuracy`` is None (not applicable) unless gt annotations carry ``style`` and either some
    detection carries ``style`` or there are no detections (then it is 0.0). ``verbose`` prints
    faster-coco-eval's summary table.
    """
    from faster_coco_eval import COCO

    img_ids = [im["id"] for im in gt["images"]]
    known = set(img_ids)
    stray = {d["image_id"] for d in detections} - known
    if stray:
        raise System1Error(f"{len(stray)} image id(s) in the detections are not in the ground truth "
                           f"(e.g. {sorted(stray, key=str)[0]!r}): wrong COCO file?")
    cat_names = {c["id"]: c.get("name", str(c["id"])) for c in gt["categories"]}
    gt_anns = gt["annotations"]
    style_on = any("style" in a for a in gt_anns) and (not detections or any("style" in d for d in detections))

    quiet = (print if verbose else (lambda *a, **k: None))
    coco_gt = COCO(_slim_gt(gt), print_function=quiet)
    dts = _slim_dets(detections)
    coco_dt = coco_gt.loadRes(dts) if dts else None

    def block(ids: list, anns: list, dets: list) -> tuple[dict, dict]:
        if coco_dt is None or not dets:
            head = _zeros(anns)
            present = {a["category_id"] for a in anns}
            per_cat = {cat_names[c]: ({"AP": 0.0, "AP50": 0.0} if c in present else {"AP": None, "AP50": None})
                       for c in sorted(cat_names)}
        else:
            head, per_cat = _run_eval(coco_gt, coco_dt, ids, cat_names, verbose=verbose)
        head.update(num_images=len(ids), num_gt=len(anns), num_detections=len(dets))
        return head, per_cat

    out, per_cat = block(img_ids, gt_anns, detections)
    if len(cat_names) > 1:
        out["per_category"] = per_cat
    out.update(_style_block(gt_anns, detections, style_on))

    if per_type:
        types = {im["id"]: im["problem_type"] for im in gt["images"] if "problem_type" in im}
        if types:
            by_type = {}
            for t in sorted(set(types.values()), key=str):
                ids = [i for i in img_ids if types.get(i) == t]
                sub = set(ids)
                anns = [a for a in gt_anns if a["image_id"] in sub]
                if not anns:
                    continue
                dets = [d for d in detections if d["image_id"] in sub]
                head, _ = block(ids, anns, dets)
                if style_on:
                    head.update(_style_block(anns, dets, True))
                by_type[str(t)] = head
            out["per_type"] = by_type
    return out


# ----------------------------------------------------------------------------------------------
# category names and predictors


def map_categories(detections_by_name: list[dict], gt: dict) -> list[dict]:
    """Give detections that name their ``category`` ("shape", "line", "arc") the gt file's id for that
    name; names the file does not have are dropped. A detection without ``category`` keeps its
    ``category_id``. Returns new dicts; the inputs are not changed."""
    ids = {c["name"]: c["id"] for c in gt["categories"]}
    out = []
    for d in detections_by_name:
        name = d.get("category")
        if name is None:
            if "category_id" not in d:
                raise ValueError("detection has neither 'category' nor 'category_id'")
            out.append(dict(d))
        elif name in ids:
            e = dict(d)
            e["category_id"] = ids[name]
            out.append(e)
    return out


def check_images(coco: dict, root) -> None:
    """Every image of a COCO dict is found under ``root`` and can be read, or one System1Error, before
    any work (:func:`predict.check_image_files`)."""
    from .predict import check_image_files
    check_image_files([Path(root) / im["file_name"] for im in coco["images"]],
                      "check --images-root or the file's file_name fields")


def evaluate_predictor(predict_fn, coco_path, images_root=None, *, progress: bool = True,
                       split: str | None = None, verbose: bool = False,
                       images_checked: bool = False) -> tuple[dict, list[dict]]:
    """Run ``predict_fn(gray_uint8_image) -> [{bbox, score, category, style?}, ...]`` on every image
    of a COCO file and score the result. Images are read as grayscale from ``images_root`` (default:
    the COCO file's folder) joined with each ``file_name``. ``split`` keeps only image records whose
    ``split`` equals it. Returns (metrics with ``ms_per_image``, the detections in COCO result form).
    ``ms_per_image`` is the mean wall time of ``predict_fn`` alone (image reading excluded). Every
    image is read once before the first prediction (:func:`check_images`) unless ``images_checked``."""
    from tqdm import tqdm

    from .predict import as_gray

    coco_path = Path(coco_path)
    gt = load_coco(coco_path)
    root = Path(images_root) if images_root is not None else coco_path.parent
    if split is not None:
        images = [im["id"] for im in gt["images"] if im.get("split") == split]
        if not images:
            raise System1Error(f"no images with split {split!r} in {coco_path}")
        gt = coco_subset(gt, images)
    check_usable(gt, coco_path)
    if not images_checked:
        check_images(gt, root)
    detections: list[dict] = []
    spent = 0.0
    for im in tqdm(gt["images"], desc="evaluate", unit="img", disable=not progress):
        gray = as_gray(root / im["file_name"])
        t0 = time.perf_counter()
        preds = predict_fn(gray)
        spent += time.perf_counter() - t0
        for p in preds:
            d = dict(p)
            d["image_id"] = im["id"]
            detections.append(d)
    detections = map_categories(detections, gt)
    metrics = coco_metrics(gt, detections, verbose=verbose)
    metrics["ms_per_image"] = 1000.0 * spent / max(1, len(gt["images"]))
    return metrics, detections


# ----------------------------------------------------------------------------------------------
# models


def combined_gt(data_dir, split: str | None = "val", max_images: int | None = None) -> dict:
    """One COCO dict with categories shape (1), line (2) and arc (3) from a dataset folder's two files,
    restricted to ``split`` (when image records carry one) and to the first ``max_images`` images."""
    data_dir = Path(data_dir)
    shapes = load_coco(data_dir / "shapes_coco.json")
    strokes = load_coco(data_dir / "strokes_coco.json")
    images = [im for im in shapes["images"] if split is None or im.get("split", split) == split]
    if max_images:
        images = images[:max_images]
    keep = {im["id"] for im in images}
    stroke_names = {c["id"]: c["name"] for c in strokes["categories"]}
    new_id = {"shape": 1, "line": 2, "arc": 3}
    anns = []
    for a in shapes["annotations"]:
        if a["image_id"] in keep:
            anns.append({"id": len(anns) + 1, "image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"],
                         "area": a["bbox"][2] * a["bbox"][3], "iscrowd": 0})
    for a in strokes["annotations"]:
        if a["image_id"] in keep:
            anns.append({"id": len(anns) + 1, "image_id": a["image_id"],
                         "category_id": new_id[stroke_names[a["category_id"]]], "bbox": a["bbox"],
                         "area": a["bbox"][2] * a["bbox"][3], "iscrowd": 0, "style": a.get("style")})
    cats = [{"id": i, "name": n} for n, i in new_id.items()]
    return {"images": images, "annotations": anns, "categories": cats}


class CachedDetector:
    """A detector that remembers its detections of each image (by its pixels), so that the shapes and
    the strokes file of one image set are scored from one pass; ``seconds`` adds up the detection
    time of every call, a remembered image counting the time its first detection took."""

    def __init__(self, detector):
        self.detector = detector
        self.seconds = 0.0
        self._seen: dict[bytes, tuple[list, float]] = {}

    def __getattr__(self, name):
        return getattr(self.__dict__["detector"], name)

    def detect(self, gray):
        import hashlib
        key = hashlib.blake2b(np.ascontiguousarray(gray).tobytes(), digest_size=16).digest() + str(gray.shape).encode()
        if key not in self._seen:
            t0 = time.perf_counter()
            dets = self.detector.detect(gray)
            self._seen[key] = (dets, time.perf_counter() - t0)
        dets, seconds = self._seen[key]
        self.seconds += seconds
        return dets


def _detector(model, device="auto", shape_mode="hybrid", test_size=None, stamp_vote=True, views=None, amp=True,
              stroke_mode="snap", rescore=True):
    if model == "baseline":
        from .baseline import ClassicalBaseline
        return ClassicalBaseline()
    from .predict import System1
    return System1.load(model, device=device, shape_mode=shape_mode, test_size=test_size, stamp_vote=stamp_vote,
                        views=views, amp=amp, stroke_mode=stroke_mode, rescore=rescore)


def evaluate_model(model_path, coco_path, images_root=None, device="auto", progress=True, shape_mode="hybrid",
                   detector=None, test_size=None, stamp_vote=True, views=None, amp=True, stroke_mode="snap",
                   rescore=True) -> dict:
    """COCO metrics of a trained model (a .pt file, a run folder, or ``"baseline"``) on a COCO file.

    A synthetic dataset file (image records with ``split``) is scored on its val split only.
    """
    gt = load_coco(coco_path)
    split = "val" if any(im.get("split") == "val" for im in gt["images"]) else None
    scored = coco_subset(gt, [im["id"] for im in gt["images"] if im.get("split") == split]) if split else gt
    check_usable(scored, coco_path)      # the file and its images, before the model loads
    check_images(scored, Path(images_root) if images_root is not None else Path(coco_path).parent)
    det = detector if detector is not None else _detector(model_path, device, shape_mode, test_size, stamp_vote,
                                                           views, amp, stroke_mode, rescore)
    warn_if_nothing_in_common(det, [c.get("name") for c in gt["categories"]], model_path, coco_path)

    def predict_fn(gray):
        return [d if isinstance(d, dict) else d.to_dict() for d in det.detect(gray)]

    spent = det.seconds if isinstance(det, CachedDetector) else None
    metrics, _ = evaluate_predictor(predict_fn, coco_path, images_root, progress=progress, split=split,
                                    images_checked=True)
    if spent is not None:       # remembered images count the time their first detection took
        metrics["ms_per_image"] = 1000.0 * (det.seconds - spent) / max(1, metrics.get("num_images") or 1)
    metrics["model"] = str(model_path)
    metrics["coco_file"] = str(coco_path)
    metrics["split"] = split or "all"
    if getattr(det, "test_size", None):
        sizes = getattr(det, "test_sizes", (det.test_size,))
        metrics["test_size"] = det.test_size if len(sizes) == 1 else list(sizes)
    if getattr(det, "views", None):
        metrics["views"] = det.views
    if getattr(det, "shape_mode", None):
        metrics["shape_mode"] = det.shape_mode
    if getattr(det, "stroke_mode", None):
        metrics["stroke_mode"] = det.stroke_mode
    if hasattr(det, "stamp_vote"):
        metrics["stamp_vote"] = det.stamp_vote is not None
    if hasattr(det, "rescorer"):
        metrics["rescorer"] = det.rescorer is not None
    if hasattr(det, "precision"):
        metrics["precision"] = det.precision
    return metrics


def cli_evaluate(args):
    import sys
    from .io_utils import check_not_an_input, check_output_file, coco_folder
    from .predict import note_flags_the_baseline_ignores
    note_flags_the_baseline_ignores(args)
    check_output_file(args.out)
    check_not_an_input(args.out, [args.coco, args.images_root or coco_folder(args.coco),
                                  None if args.model == "baseline" else args.model])
    m = evaluate_model(args.model, args.coco, args.images_root, device=args.device, shape_mode=args.shape_mode,
                       test_size=args.test_size, stamp_vote=not args.no_stamp_vote, views=args.views,
                       amp=not args.fp32, stroke_mode=args.stroke_mode, rescore=not args.no_rescore,
                       progress=not args.no_progress and sys.stderr.isatty())
    write_json_atomic(args.out, m)
    line = f"AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}  AP75 {m['AP75']:.3f}  AR100 {m['AR100']:.3f}"
    if m.get("style_accuracy") is not None:
        line += f"  style accuracy {m['style_accuracy']:.3f} ({m.get('style_matched', 0)} strokes matched)"
    print(line)
    for t, v in (m.get("per_type") or {}).items():
        print(f"  {t}: AP {v['AP']:.3f}  AP50 {v['AP50']:.3f}")
    which = " (the val split of a generated dataset)" if m.get("split") == "val" else ""
    print(f"{counted(m.get('num_images'), 'image')} scored{which}, {m['ms_per_image']:.1f} ms each; metrics written to {args.out}")
    return 0
