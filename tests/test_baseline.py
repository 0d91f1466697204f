"""The classical baseline: exact boxes on hand-made images, and its AP on the real Bongard-LOGO set."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from bongard_system1.baseline import ClassicalBaseline, classical_shapes, unseparated_shapes
from bongard_system1.errors import System1Error
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


def test_the_baseline_takes_what_system1_detect_takes(tmp_path):
    """A path (a JPEG's page cleaned as its bytes say), a PIL image, BGRA over white, floats in 0..1."""
    from PIL import Image
    img = _canvas()
    img[10:30, 5:25] = 0
    want = classical_shapes(img)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / "a.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 75])
    assert _boxes(classical_shapes(cv2.imread(str(tmp_path / "a.jpg"), 0))) != _boxes(want)   # ringing grows it
    base = ClassicalBaseline()
    bgra = np.dstack([cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), np.full_like(img, 255)])
    bgra[60:90, 60:90, :3] = 0
    bgra[60:90, 60:90, 3] = 0                       # black but transparent: the white page shows
    with Image.open(tmp_path / "a.png") as pil:
        for image in (tmp_path / "a.png", str(tmp_path / "a.jpg"), pil, bgra, img.astype(np.float32) / 255.0):
            assert base.detect(image) == want, type(image)
    with pytest.raises(System1Error, match="missing or unreadable"):
        base.detect(tmp_path / "none.png")


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


def test_unseparated_shapes_are_those_that_touch():
    img = _canvas(120, 220)
    cv2.rectangle(img, (5, 5), (40, 40), 0, 2)            # a lone square
    cv2.rectangle(img, (60, 10), (100, 50), 0, 2)         # two squares that touch
    cv2.rectangle(img, (100, 30), (140, 70), 0, 2)
    cv2.rectangle(img, (160, 60), (210, 115), 0, 2)       # a big square with a small one inside it, apart
    cv2.rectangle(img, (175, 78), (192, 95), 0, 2)
    boxes = [[4, 4, 38, 38], [59, 9, 43, 43], [99, 29, 43, 43], [159, 59, 53, 58], [174, 77, 20, 20]]
    assert unseparated_shapes(img, boxes) == [1, 2]
    assert unseparated_shapes(img, []) == []


def test_unseparated_shapes_on_the_real_set():
    coco = REAL / "shapes_coco.json"
    if not coco.is_file():
        pytest.skip(f"real Bongard-LOGO set not found at {REAL}")
    gt = json.loads(coco.read_text())
    boxes = {}
    for a in gt["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a["bbox"])
    found = {}
    for im in gt["images"]:
        if im.get("problem_type") != "bd":      # ff and hd shapes never touch in this set
            continue
        shared = unseparated_shapes(cv2.imread(str(REAL / im["file_name"]), cv2.IMREAD_GRAYSCALE), boxes[im["id"]])
        if shared:
            found[im["file_name"]] = shared
    # the two bd images where the baseline's one component holds two shapes (see the README)
    assert sorted(found) == ["images/bd_mismatch_sector_rec1-thin_exist_triangle2_0000/pos_4.png",
                             "images/bd_three_mismatch_sectors2-necked_eight_lines11_0000/pos_3.png"]
    assert all(v == [0, 1] for v in found.values())


def test_a_jpeg_or_an_off_white_page_gives_the_boxes_of_the_clean_image(real_dir, tmp_path):
    from bongard_system1.predict import as_gray, System1Error
    coco = json.loads((real_dir / "shapes_coco.json").read_text())
    edges = lambda boxes: np.array([(x, y, x + w, y + h) for x, y, w, h in boxes])   # noqa: E731
    for im in coco["images"][::45]:
        png = real_dir / im["file_name"]
        clean = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(as_gray(png), clean)                 # a clean page is left as it is
        want = _boxes(classical_shapes(clean))
        for quality in (75, 95):                                   # a JPEG's ringing is not ink
            path = tmp_path / f"{im['id']}_{quality}.jpg"
            cv2.imwrite(str(path), clean, [cv2.IMWRITE_JPEG_QUALITY, quality])
            assert _boxes(classical_shapes(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))) != want
            got = _boxes(classical_shapes(as_gray(path)))
            assert len(got) == len(want) and np.abs(edges(got) - edges(want)).max() <= 1, (im["file_name"], quality)
        grey_page = np.clip(clean.astype(int) - 3, 0, 255).astype(np.uint8)   # paper at 252
        assert classical_shapes(grey_page) == [{"bbox": [0, 0, *clean.shape[::-1]], "score": 1.0, "category": "shape"}]
        for got in (_boxes(ClassicalBaseline().detect(grey_page)), _boxes(classical_shapes(as_gray(grey_page)))):
            assert len(got) == len(want) and np.abs(edges(got) - edges(want)).max() <= 1, im["file_name"]
    with pytest.raises(System1Error, match="expected numbers"):
        as_gray(np.zeros((8, 8), np.complex64))


def test_the_page_is_whitened_for_lossy_files_however_they_come_and_never_where_ink_is_most(real_dir, tmp_path):
    from PIL import Image
    from bongard_system1.predict import _is_lossy, as_gray
    clean = cv2.imread(str(real_dir / json.loads((real_dir / "shapes_coco.json").read_text())["images"][0]["file_name"]),
                       cv2.IMREAD_GRAYSCALE)
    jpeg = tmp_path / "a.jpg"
    cv2.imwrite(str(jpeg), clean, [cv2.IMWRITE_JPEG_QUALITY, 75])
    assert np.array_equal(as_gray(Image.open(jpeg)), as_gray(jpeg))      # a PIL image of a JPEG, as its file
    bgra = cv2.cvtColor(clean, cv2.COLOR_GRAY2BGRA)
    bgra[:4, :4, 3] = 0                                                 # an alpha channel: WebP's extended layout
    for name, params, lossy in (("lossy.webp", [cv2.IMWRITE_WEBP_QUALITY, 75], True),
                                ("lossless.webp", [cv2.IMWRITE_WEBP_QUALITY, 101], False), ("a.png", [], False)):
        path = tmp_path / name
        cv2.imwrite(str(path), bgra, params)
        assert _is_lossy(str(path)) == lossy, name
        got, want = _boxes(classical_shapes(as_gray(path))), _boxes(classical_shapes(clean))
        assert len(got) == len(want) and np.abs(np.subtract(got, want)).max() <= 2, name
    # no page to tell: a tiny image, or one mostly of grey ink, is left as it is
    for image in (np.full((1, 1), 128, np.uint8), np.full((3, 3), 100, np.uint8), np.full((64, 64), 150, np.uint8)):
        assert np.array_equal(as_gray(image), image)
