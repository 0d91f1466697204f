"""COCO metrics, category mapping, COCO loading and predictor scoring (real Bongard-LOGO boxes)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from bongard_system1.errors import System1Error
from bongard_system1.evaluate import (HEADLINE, coco_metrics, evaluate_predictor, load_coco, map_categories,
                                      style_matches)
from bongard_system1.io_utils import sha256_file, write_json_atomic

from .conftest import REAL


def _real(name):
    p = REAL / name
    if not p.is_file():
        pytest.skip(f"real Bongard-LOGO set not found at {REAL}")
    return load_coco(p)


@pytest.fixture(scope="module")
def shapes():
    return _real("shapes_coco.json")


@pytest.fixture(scope="module")
def strokes():
    return _real("strokes_coco.json")


def _perfect(gt, with_style=True):
    out = []
    for a in gt["annotations"]:
        d = {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 1.0}
        if with_style and "style" in a:
            d["style"] = a["style"]
        out.append(d)
    return out


def _tiny_coco(cat_ids=(7, 3), names=("arc", "line")):
    return {
        "images": [{"id": 10, "file_name": "a.png", "width": 64, "height": 64, "problem_type": "ff"},
                   {"id": 11, "file_name": "b.png", "width": 64, "height": 64, "problem_type": "ff"},
                   {"id": 12, "file_name": "c.png", "width": 64, "height": 64, "problem_type": "hd"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": cat_ids[0], "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0,
             "style": "zigzag"},
            {"id": 2, "image_id": 11, "category_id": cat_ids[1], "bbox": [30, 30, 20, 10], "area": 200, "iscrowd": 0,
             "style": "normal"},
        ],
        "categories": [{"id": c, "name": n} for c, n in zip(cat_ids, names)],
    }


# --- coco_metrics on the real set ---------------------------------------------------------------


def test_perfect_shapes_give_one(shapes):
    gt_before = copy.deepcopy(shapes["annotations"][:5])
    m = coco_metrics(shapes, _perfect(shapes))
    for k in ("AP", "AP50", "AP75", "APm", "APl", "AR100"):
        assert m[k] == pytest.approx(1.0), k
    assert m["APs"] is None         # no small shapes in the real set: undefined, not 0
    assert m["num_images"] == len(shapes["images"]) == 896
    assert m["num_gt"] == m["num_detections"] == len(shapes["annotations"])
    assert "per_category" not in m  # one category
    assert m["style_accuracy"] is None  # shapes carry no style
    assert shapes["annotations"][:5] == gt_before  # the caller's dict is not mutated
    json.dumps(m)


def test_perfect_strokes_give_one_and_full_style_accuracy(strokes):
    m = coco_metrics(strokes, _perfect(strokes))
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["AR100"] == pytest.approx(1.0)
    assert set(m["per_category"]) == {"line", "arc"}
    assert all(v["AP"] == pytest.approx(1.0) for v in m["per_category"].values())
    assert m["style_accuracy"] == pytest.approx(1.0)
    assert m["style_matched"] == len(strokes["annotations"])
    json.dumps(m)


def test_per_type_has_the_three_problem_types(shapes):
    m = coco_metrics(shapes, _perfect(shapes))
    assert set(m["per_type"]) == {"ff", "bd", "hd"}
    assert {t: v["num_images"] for t, v in m["per_type"].items()} == {"ff": 336, "bd": 280, "hd": 280}
    assert sum(v["num_gt"] for v in m["per_type"].values()) == m["num_gt"]
    for v in m["per_type"].values():
        assert v["AP"] == pytest.approx(1.0)
    assert "per_type" not in coco_metrics(shapes, _perfect(shapes), per_type=False)


def test_per_type_drops_detections_of_one_type_only_there(shapes):
    ff_ids = {im["id"] for im in shapes["images"] if im["problem_type"] == "ff"}
    dets = [d for d in _perfect(shapes) if d["image_id"] not in ff_ids]
    m = coco_metrics(shapes, dets)
    assert m["per_type"]["ff"]["AP"] == 0.0 and m["per_type"]["ff"]["num_detections"] == 0
    assert m["per_type"]["bd"]["AP"] == pytest.approx(1.0) and m["per_type"]["hd"]["AP"] == pytest.approx(1.0)
    assert 0.0 < m["AP"] < 1.0


def test_no_detections_give_zeros(shapes, strokes):
    for gt in (shapes, strokes):
        m = coco_metrics(gt, [])
        # zeros, except where nothing can be measured (null): exactly where faster-coco-eval itself
        # finds no ground truth (its -1) when it scores perfect detections; the real set, say, has no
        # small shapes (COCO: area under 32^2)
        perfect = coco_metrics(gt, _perfect(gt))
        undefined = {k for k in HEADLINE if perfect[k] is None}
        assert undefined == ({"APs"} if gt is shapes else set())
        for k in HEADLINE:
            assert m[k] == (None if k in undefined else 0.0), k
        assert m["num_detections"] == 0 and m["num_gt"] == len(gt["annotations"])
        for t, v in m["per_type"].items():
            assert {k: v[k] for k in HEADLINE} == {k: None if perfect["per_type"][t][k] is None else 0.0
                                                   for k in HEADLINE}, t
    m = coco_metrics(strokes, [])
    assert m["style_accuracy"] == 0.0 and m["style_matched"] == 0
    assert all(v == {"AP": 0.0, "AP50": 0.0} for v in m["per_category"].values())


def test_shifted_boxes_score_lower(shapes):
    # a shift of 0.2 w gives IoU (1 - 0.2) / (1 + 0.2) = 2/3: matched at IoU 0.50..0.65 only
    dets = _perfect(shapes)
    for d in dets:
        x, y, w, h = d["bbox"]
        d["bbox"] = [x + 0.2 * w, y, w, h]
    m = coco_metrics(shapes, dets)
    assert m["AP50"] == pytest.approx(1.0)
    assert m["AP75"] == 0.0
    assert m["AP"] == pytest.approx(0.4, abs=1e-6)


def test_low_scored_false_positives_lower_ap_only_a_little(shapes):
    dets = _perfect(shapes)
    extra = [{"image_id": d["image_id"], "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.1} for d in dets]
    worse = [dict(d, score=0.05) if i % 2 else d for i, d in enumerate(dets)] + \
            [dict(e, score=0.5) for e in extra]
    assert coco_metrics(shapes, dets + extra)["AP"] == pytest.approx(1.0)  # ranked below all true ones
    assert coco_metrics(shapes, worse)["AP"] < 0.9


def test_wrong_styles_lower_style_accuracy(strokes):
    dets = _perfect(strokes)
    styles = ("normal", "zigzag", "circle", "square", "triangle")
    wrong = 0
    for i, d in enumerate(dets):
        if i % 3 == 0:
            d["style"] = styles[(styles.index(d["style"]) + 1) % len(styles)]
            wrong += 1
    m = coco_metrics(strokes, dets)
    assert m["AP"] == pytest.approx(1.0)  # boxes untouched
    assert m["style_matched"] == len(dets)
    assert m["style_accuracy"] == pytest.approx(1 - wrong / len(dets))
    assert set(m["per_type"]["ff"]) >= {"style_accuracy", "style_matched"}


def test_style_matching_is_greedy_by_score_and_per_category():
    gt = _tiny_coco()
    same = [5, 5, 20, 20]
    dets = [
        {"image_id": 10, "category_id": 7, "bbox": same, "score": 0.9, "style": "normal"},  # wins the gt
        {"image_id": 10, "category_id": 7, "bbox": same, "score": 0.5, "style": "zigzag"},
        {"image_id": 11, "category_id": 7, "bbox": [30, 30, 20, 10], "score": 1.0, "style": "normal"},  # wrong cat
        {"image_id": 11, "category_id": 3, "bbox": [30, 30, 20, 30], "score": 1.0, "style": "normal"},  # IoU 1/3
    ]
    assert style_matches(gt["annotations"], dets) == [("zigzag", "normal")]
    m = coco_metrics(gt, dets)
    assert m["style_matched"] == 1 and m["style_accuracy"] == 0.0
    dets[0]["score"] = 0.1
    assert coco_metrics(gt, dets)["style_accuracy"] == 1.0


def test_types_without_gt_are_skipped_and_stray_ids_refused():
    gt = _tiny_coco()
    dets = _perfect(gt)
    m = coco_metrics(gt, dets)
    assert set(m["per_type"]) == {"ff"}  # the hd image has no annotation
    assert m["AP"] == pytest.approx(1.0) and m["num_images"] == 3
    with pytest.raises(System1Error, match="not in the ground truth"):
        coco_metrics(gt, dets + [dict(dets[0], image_id=999)])


def test_quiet_unless_verbose(capsys):
    gt = _tiny_coco()
    coco_metrics(gt, _perfect(gt))
    assert capsys.readouterr().out == ""
    coco_metrics(gt, _perfect(gt), verbose=True)
    assert "Average Precision" in capsys.readouterr().out


# --- category mapping ----------------------------------------------------------------------------


def test_map_categories_follows_the_files_ids():
    gt = _tiny_coco(cat_ids=(7, 3), names=("arc", "line"))
    dets = [{"image_id": 10, "bbox": [0, 0, 1, 1], "score": 1.0, "category": n} for n in ("shape", "line", "arc")]
    before = copy.deepcopy(dets)
    out = map_categories(dets, gt)
    assert [(d["category"], d["category_id"]) for d in out] == [("line", 3), ("arc", 7)]
    assert dets == before


def test_map_categories_on_real_files(shapes, strokes):
    dets = [{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0, "category": n} for n in ("shape", "line", "arc")]
    assert [(d["category"], d["category_id"]) for d in map_categories(dets, shapes)] == [("shape", 1)]
    assert [(d["category"], d["category_id"]) for d in map_categories(dets, strokes)] == [("line", 1), ("arc", 2)]
    # a shape detector scored on the strokes file gets nothing
    as_shapes = [dict(d, category="shape") for d in _perfect(strokes)]
    for d in as_shapes:
        d.pop("category_id")
    assert coco_metrics(strokes, map_categories(as_shapes, strokes))["AP"] == 0.0


# --- load_coco -----------------------------------------------------------------------------------


def test_load_coco_errors(tmp_path):
    with pytest.raises(System1Error, match="not found"):
        load_coco(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{this is not json")
    with pytest.raises(System1Error, match="not valid JSON"):
        load_coco(bad)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(System1Error):
        load_coco(binary)
    incomplete = tmp_path / "inc.json"
    incomplete.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(System1Error, match="categories"):
        load_coco(incomplete)
    lst = tmp_path / "list.json"
    lst.write_text("[]")
    with pytest.raises(System1Error, match="not a COCO file"):
        load_coco(lst)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_tiny_coco()))
    assert load_coco(good) == _tiny_coco()


# --- evaluate_predictor --------------------------------------------------------------------------


def _write_tiny_set(root: Path) -> Path:
    gt = _tiny_coco(cat_ids=(1, 2), names=("shape", "other"))
    gt["categories"] = gt["categories"][:1]
    gt["annotations"] = [dict(a, category_id=1) for a in gt["annotations"]]
    (root / "imgs").mkdir()
    for im in gt["images"]:
        im["file_name"] = "imgs/" + im["file_name"]
        img = np.full((64, 64, 3), 255, np.uint8)
        for a in gt["annotations"]:
            if a["image_id"] == im["id"]:
                x, y, w, h = a["bbox"]
                img[y:y + h, x:x + w] = 0
        cv2.imwrite(str(root / im["file_name"]), img)
    (root / "coco.json").write_text(json.dumps(gt))
    return root / "coco.json"


def test_evaluate_predictor_reads_gray_and_scores(tmp_path):
    coco = _write_tiny_set(tmp_path)
    seen = []

    def predict(gray):
        assert gray.ndim == 2 and gray.dtype == np.uint8
        seen.append(gray.shape)
        ys, xs = np.nonzero(gray < 255)
        if not ys.size:
            return [{"bbox": [0, 0, 3, 3], "score": 0.2, "category": "line"}]  # dropped: not in this file
        return [{"bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)], "score": 1.0,
                 "category": "shape"}]

    m, dets = evaluate_predictor(predict, coco, progress=False)
    assert len(seen) == 3 and m["AP"] == pytest.approx(1.0)
    assert m["ms_per_image"] >= 0.0 and m["num_detections"] == 2
    assert {d["image_id"] for d in dets} == {10, 11} and all(d["category_id"] == 1 for d in dets)
    json.dumps(m)


def test_evaluate_predictor_split_and_image_errors(tmp_path):
    coco = _write_tiny_set(tmp_path)
    gt = json.loads(coco.read_text())
    for im in gt["images"]:
        im["split"] = "val" if im["id"] == 10 else "train"
    coco.write_text(json.dumps(gt))
    m, _ = evaluate_predictor(lambda g: [], coco, progress=False, split="val")
    assert m["num_images"] == 1 and m["num_gt"] == 1
    with pytest.raises(System1Error, match="split"):
        evaluate_predictor(lambda g: [], coco, progress=False, split="test")
    (tmp_path / "imgs" / "b.png").write_bytes(b"not a png")
    with pytest.raises(System1Error, match="b.png"):
        evaluate_predictor(lambda g: [], coco, progress=False)
    (tmp_path / "imgs" / "b.png").unlink()
    with pytest.raises(System1Error, match="b.png is missing or unreadable"):
        evaluate_predictor(lambda g: [], coco, progress=False)
    with pytest.raises(System1Error, match="not found"):
        evaluate_predictor(lambda g: [], tmp_path / "missing.json", progress=False)


# --- io_utils and imports ------------------------------------------------------------------------


def test_write_json_atomic_and_sha256(tmp_path):
    p = tmp_path / "sub" / "m.json"
    write_json_atomic(p, {"AP": 0.5})
    write_json_atomic(p, {"AP": 0.75, "x": [1, 2]})
    assert json.loads(p.read_text()) == {"AP": 0.75, "x": [1, 2]}
    assert os.listdir(p.parent) == ["m.json"]  # no temp file left
    with pytest.raises(TypeError):
        write_json_atomic(p, {"bad": object()})
    assert json.loads(p.read_text()) == {"AP": 0.75, "x": [1, 2]} and os.listdir(p.parent) == ["m.json"]
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_metric_modules_do_not_import_torch():
    code = ("import sys, bongard_system1.evaluate, bongard_system1.baseline, bongard_system1.io_utils; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_style_accuracy_ignores_categories_without_style():
    """A combined file (shapes without style, strokes with) scores styles on strokes only."""
    from bongard_system1.evaluate import coco_metrics
    gt = {"images": [{"id": 1, "width": 100, "height": 100}],
          "categories": [{"id": 1, "name": "shape"}, {"id": 2, "name": "line"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 2, "bbox": [10, 10, 20, 5], "area": 100, "iscrowd": 0,
                           "style": "zigzag"}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.9},
            {"image_id": 1, "category_id": 2, "bbox": [10, 10, 20, 5], "score": 0.8, "style": "zigzag"}]
    m = coco_metrics(gt, dets)
    assert m["style_accuracy"] == 1.0 and m["style_matched"] == 1 and m["AP"] == 1.0


def test_cached_detector_detects_each_image_once_and_keeps_its_time(tmp_path):
    """The pipeline scores a set's shapes and strokes files from one pass over its images."""
    import time as _time

    from bongard_system1.evaluate import CachedDetector, evaluate_model
    coco = _write_tiny_set(tmp_path)
    calls = []

    class Ink:
        def detect(self, gray):
            calls.append(gray.shape)
            _time.sleep(0.01)
            ys, xs = np.nonzero(gray < 255)
            if not ys.size:
                return []
            return [{"bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)],
                     "score": 1.0, "category": "shape"}]

    det = CachedDetector(Ink())
    first = evaluate_model("ink", coco, detector=det, progress=False)
    again = evaluate_model("ink", coco, detector=det, progress=False)
    assert len(calls) == 3                                   # three images, each detected once
    assert first["AP"] == again["AP"] == pytest.approx(1.0)
    assert again["ms_per_image"] == pytest.approx(first["ms_per_image"]) and first["ms_per_image"] >= 10.0
