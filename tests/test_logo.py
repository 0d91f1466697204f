"""The LOGO action language and the renderer, checked against real Bongard-LOGO images."""

import json

import numpy as np
import pytest

from bongard_system1.errors import System1Error
from bongard_system1.logo import Action, PlacedShape, format_action, parse_action, parse_program
from bongard_system1.logo.fidelity import fidelity_report, ink_report, stamp_holes
from bongard_system1.logo.render import render
from bongard_system1.logo.sample import sample_image


def test_every_real_action_string_round_trips(real_dir):
    coco = json.loads((real_dir / "shapes_coco.json").read_text())
    strings = [s for a in coco["annotations"] for s in a["action_program"]]
    assert len(strings) > 6000
    for s in strings:
        assert format_action(parse_action(s)) == s
    strokes = json.loads((real_dir / "strokes_coco.json").read_text())
    for a in strokes["annotations"]:
        act = parse_action(a["action"])
        assert act.style == a["style"]
        assert act.kind == {1: "line", 2: "arc"}[a["category_id"]]


def test_action_fields():
    a = parse_action("arc_circle_0.500_0.625-0.750")
    assert (a.kind, a.style, a.size) == ("arc", "circle", 0.5)
    assert a.arc_degrees == pytest.approx(90.0) and a.turn_degrees == pytest.approx(90.0)
    line = parse_action("line_zigzag_0.500-0.250")
    assert line.turn_degrees == pytest.approx(-90.0)
    assert str(Action.line("normal", 1.0, -90.0)) == "line_normal_1.000-0.250"
    assert str(Action.arc_of("square", 0.5, 180.0, 30.0)) == "arc_square_0.500_0.750-0.583"


@pytest.mark.parametrize("bad", ["line_wavy_0.500-0.500", "arc_blob_0.5_0.6-0.7", "line_normal_1.5-0.5",
                                 "circle_normal_0.5-0.5", "line_normal_0.500", ""])
def test_bad_action_strings_are_refused(bad):
    with pytest.raises(System1Error):
        parse_action(bad)


def test_unknown_style_names_the_style():
    with pytest.raises(System1Error, match="wavy"):
        parse_action("line_wavy_0.500-0.500")


def test_rerendered_real_shapes_match_real_boxes(real_dir):
    rep = fidelity_report(real_dir / "shapes_coco.json")
    assert rep["shapes"]["n"] == 1302
    assert rep["shapes"]["median"] >= 0.95 and rep["shapes"]["p10"] >= 0.85
    assert rep["strokes"]["median"] >= 0.9


def test_stamped_strokes_carry_real_ink_at_training_size(real_dir):
    # A whole-pixel stamp outline gave stamps about half the real ink (relative to plain lines) at 416 px,
    # and the detector then read real triangle stamps as zigzags.
    rep = ink_report(real_dir / "shapes_coco.json", 416)
    assert rep["images"] == 896
    for style in ("zigzag", "circle", "square", "triangle"):
        assert 0.8 <= rep["ratio"][style] <= 1.25, (style, rep["ratio"])


def test_stamp_holes_counts_enclosed_white_specks_only():
    import cv2
    img = np.full((64, 64), 255, np.uint8)
    for cx in (12, 32, 52):
        cv2.circle(img, (cx, 20), 5, 0, 2)             # three rings: three holes
    cv2.line(img, (4, 58), (60, 58), 0, 3)             # a line encloses nothing
    cv2.circle(img, (32, 20), 25, 0, 1)                # nor does a loop too big for a stamp
    assert stamp_holes(img) == 3
    assert stamp_holes(np.full((32, 32), 255, np.uint8)) == 0


def _check_tight(img, shape_boxes):
    ink = img < 255
    covered = np.zeros_like(ink)
    for x, y, w, h in shape_boxes:
        sub = ink[y:y + h, x:x + w]
        assert sub[0].any() and sub[-1].any() and sub[:, 0].any() and sub[:, -1].any(), (x, y, w, h)
        covered[y:y + h, x:x + w] = True
    assert not (ink & ~covered).any()


@pytest.mark.parametrize("size", [128, 416, 512])
def test_shape_boxes_are_tight_and_cover_all_ink(size):
    for i in range(40):
        shapes, pen = sample_image(np.random.default_rng([7, i]), max_shapes=3)
        r = render(shapes, size, pen_width=pen)
        boxes = [b for b in r.shape_boxes if b is not None]
        assert boxes
        _check_tight(r.image, boxes)
        for sb, strokes in zip(r.shape_boxes, r.stroke_boxes):
            for b in strokes:
                if b is None:
                    continue
                # a stroke lies inside its shape, give or take ink that a later white stamp hides
                assert sb[0] - 3 <= b[0] and sb[1] - 3 <= b[1]
                assert b[0] + b[2] <= sb[0] + sb[2] + 3 and b[1] + b[3] <= sb[1] + sb[3] + 3


def test_render_is_deterministic_and_draws_every_style():
    prog = parse_program([f"line_{s}_0.600-0.500" for s in ("normal", "zigzag", "circle", "square", "triangle")])
    shape = PlacedShape(prog, (-330.0, 0.0), 0.0, 220.0)
    a, b = render([shape], 512), render([shape], 512)
    assert np.array_equal(a.image, b.image) and a.stroke_boxes == b.stroke_boxes
    assert all(box is not None for box in a.stroke_boxes[0])
    # zigzag and stamps are wider than a plain line of the same length
    heights = [box[3] for box in a.stroke_boxes[0]]
    assert heights[0] < min(heights[1:])


def test_sampler_is_seeded():
    a, pa = sample_image(np.random.default_rng(5))
    b, pb = sample_image(np.random.default_rng(5))
    assert [s.program for s in a] == [s.program for s in b] and pa == pb
    n_shapes = [len(sample_image(np.random.default_rng([1, i]))[0]) for i in range(60)]
    assert set(n_shapes) == {1, 2, 3}


def test_sampler_follows_the_original_generators_conventions():
    """Free-form shapes are made of the original's moves (lines of 1, quarter arcs of radius 0.5), each
    starting straight on, with uniformly drawn styles; every arc of a basic shape has radius 0.5; about
    half the basic shapes are all `normal`, the others mix styles stroke by stroke."""
    from bongard_system1.logo.sample import FREEFORM_MIN_SPREAD, _spread, basic, freeform
    rng = np.random.default_rng(11)
    ff = [freeform(rng)[0] for _ in range(400)]
    strokes = [a for shape in ff for a in shape]
    assert {a.size for a in strokes if a.kind == "line"} == {1.0}
    assert {(a.size, a.arc_degrees) for a in strokes if a.kind == "arc"} == {(0.5, 90.0)}
    assert np.mean([abs(a.turn_degrees) < 1e-6 for shape in ff for a in shape[1:]]) > 0.45
    shares = np.array([np.mean([a.style == s for a in strokes]) for s in ("normal", "zigzag", "circle", "square", "triangle")])
    assert np.all(np.abs(shares - 0.2) < 0.04), shares
    assert all(_spread(shape) > FREEFORM_MIN_SPREAD[len(shape)] for shape in ff)
    shapes = [basic(rng)[0] for _ in range(600)]
    assert {a.size for shape in shapes for a in shape if a.kind == "arc"} == {0.5}
    all_normal = np.mean([all(a.style == "normal" for a in shape) for shape in shapes])
    assert 0.42 < all_normal < 0.58
    mixed = [shape for shape in shapes if len(shape) >= 4 and not all(a.style == "normal" for a in shape)]
    assert np.mean([len({a.style for a in shape}) >= 2 for shape in mixed]) > 0.9


def test_images_mix_free_form_and_basic_shapes_as_the_original_dataset_does():
    """About 30% of sampled shapes are free-form (the original: 3,600 free-form problems of 12,000)."""
    from bongard_system1.logo.sample import sample_image
    rng = np.random.default_rng(5)
    names = [s.name for _ in range(500) for s in sample_image(rng)[0]]
    share = np.mean([n == "freeform" for n in names])
    assert 0.25 < share < 0.35, share


def _hidden_joints(shape):
    """Joints that nothing in the ink marks (``logo.sample.hides_joint``)."""
    from bongard_system1.logo.sample import hides_joint
    return sum(hides_joint(p, a) for p, a in zip(shape, shape[1:]))


def _retraced(shape):
    """Strokes that run back over the last one: a line after a line turned 180 degrees, or an arc
    bending the other way straight on after an arc of the same radius."""
    return sum((p.kind == a.kind == "line" and abs(abs(a.turn_degrees) - 180.0) < 1e-6)
               or (p.kind == a.kind == "arc" and p.size == a.size and abs(a.turn_degrees) < 1e-6
                   and (a.arc_degrees > 0) != (p.arc_degrees > 0))
               for p, a in zip(shape, shape[1:]))


def test_basic_shapes_join_strokes_that_meet_with_no_mark_free_form_ones_keep_them():
    """Two normal lines in line are one line to the eye: a basic shape draws them as one stroke (the
    real set's basic shapes have no such joint), and the ink is the same; free-form shapes keep them
    (the original's free-form sampler makes them, 12% of real free-form strokes)."""
    from bongard_system1.logo.sample import basic, freeform, join_hidden_joints
    split = parse_program(["line_normal_0.300-0.500", "line_normal_0.400-0.500", "line_zigzag_0.300-0.500",
                           "arc_normal_0.500_0.750-0.750", "arc_normal_0.500_0.750-0.500",
                           "arc_normal_0.500_0.250-0.500"])
    joined = join_hidden_joints(list(split))
    assert [format_action(a) for a in joined] == ["line_normal_0.700-0.500", "line_zigzag_0.300-0.500",
                                                  "arc_normal_0.500_1.000-0.750", "arc_normal_0.500_0.250-0.500"]
    a = render([PlacedShape(split[:2], (-200.0, 0.0), 0.0, 300.0)], 416, with_boxes=False).image < 128
    b = render([PlacedShape(tuple(joined[:1]), (-200.0, 0.0), 0.0, 300.0)], 416, with_boxes=False).image < 128
    assert a.sum() > 500 and (a ^ b).sum() <= 0.01 * a.sum()
    rng = np.random.default_rng(3)
    shapes = [basic(rng)[0] for _ in range(800)]
    assert sum(map(_hidden_joints, shapes)) == 0
    assert sum(map(_retraced, shapes)) == 0          # no stroke drawn back over the last one's ink
    assert sum(_hidden_joints(freeform(rng)[0]) for _ in range(300)) > 30


def test_real_basic_shapes_have_no_hidden_joints_or_retraced_strokes(real_dir):
    """What the basic-shape sampler now follows: the real set's basic and abstract (bd, hd) shapes have
    neither (its free-form shapes have hidden joints, as the original's free-form sampler makes them)."""
    coco = json.loads((real_dir / "shapes_coco.json").read_text())
    kind = {im["id"]: im["problem_type"] for im in coco["images"]}
    shapes = {"ff": [], "basic": []}
    for a in coco["annotations"]:
        shapes["ff" if kind[a["image_id"]] == "ff" else "basic"].append(parse_program(a["action_program"]))
    assert len(shapes["basic"]) > 500
    assert sum(map(_hidden_joints, shapes["basic"])) == 0 and sum(map(_retraced, shapes["basic"])) == 0
    assert sum(map(_hidden_joints, shapes["ff"])) > 50


def _inside_and_apart(boxes, size=512):
    for k, (x, y, w, h) in enumerate(boxes):
        assert 0 <= x and 0 <= y and x + w <= size and y + h <= size
        for x2, y2, w2, h2 in boxes[k + 1:]:
            assert x + w < x2 or x2 + w2 < x or y + h < y2 or y2 + h2 < y     # no two touch


def test_draw_places_several_shapes_apart_and_shrinks_only_what_does_not_fit(tmp_path, capsys):
    from bongard_system1.cli import main
    square = "line_square_1.000-0.250,line_normal_1.000-0.250,line_zigzag_1.000-0.250,line_triangle_1.000-0.250"
    args = ["draw", "--out", str(tmp_path / "a.png")] + ["--program", square] * 3
    assert main(args) == 0
    out = capsys.readouterr()
    drawn = json.loads(out.out)
    assert drawn["scales"] == [180.0] * 3 and not out.err        # they fit: the asked scale, no warning
    _inside_and_apart(drawn["shape_boxes"])
    assert main(args + ["--scale", "400"]) == 0                  # too large for three slots of a 720-unit canvas
    out = capsys.readouterr()
    drawn = json.loads(out.out)
    assert all(150.0 < s < 400.0 for s in drawn["scales"]) and out.err.count("does not fit its slot") == 3
    _inside_and_apart(drawn["shape_boxes"])
    assert min(w for _, _, w, _ in drawn["shape_boxes"]) > 200
