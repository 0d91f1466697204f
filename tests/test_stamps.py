"""The stamp vote: holes inside ring stamps, a classifier trained on synthetic patches that reads
real stamps, the vote on real strokes, and the vote stored in (and removed from) a checkpoint."""

import json

import cv2
import numpy as np
import pytest
import torch

from bongard_system1.data.generate import generate_dataset
from bongard_system1.errors import System1Error
from bongard_system1.logo.actions import PlacedShape, parse_program
from bongard_system1.logo.fidelity import stamp_hole_centres
from bongard_system1.logo.render import render
from bongard_system1.predict import Detection, System1
from bongard_system1.stamps import (STAMPED, StampVote, hole_centres, labelled_patches, predict_proba,
                                    train_stamp_classifier)
from bongard_system1.train import train_detector


def _stamped_image(style, stamps="ring"):
    # small stamps, as in free-form problems: their holes are a few dozen pixels
    shape = PlacedShape(parse_program([f"line_{style}_1.000-0.250", f"line_{style}_0.700-0.250"]),
                        (-100.0, 0.0), 0.0, 110.0)
    r = render([shape], 512, stamps=stamps)
    return r.image, [(b, style) for b in r.stroke_boxes[0]]


@pytest.mark.parametrize("style", STAMPED)
def test_ring_stamps_leave_holes_labelled_with_their_style(style):
    image, strokes = _stamped_image(style)
    patches, labels = labelled_patches(image, strokes)
    assert len(labels) >= 10 and set(labels.tolist()) == {STAMPED.index(style)}
    assert patches.shape[1:] == (24, 24) and patches.min() < 128       # ink around every hole
    # plain strokes have no holes, hence no patches
    plain, plain_strokes = _stamped_image("normal")
    assert len(labelled_patches(plain, plain_strokes)[1]) == 0


def test_holes_are_found_in_the_frame_of_512_px_whatever_the_image_size():
    image, _ = _stamped_image("circle")
    at512, scale, _ = hole_centres(image)
    assert scale == 1.0 and len(at512) >= 10
    small = cv2.resize(image, (448, 448), interpolation=cv2.INTER_AREA)
    at448, scale, frame = hole_centres(small)
    assert frame.shape == (512, 512)
    assert scale == pytest.approx(512 / 448)
    # the same holes, in the smaller image's pixels
    assert abs(len(at448) - len(at512)) <= 2
    assert np.median(at448[:, 0]) == pytest.approx(np.median(at512[:, 0]) * 448 / 512, abs=2.0)


@pytest.mark.parametrize("style", STAMPED)
def test_the_large_stamps_of_basic_shapes_leave_holes_too(style):
    """Stamps grow with the shape's scale: at 240 (basic shapes are drawn at 150 to 320) the holes
    of circle and square stamps are over 60 px, which an earlier limit left out, so large stamps
    were read from their triangles and their neighbours'."""
    shape = PlacedShape(parse_program([f"line_{style}_1.000-0.250"]), (-150.0, 0.0), 0.0, 240.0)
    image = render([shape], 512, stamps="ring").image
    assert len(hole_centres(image)[0]) >= 8
    if style != "triangle":
        assert len(stamp_hole_centres(image, 60)) == 0          # every hole is larger than 60 px


def test_real_circle_and_square_strokes_of_basic_shapes_hold_holes(real_dir):
    coco = json.loads((real_dir / "strokes_coco.json").read_text())
    by = {}
    for a in coco["annotations"]:
        by.setdefault(a["image_id"], []).append(a)
    with_holes = total = 0
    for im in coco["images"]:
        if im["problem_type"] != "bd":
            continue
        centres = hole_centres(cv2.imread(str(real_dir / im["file_name"]), cv2.IMREAD_GRAYSCALE))[0]
        for a in by.get(im["id"], []):
            if a["style"] in ("circle", "square"):
                x, y, w, h = a["bbox"]
                inside = ((centres[:, 0] >= x) & (centres[:, 0] <= x + w)
                          & (centres[:, 1] >= y) & (centres[:, 1] <= y + h))
                with_holes += int(inside.sum() >= 2)
                total += 1
    # 530 of 530 measured (with holes up to 60 px: 433)
    assert total > 300 and with_holes / total > 0.97, (with_holes, total)


@pytest.fixture(scope="module")
def classifier():
    # the pipeline's default number of images (a classifier from 1,500 images of data format 4 read
    # only 85% of real stamp patches right)
    return train_stamp_classifier(num_images=3000, epochs=3, seed=1, progress=False)


@pytest.fixture(scope="module")
def real_stamped(real_dir):
    """Real images with their stroke boxes and styles (the first 150 images)."""
    coco = json.loads((real_dir / "strokes_coco.json").read_text())
    by = {}
    for a in coco["annotations"]:
        by.setdefault(a["image_id"], []).append((a["bbox"], a["style"]))
    out = []
    for im in coco["images"][:150]:
        gray = cv2.imread(str(real_dir / im["file_name"]), cv2.IMREAD_GRAYSCALE)
        out.append((gray, by.get(im["id"], [])))
    return out


def test_a_classifier_trained_on_synthetic_patches_reads_real_stamps(classifier, real_stamped):
    m = classifier["metrics"]
    assert m["train_patches"] > 5000 and m["val_accuracy"] > 0.9, m
    xs, ys = zip(*(labelled_patches(g, s) for g, s in real_stamped))
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert len(y) > 500 and {0, 1, 2} <= set(y.tolist()) <= {0, 1, 2, 3}
    pred = predict_proba(classifier["net"], x).argmax(1)
    stamps = y < len(STAMPED)
    acc = float((pred[stamps] == y[stamps]).mean())
    assert acc > 0.9, acc
    assert (pred[stamps] == 3).mean() < 0.05          # real stamp holes are seldom taken for plain ones


def test_the_vote_corrects_wrong_stamp_styles_of_real_strokes(classifier, real_stamped):
    vote = StampVote(classifier["state_dict"])
    right = total = 0
    for gray, strokes in real_stamped:
        for box, style in strokes:
            if style not in STAMPED:
                continue
            wrong = STAMPED[(STAMPED.index(style) + 1) % 3]
            dets = [Detection(list(box), 0.9, "line", wrong)]
            vote.restyle(gray, dets, [[0.0, 0.0, 1.0, 1.0, 1.0]])       # no preference among stamps
            right += dets[0].style == style
            total += 1
    assert total > 100 and right / total > 0.85, (right, total)
    # strokes called normal, and stamped strokes whose box holds no hole, keep their style
    gray, strokes = next((g, s) for g, s in real_stamped if any(st == "normal" for _, st in s))
    box = next(b for b, st in strokes if st == "normal")
    dets = [Detection(list(box), 0.9, "line", "normal"), Detection([0, 0, 3, 3], 0.9, "arc", "square")]
    assert vote.restyle(gray, dets, [[1, 0, 0, 0, 0], [0, 0, 0, 1, 0]]) == 0
    assert [d.style for d in dets] == ["normal", "square"]


def test_the_vote_rereads_real_stamped_strokes_called_plain_and_leaves_plain_ones_alone(classifier, real_dir):
    """A stroke called normal or zigzag is re-read only when stamp holes lie along it (lines) or
    enough of them in its box (arcs): real stamped strokes get their stamp back, real normal and
    zigzag strokes (holes of neighbours in their box included) mostly keep their style."""
    vote = StampVote(classifier["state_dict"])
    coco = json.loads((real_dir / "strokes_coco.json").read_text())
    by = {}
    for a in coco["annotations"]:
        by.setdefault(a["image_id"], []).append(a)
    counts = {}
    for im in coco["images"][:150]:
        gray = cv2.imread(str(real_dir / im["file_name"]), cv2.IMREAD_GRAYSCALE)
        for a in by.get(im["id"], []):
            box, style = a["bbox"], a["style"]
            if box[2] < 8 and box[3] < 8:
                continue
            kind = "line" if a["category_id"] == 1 else "arc"
            called = "zigzag" if style != "zigzag" else "normal"
            dets = [Detection(list(box), 0.9, kind, called)]
            vote.restyle(gray, dets, [[1.0] * 5])      # the detector has no preference at all
            stamped = style in STAMPED
            right = dets[0].style == (style if stamped else called)
            n = counts.setdefault((kind, stamped), [0, 0])
            n[0] += right
            n[1] += 1
    rate = {k: right / total for k, (right, total) in counts.items()}
    assert min(total for _, total in counts.values()) > 100, counts
    assert rate[("line", True)] > 0.75 and rate[("arc", True)] > 0.6, rate          # 0.90, 0.81 measured
    assert rate[("line", False)] > 0.8 and rate[("arc", False)] > 0.8, rate         # 0.95, 0.96 measured


def test_plain_lines_are_reread_only_when_holes_spread_along_them(monkeypatch):
    """Holes bunched at one end of a line called zigzag are a neighbour's stamps: no re-read; holes
    spread along it are its own: re-read (the classifier here says "square" for every hole)."""
    import bongard_system1.stamps as stamps
    vote = StampVote(stamps.build_stamp_net().state_dict())
    gray = np.full((512, 512), 255, np.uint8)
    monkeypatch.setattr(stamps, "predict_proba", lambda net, patches, device="cpu":
                        np.tile(np.array([[0.0, 1.0, 0.0, 0.0]], np.float32), (len(patches), 1)))
    for where, expected in (((0.02, 0.06, 0.1), "zigzag"), ((0.1, 0.5, 0.9), "square")):
        centres = np.array([[100 + 200 * t, 100 + 200 * t] for t in where])
        monkeypatch.setattr(stamps, "hole_centres", lambda g, c=centres: (c, 1.0, g))
        dets = [Detection([100.0, 100.0, 200.0, 200.0], 0.9, "line", "zigzag")]
        vote.restyle(gray, dets, [[0.0, 0.6, 0.1, 0.2, 0.1]])
        assert dets[0].style == expected, where


def test_a_line_called_stamped_reads_the_holes_along_it_when_it_has_enough(monkeypatch):
    """A line the detector calls circle, in a box that also holds a neighbour's holes off the line:
    with 3 holes along the line (read as triangles) and 5 off it (read as squares), the holes along
    it decide; with only 2 along it, every hole in the box counts."""
    import bongard_system1.stamps as stamps
    vote = StampVote(stamps.build_stamp_net().state_dict())
    gray = np.full((512, 512), 255, np.uint8)
    for n_along, expected in ((3, "triangle"), (2, "square")):
        along = [[100 + 200 * t, 100 + 200 * t] for t in np.linspace(0.2, 0.8, n_along)]
        off = [[250.0 + 10 * k, 120.0] for k in range(5)]           # far from the diagonal, inside the box
        centres = np.array(along + off, np.float64)
        probs = np.array([[0.0, 0.0, 1.0, 0.0]] * n_along + [[0.0, 1.0, 0.0, 0.0]] * 5, np.float32)
        monkeypatch.setattr(stamps, "hole_centres", lambda g, c=centres: (c, 1.0, g))
        monkeypatch.setattr(stamps, "predict_proba", lambda net, patches, device="cpu", p=probs: p)
        dets = [Detection([100.0, 100.0, 200.0, 200.0], 0.9, "line", "circle")]
        vote.restyle(gray, dets, [[0.0, 0.0, 0.4, 0.3, 0.3]])
        assert dets[0].style == expected, n_along


def test_votes_saved_with_another_width_or_without_the_plain_class_still_load_and_vote():
    """Votes stored by earlier versions (width 32; three classes before the plain one) load with their
    own shapes and give a style for every stroke called stamped, as today's does."""
    import bongard_system1.stamps as stamps
    image, strokes = _stamped_image("square")
    for classes, width in ((4, stamps.WIDTH), (4, 32), (3, 32)):
        vote = StampVote(stamps.build_stamp_net(classes, width).state_dict())
        assert vote.net[0].out_channels == width and vote.net[-1].out_features == classes
        dets = [Detection(list(strokes[0][0]), 0.9, "line", "circle")]
        vote.restyle(image, dets, [[0.0, 0.0, 0.4, 0.3, 0.3]])
        assert dets[0].style in STAMPED


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("stamps") / "ds"
    generate_dataset(data, 24, 128, seed=2, workers=1, val_fraction=0.25, max_shapes=2, progress=False, quiet=True)
    run = data.parent / "run"
    res = train_detector(data, run, epochs=1, batch_size=4, image_size=128, progress=False, stamp_images=60, rescore_images=0)
    return data, run, res


def test_postprocess_feeds_the_networks_stamp_scores_to_the_vote(tiny_run, classifier):
    _, run, _ = tiny_run
    system = System1.load(run, device="cpu", shape_mode="model", stroke_mode="model")
    system.stamp_vote = StampVote(classifier["state_dict"])
    image, strokes = _stamped_image("triangle")
    x, y, w, h = strokes[0][0]
    names = system.names
    box = [float(x), float(y), float(x + w), float(y + h)]
    # the network's two candidates at one box: square first, triangle lower (below the score threshold
    # used here, yet counted); and a box far from any stamp
    out = {"boxes": torch.tensor([box, box, [300.0, 300.0, 320.0, 330.0]]),
           "scores": torch.tensor([0.3, 0.2, 0.6]),
           "labels": torch.tensor([names.index("line/square") + 1, names.index("line/triangle") + 1,
                                   names.index("line/triangle") + 1])}
    assert System1.style_scores(out["boxes"][:1], ["line"], out["boxes"], out["scores"],
                                [names[int(k) - 1] for k in out["labels"]]) == [[0.0, 0.0, 0.0, pytest.approx(0.3),
                                                                                pytest.approx(0.2)]]
    plain = system.postprocess(image, out, score_threshold=0.25, stamp_vote=False)
    voted = system.postprocess(image, out, score_threshold=0.25)
    near = [d for d in voted if abs(d.bbox[0] - x) < 1]
    assert [d.style for d in plain if abs(d.bbox[0] - x) < 1] == ["square"]
    assert [d.style for d in near] == ["triangle"]       # the holes say triangle
    assert [d.style for d in voted if d.bbox[0] > 250] == ["triangle"]      # no holes there: unchanged


def test_the_vote_travels_in_the_checkpoint_and_can_be_left_out(tiny_run):
    data, run, res = tiny_run
    assert res["stamp_vote"]["settings"]["images"] == 60
    assert res["stamp_vote"]["metrics"]["train_patches"] > 100
    assert System1.load(run, device="cpu").stamp_vote is not None
    assert System1.load(run, device="cpu", stamp_vote=False).stamp_vote is None
    # the same command again keeps it; 0 images takes it out, without touching the detector
    before = (run / "best.pt").stat().st_mtime_ns
    again = train_detector(data, run, epochs=1, batch_size=4, image_size=128, progress=False, stamp_images=60, rescore_images=0)
    assert again["stamp_vote"]["metrics"] == res["stamp_vote"]["metrics"]
    assert (run / "best.pt").stat().st_mtime_ns == before
    weights = torch.load(run / "best.pt", weights_only=True)["model"]
    train_detector(data, run, epochs=1, batch_size=4, image_size=128, progress=False, stamp_images=0, rescore_images=0)
    assert System1.load(run, device="cpu").stamp_vote is None
    after = torch.load(run / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    with pytest.raises(System1Error, match="at least 50"):
        train_detector(data, run, epochs=1, batch_size=4, image_size=128, progress=False, stamp_images=10, rescore_images=0)
