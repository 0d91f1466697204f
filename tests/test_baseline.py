"""The classical baseline: exact boxes on hand-made images, and its AP on the real Bongard-LOGO set."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bongard_system1.baseline import ClassicalBaseline, classical_shapes
from bongard_system1.evaluate import evaluate_predictor

from .conftest import REAL


def _canvas(h=100, w=160):
    return np.full((h, w), 255, np.uint8)


def _boxes(dets):
    return sorted(tuple(d["bbox"]) for d in dets)


def test_two_rectangles_give_their_exact_boxes():
    img = _canvas()
    img[10:30, 5:25] = 0          # x 5..24, y 10..29
    img[50:90, 100:150] = 0       # x 100..149, y 50..89
    dets = classical_shapes(img)
    assert _boxes(dets) == [(5, 10, 20, 20), (100, 50, 50, 40)]
    assert all(d["category"] == "shape" and d["score"] == 1.0 for d in dets)
    assert all(isinstance(v, int) for d in dets for v in d["bbox"])


def test_faint_ink_counts_and_white_is_empty():
    img = _canvas()
    assert classical_shapes(img) == []
    img[10:30, 5:25] = 0
    img[37, 12] = 254  # any pixel darker than 255 is ink; joined to the rectangle by the dilation
    assert _boxes(classical_shapes(img)) == [(5, 10, 20, 28)]


def test_dilation_joins_gaps_up_to_eight_pixels():
    def two_bars(gap):
        img = _canvas()
        img[20:40, 10:20] = 0                       # x 10..19
        img[20:40, 20 + gap:30 + gap] = 0           # a gap of `gap` white columns
        return classical_shapes(img)

    assert _boxes(two_bars(8)) == [(10, 20, 28, 20)]
    assert _boxes(two_bars(9)) == [(10, 20, 10, 20), (29, 20, 10, 20)]


def test_specks_dropped_and_color_input_accepted():
    img = _canvas()
    img[10:30, 5:25] = 0
    img[80, 150] = 0  # a lone pixel
    assert _boxes(classical_shapes(img)) == [(5, 10, 20, 20)]
    assert _boxes(classical_shapes(img, min_pixels=1)) == [(5, 10, 20, 20), (150, 80, 1, 1)]
    bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    base = ClassicalBaseline()
    assert base.detect(bgr) == base(img) == classical_shapes(img)


def test_classical_baseline_on_the_real_set():
    coco = REAL / "shapes_coco.json"
    if not coco.is_file():
        pytest.skip(f"real Bongard-LOGO set not found at {REAL}")
    m, dets = evaluate_predictor(ClassicalBaseline().detect, coco, progress=False)
    # measured: AP 0.9897, AP50 0.9898; ff 1.000, hd 1.000, bd 0.9894 (2 bd images where shapes touch)
    assert m["AP"] >= 0.98 and m["AP50"] >= 0.98
    assert m["per_type"]["ff"]["AP"] >= 0.999 and m["per_type"]["hd"]["AP"] >= 0.999
    assert m["per_type"]["bd"]["AP"] >= 0.97
    assert m["num_images"] == 896 and len(dets) == m["num_detections"] > 1250
    assert m["ms_per_image"] > 0
