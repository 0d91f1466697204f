"""Test-time views: mirror images of an image, their boxes mapped back, their detections fused."""

import json

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import nms

from bongard_system1.logo import PlacedShape, parse_program
from bongard_system1.logo.render import render
from bongard_system1.views import fuse, to_original, view_images


def _ink_box(gray):
    ys, xs = np.nonzero(gray < 128)
    return torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)


def _drawn_image():
    """A shape drawn by this project's renderer, off centre, no symmetry in its strokes."""
    prog = parse_program(["line_zigzag_0.600-0.250", "arc_normal_0.500_0.625-0.750", "line_square_0.400-0.125"])
    return render([PlacedShape(prog, (-150.0, 90.0), 0.0, 220.0)], 256, with_boxes=False).image


def _real_image(real_dir):
    first = json.loads((real_dir / "shapes_coco.json").read_text())["images"][0]
    return cv2.imread(str(real_dir / first["file_name"]), cv2.IMREAD_GRAYSCALE)


@pytest.mark.parametrize("source", ["drawn", "real"])
def test_each_view_maps_its_ink_box_back_onto_the_image(source, request):
    gray = _drawn_image() if source == "drawn" else _real_image(request.getfixturevalue("real_dir"))
    gray = np.ascontiguousarray(gray[:, : gray.shape[1] - 37])       # not square: width and height differ
    h, w = gray.shape
    views = view_images(gray, 8)
    assert [v.shape for v in views] == [(h, w), (h, w), (h, w), (w, h), (h, w), (w, h), (w, h), (w, h)]
    assert all(v.flags["C_CONTIGUOUS"] for v in views)
    # the eight symmetries of the image, each once
    assert len({(v.shape, v.tobytes()) for v in views}) == 8
    truth = _ink_box(gray)
    moved = [not torch.equal(_ink_box(v), truth) for v in views[1:]]
    assert any(moved)                                                # the views do differ
    for k, v in enumerate(views):
        assert torch.equal(to_original(_ink_box(v), k, w, h), truth), k


def _det(boxes, scores, labels, views, groups=None):
    n = len(scores)
    return (torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32),
            torch.tensor(labels), torch.tensor(views), torch.tensor(groups or [0] * n))


def test_fusion_agrees_across_views_and_averages_each_views_best_box():
    # one object seen by both views (two detections in view 0), one seen by view 1 only
    b, s, l, v, g = _det([[10, 10, 50, 50], [11, 10, 50, 51], [12, 12, 52, 52], [100, 100, 140, 120]],
                         [0.9, 0.5, 0.7, 0.8], [3, 3, 4, 3], [0, 0, 1, 1])
    boxes, scores, labels = fuse(b, s, l, v, g, n_views=2, iou=0.75)
    assert len(boxes) == 2
    np.testing.assert_allclose(scores.numpy(), [0.8, 0.4])                # (0.9 + 0.7) / 2, then 0.8 / 2
    expected = (0.9 * np.array([10, 10, 50, 50]) + 0.7 * np.array([12, 12, 52, 52])) / 1.6
    np.testing.assert_allclose(boxes[0].numpy(), expected, rtol=1e-6)
    assert labels.tolist() == [3, 3]                                      # 0.9 for class 3 beats 0.7 for 4


def test_fusion_keeps_groups_apart_and_sums_class_scores_over_views():
    box = [[10, 10, 50, 50]] * 4
    b, s, l, v, g = _det(box, [0.6, 0.5, 0.4, 0.9], [2, 5, 5, 7], [0, 1, 2, 0], groups=[1, 1, 1, 2])
    boxes, scores, labels = fuse(b, s, l, v, g, n_views=3, iou=0.75)
    assert len(boxes) == 2                                                # the group-2 detection stays apart
    assert labels.tolist() == [5, 7]                                      # class 5: 0.5 + 0.4 > 0.6
    np.testing.assert_allclose(scores.numpy(), [0.5, 0.3])                # (0.6 + 0.5 + 0.4) / 3, 0.9 / 3


def test_one_view_is_plain_nms():
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=gen) * 100
    wh = 5 + torch.rand(200, 2, generator=gen) * 30
    b = torch.cat([xy, xy + wh], 1)
    s = torch.rand(200, generator=gen)
    boxes, scores, labels = fuse(b, s, torch.ones(200, dtype=torch.int64), torch.zeros(200, dtype=torch.int64),
                                 torch.zeros(200, dtype=torch.int64), n_views=1, iou=0.75)
    keep = nms(b, s, 0.75)
    assert torch.equal(scores, s[keep])
    torch.testing.assert_close(boxes, b[keep])            # a weighted mean of one box: equal up to rounding


def test_every_nms_survivor_is_a_cluster_of_its_own_even_where_it_overlaps_a_better_one(monkeypatch):
    """Where NMS keeps a box that box_iou puts over ``iou`` with a better one (the two round
    differently at exactly the threshold), it still heads its own cluster: no empty cluster, no
    NaN box; here NMS is made to keep every box."""
    import torchvision.ops
    b, s, l, v, g = _det([[0, 0, 10, 10], [0, 0, 10, 11], [0, 0, 10, 10.5]], [0.9, 0.8, 0.7], [1, 1, 1], [0, 0, 1])
    monkeypatch.setattr(torchvision.ops, "batched_nms", lambda boxes, scores, groups, iou: torch.tensor([0, 1]))
    boxes, scores, labels = fuse(b, s, l, v, g, n_views=2, iou=0.75)
    assert len(boxes) == 2 and torch.isfinite(boxes).all()
    np.testing.assert_allclose(scores.numpy(), [0.8, 0.4])       # the third box joins the first head
    np.testing.assert_allclose(boxes[1].numpy(), [0, 0, 10, 11])


def test_no_detections_fuse_to_none():
    boxes, scores, labels = fuse(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64),
                                 torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), 4, 0.75)
    assert boxes.shape == (0, 4) and len(scores) == 0 and len(labels) == 0


@pytest.mark.parametrize("views", [0, 9])
def test_view_counts_outside_one_to_eight_are_refused(views):
    from bongard_system1.errors import System1Error
    from bongard_system1.predict import System1
    with pytest.raises(System1Error, match="views must be 1 to 8"):
        System1(torch.nn.Module(), {"image_size": 64}, ["shape"], views=views)


@pytest.mark.parametrize("shape", [(1, 40), (40, 1), (1, 1)])
def test_views_of_an_image_one_pixel_thin_are_arrays_torch_takes(shape):
    gray = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    views = view_images(gray, 8)
    for k, v in enumerate(views):
        assert torch.equal(torch.from_numpy(v), torch.as_tensor(v.copy())), k     # no negative strides
    assert views[1].tolist() == gray[:, ::-1].tolist() and views[3].tolist() == gray.T.tolist()
