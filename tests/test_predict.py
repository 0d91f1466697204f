"""How shape boxes meet the ink after the network: snapping and the hybrid with ink components."""

import cv2
import numpy as np

from bongard_system1.predict import Detection, as_gray, hybrid_shapes, snap_to_ink


def _page():
    img = np.full((200, 300), 255, np.uint8)
    cv2.rectangle(img, (20, 30), (69, 89), 0, 3)        # a lone square: x 19..70, y 29..90
    cv2.rectangle(img, (150, 40), (199, 99), 0, 3)      # two squares that touch: one ink component
    cv2.rectangle(img, (199, 60), (259, 129), 0, 3)
    return img


def test_snap_moves_edges_to_the_ink_nearby_only():
    img = _page()
    ys, xs = np.nonzero(img[:, :120] < 255)
    exact = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert snap_to_ink(img, [exact[0] + 3, exact[1] - 4, exact[2] - 2, exact[3] + 5]) == [float(v) for v in exact]
    # an edge far from any ink stays where it is
    far = snap_to_ink(img, [100.0, 100.0, 120.0, 120.0])
    assert far == [100.0, 100.0, 120.0, 120.0]


def test_hybrid_uses_exact_components_and_splits_touching_shapes():
    img = _page()
    lone = Detection([21.0, 28.0, 50.0, 64.0], 0.9, "shape")             # roughly the lone square
    a = Detection([148.0, 38.0, 54.0, 64.0], 0.8, "shape")               # the touching pair, one by one
    b = Detection([197.0, 58.0, 64.0, 74.0], 0.7, "shape")
    out = hybrid_shapes(img, [lone, a, b])
    boxes = [tuple(d.bbox) for d in sorted(out, key=lambda d: -d.score)]
    ys, xs = np.nonzero(img[:, :120] < 255)
    assert boxes[0] == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)   # exact
    assert (148.0, 38.0, 54.0, 64.0) in boxes and (197.0, 58.0, 64.0, 74.0) in boxes
    merged = [d for d in out if d.bbox[2] > 100]        # the merged component is kept, ranked below
    assert len(merged) == 1 and merged[0].score < min(a.score, b.score)


def test_hybrid_without_network_agreement_keeps_components_low():
    out = hybrid_shapes(_page(), [])
    assert len(out) == 2 and all(d.score == 0.5 for d in out)


def test_hybrid_does_not_split_on_unconfident_parts():
    a = Detection([148.0, 38.0, 54.0, 64.0], 0.4, "shape")
    b = Detection([197.0, 58.0, 64.0, 74.0], 0.3, "shape")
    out = hybrid_shapes(_page(), [a, b])
    top = sorted(out, key=lambda d: -d.score)[:2]
    assert all(d.score >= 0.5 for d in top) and max(d.bbox[2] for d in top) > 100     # the component stays first


def test_as_gray_accepts_colour_and_float_images():
    img = _page()
    colour = np.dstack([img] * 3)
    assert np.array_equal(as_gray(colour), img)
    assert np.array_equal(as_gray(img.astype(np.float32) / 255.0), img)
