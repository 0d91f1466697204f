"""The rescorer of strokes and shapes: its targets, its ink features, and how it is trained, stored and applied."""

import cv2
import numpy as np
import pytest
import torch

from bongard_system1.data.generate import generate_dataset
from bongard_system1.predict import Detection, System1
from bongard_system1.rescore import (FEATURES, NETS, RESCORE_MIN_SCORE, Rescorer, build_rescorer_net, greedy_targets,
                                     on_ink, on_ink_many, stroke_features)
from bongard_system1.rescore_shapes import SHAPE_FEATURES, shape_features, shape_targets
from bongard_system1.train import train_detector


def test_targets_match_by_score_as_coco_does():
    truth = {"line": [[10, 10, 40, 20]], "arc": [[100, 100, 30, 30]]}
    dets = [Detection([10, 10, 40, 20], 0.5, "line"),      # exact, but scored below its duplicate
            Detection([11, 10, 40, 20], 0.9, "line"),      # the first match of the line
            Detection([10, 10, 20, 20], 0.8, "line"),      # half the line: IoU 0.5 with it, but it is taken
            Detection([100, 100, 30, 30], 0.3, "line"),    # an arc's box called a line
            Detection([100, 100, 20, 30], 0.2, "arc")]     # two thirds of the arc: IoU 0.67
    t = greedy_targets(dets, truth)
    assert t[1] == pytest.approx(780 / 820) and t[0] == 0 and t[2] == 0 and t[3] == 0
    assert t[4] == pytest.approx(2 / 3)
    assert not greedy_targets(dets, {"line": [], "arc": []}).any()


def _feature(feats, name):
    return feats[:, FEATURES.index(name)]


def test_ink_features_tell_a_whole_line_from_a_piece_of_it():
    gray = np.full((256, 256), 255, np.uint8)
    cv2.line(gray, (40, 40), (200, 200), 0, 5)
    out = {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
           "views": torch.zeros(0, dtype=torch.int64)}
    whole = Detection([38.0, 38.0, 164.0, 164.0], 0.6, "line")
    piece = Detection([38.0, 38.0, 82.0, 82.0], 0.9, "line")
    beside = Detection([150.0, 20.0, 60.0, 60.0], 0.4, "line")            # no ink along it
    f = stroke_features(gray, [whole, piece, beside], [], out, ["shape", "line/normal"], 1)
    assert f.shape == (3, len(FEATURES)) and np.isfinite(f).all()
    cov, past = _feature(f, "cov"), _feature(f, "ext_max")
    assert cov[0] > 0.95 and cov[1] > 0.95 and cov[2] < 0.3            # the diagonal runs on ink, or not
    assert past[0] < 0.4 and past[1] > 0.8                              # the ink runs on past the piece's end
    # the piece lies inside the whole line's box, and fills a quarter of it
    assert _feature(f, "s_in")[0] == pytest.approx(0.9) and _feature(f, "in_hi")[0] == pytest.approx(0.25, abs=0.01)
    assert list(_feature(f, "rank")) == pytest.approx([1 / 3, 0, 2 / 3])


def test_ink_along_many_segments_at_once_is_the_ink_along_each():
    gray = np.full((64, 80), 255, np.uint8)
    cv2.line(gray, (5, 10), (70, 50), 0, 3)
    ink = gray < 255
    rng = np.random.default_rng(0)
    p0, p1 = rng.uniform(-20, 100, (200, 2)), rng.uniform(-20, 100, (200, 2))     # many leave the image
    p1[:20] = p0[:20]                                                            # and some are points
    def along(a, b, n):        # point by point: outside the image is no ink, the last half pixel is the edge's
        hits = 0
        for t in np.linspace(0.0, 1.0, n):
            x, y = a * (1 - t) + b * t
            hits += 0 <= x < 80 and 0 <= y < 64 and bool(ink[min(int(np.round(y)), 63), min(int(np.round(x)), 79)])
        return hits / n
    for n in (8, 16, 24):
        many = on_ink_many(ink, p0, p1, n)
        assert many.shape == (200,) and 0 < many.mean() < 0.5
        assert list(many) == [along(a, b, n) for a, b in zip(p0, p1)] == [on_ink(ink, a, b, n) for a, b in zip(p0, p1)]
    assert 0 < on_ink(ink, (5, 10), (70, 50)) == 1.0 and on_ink(ink, (-30, -30), (-5, -5)) == 0.0
    assert on_ink_many(ink, np.zeros((0, 2)), np.zeros((0, 2))).shape == (0,)


@pytest.fixture(scope="module")
def rescored_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("rescore") / "ds"
    generate_dataset(data, 24, 128, seed=3, workers=1, val_fraction=0.25, max_shapes=2, progress=False, quiet=True)
    run = data.parent / "run"
    res = train_detector(data, run, epochs=2, batch_size=4, image_size=128, progress=False, stamp_images=0,
                         rescore_images=12)
    return data, run, res


def test_the_rescorer_is_trained_stored_and_applied_only_where_it_fits(rescored_run):
    data, run, res = rescored_run
    if res["rescorer"] is None:
        pytest.skip("the 2-epoch model found no right stroke to train a rescorer on")
    m = res["rescorer"]["metrics"]
    assert m["detections"] >= m["matched"] > 0
    stored = torch.load(run / "best.pt", weights_only=True)["rescorer"]["state_dicts"]
    assert len(stored) == m["nets"] == NETS and not torch.equal(stored[0]["0.weight"], stored[-1]["0.weight"])
    assert res["rescorer"]["settings"]["views"] == 4 and res["rescorer"]["settings"]["image_size"] == 128
    system = System1.load(run, device="cpu")
    assert system.rescorer is not None
    assert System1.load(run, device="cpu", rescore=False).rescorer is None
    assert System1.load(run, device="cpu", views=8).rescorer is None           # trained for four views
    assert System1.load(run, device="cpu", stroke_mode="model").rescorer is None
    gray = cv2.imread(str(data / "images" / "000000.png"), 0)
    out = system.network_outputs([gray])[0]
    plain = [d for d in system.postprocess(gray, out, rescore=False) if d.category != "shape"]
    new = [d for d in system.postprocess(gray, out) if d.category != "shape"]
    # the same strokes (boxes), new scores from 0.05 to 1 in the rescorer's order
    assert sorted(map(tuple, (d.bbox for d in plain))) == sorted(map(tuple, (d.bbox for d in new)))
    assert all(RESCORE_MIN_SCORE <= d.score <= 1 for d in new)
    assert [d.score for d in new] == sorted((d.score for d in new), reverse=True)
    # its shape nets re-rank the hybrid's shapes: the same boxes, new scores; other shape modes keep theirs
    shape_part = torch.load(run / "best.pt", weights_only=True)["rescorer"]["shapes"]
    if shape_part is None:
        pytest.skip("the 2-epoch model gave too few shape candidates, or none right, for a shape part")
    assert len(shape_part["state_dicts"]) == NETS and len(shape_part["mean"]) == len(SHAPE_FEATURES)
    assert shape_part["metrics"]["detections"] >= shape_part["metrics"]["matched"] > 0
    assert system.rescorer.rescores_shapes(system)
    plain = [d for d in system.postprocess(gray, out, rescore=False) if d.category == "shape"]
    new = [d for d in system.postprocess(gray, out) if d.category == "shape"]
    assert plain and sorted(map(tuple, (d.bbox for d in plain))) == sorted(map(tuple, (d.bbox for d in new)))
    assert all(RESCORE_MIN_SCORE <= d.score <= 1 for d in new)
    assert sorted(d.score for d in plain) != sorted(d.score for d in new)
    snap = System1.load(run, device="cpu", shape_mode="snap")
    assert snap.rescorer is not None and not snap.rescorer.rescores_shapes(snap)
    # a higher threshold only drops detections: the rescorer reads what it was trained on, in any shape mode
    for sys_ in (system, snap):
        low = [(d.category, d.bbox, d.score) for d in sys_.postprocess(gray, out) if d.score >= 0.3]
        assert sorted(low) == sorted((d.category, d.bbox, d.score) for d in sys_.postprocess(gray, out, 0.3))
    assert ([d.score for d in snap.postprocess(gray, out) if d.category == "shape"]
            == [d.score for d in snap.postprocess(gray, out, rescore=False) if d.category == "shape"])


def test_a_rescorer_scores_the_mean_of_its_nets_probabilities_and_loads_a_single_net():
    torch.manual_seed(0)
    nets = [build_rescorer_net() for _ in range(3)]
    x = np.random.default_rng(0).normal(size=(7, len(FEATURES))).astype(np.float32)
    entry = {"settings": {}, "mean": (x.mean(0) * 0.5).tolist(), "std": (x.std(0) + 1).tolist(),
             "state_dicts": [net.state_dict() for net in nets]}
    xn = torch.from_numpy((x - x.mean(0) * 0.5) / (x.std(0) + 1))
    with torch.no_grad():
        probs = [torch.sigmoid(net(xn).squeeze(1)).numpy() for net in nets]
    np.testing.assert_allclose(Rescorer(entry).scores(x), np.mean(probs, 0), rtol=1e-5, atol=1e-7)
    # a version-1 rescorer (one net, "state_dict") loads and scores as that net
    single = {k: v for k, v in entry.items() if k != "state_dicts"} | {"state_dict": nets[1].state_dict()}
    np.testing.assert_allclose(Rescorer(single).scores(x), probs[1], rtol=1e-5, atol=1e-7)
    assert len(Rescorer(entry).scores(x[:0])) == 0
    assert Rescorer(entry).shapes is None                        # before version 3: strokes only
    # version 3: shape nets beside the stroke nets, with their own normalisation
    xs = np.random.default_rng(1).normal(size=(5, len(SHAPE_FEATURES))).astype(np.float32)
    shape_nets = [build_rescorer_net(len(SHAPE_FEATURES)) for _ in range(2)]
    both = entry | {"shapes": {"mean": np.zeros(len(SHAPE_FEATURES)).tolist(), "std": np.full(len(SHAPE_FEATURES), 2.0).tolist(),
                               "state_dicts": [net.state_dict() for net in shape_nets]}}
    with torch.no_grad():
        shape_probs = [torch.sigmoid(net(torch.from_numpy(xs / 2)).squeeze(1)).numpy() for net in shape_nets]
    np.testing.assert_allclose(Rescorer(both).shape_scores(xs), np.mean(shape_probs, 0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(Rescorer(both).scores(x), np.mean(probs, 0), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="features"):            # nets of another feature set do not load
        Rescorer(entry | {"shapes": {**both["shapes"], "mean": [0.0] * 3, "std": [1.0] * 3}})


def test_the_rescorer_is_kept_when_unchanged_and_removed_without_touching_the_detector(rescored_run):
    data, run, res = rescored_run
    before = (run / "best.pt").stat().st_mtime_ns
    again = train_detector(data, run, epochs=2, batch_size=4, image_size=128, progress=False, stamp_images=0,
                           rescore_images=12)
    assert again["rescorer"] == res["rescorer"] and (run / "best.pt").stat().st_mtime_ns == before
    weights = torch.load(run / "best.pt", weights_only=True)["model"]
    none = train_detector(data, run, epochs=2, batch_size=4, image_size=128, progress=False, stamp_images=0,
                          rescore_images=0)
    assert none["rescorer"] is None and System1.load(run, device="cpu").rescorer is None
    after = torch.load(run / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(weights[k], after[k]) for k in weights)


def test_on_real_strokes_the_ink_features_tell_whole_lines_from_pieces_and_merges(real_dir):
    """On real images, with their true stroke boxes: the ink runs on past the end of half a normal
    line, not past a whole one, and the box over two strokes in a row has less ink along its lines."""
    import json
    coco = json.loads((real_dir / "strokes_coco.json").read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    by_shape = {}
    for a in coco["annotations"]:
        by_shape.setdefault((a["image_id"], a["shape_ann_id"]), {})[a["stroke_index"]] = a
    empty = {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
             "views": torch.zeros(0, dtype=torch.int64)}
    names = ["shape", "line/normal", "arc/normal"]
    whole_past, piece_past, whole_cov, merged_cov = [], [], [], []
    for (image_id, _), strokes in list(by_shape.items())[::8]:
        gray = cv2.imread(str(real_dir / files[image_id]), 0)
        for k, a in strokes.items():
            x, y, w, h = a["bbox"]
            if not a["action"].startswith("line_normal") or min(w, h) < 12:
                continue
            f = stroke_features(gray, [Detection([x, y, w, h], 0.5, "line")], [], empty, names, 1)
            # the half of the box on the diagonal the line runs along, from one corner to the centre
            main = stroke_features(gray, [Detection([x, y, w / 2, h / 2], 0.5, "line"),
                                          Detection([x + w / 2, y, w / 2, h / 2], 0.5, "line")], [], empty, names, 1)
            half = int(np.argmax(_feature(main, "cov")))
            if _feature(main, "cov")[half] < 0.9 or _feature(f, "cov")[0] < 0.9:
                continue
            whole_past.append(_feature(f, "ext_max")[0])
            piece_past.append(_feature(main, "ext_max")[half])
            if k + 1 in strokes:
                nb = strokes[k + 1]["bbox"]
                x0, y0 = min(x, nb[0]), min(y, nb[1])
                box = [x0, y0, max(x + w, nb[0] + nb[2]) - x0, max(y + h, nb[1] + nb[3]) - y0]
                m = stroke_features(gray, [Detection(box, 0.5, "line")], [], empty, names, 1)
                whole_cov.append(_feature(f, "cov")[0])
                merged_cov.append(_feature(m, "cov")[0])
    assert len(piece_past) > 50 and len(merged_cov) > 30
    assert np.median(piece_past) > 0.8 and np.median(whole_past) < 0.3     # 1.0 and 0.0 when written
    assert np.mean(np.array(whole_cov) > np.array(merged_cov)) > 0.8     # 91% of 209 pairs when written


def test_shape_targets_match_by_score_as_coco_does():
    truth = [[10, 10, 100, 100], [200, 10, 50, 50]]
    cands = [Detection([10, 10, 240, 100], 0.9, "shape"),     # the joint box of both: IoU < 0.5 with either
             Detection([10, 10, 100, 100], 0.3, "shape"),     # the first shape, exactly
             Detection([12, 10, 100, 100], 0.6, "shape"),     # nearly: matched first, as it scores higher
             Detection([200, 10, 50, 60], 0.2, "shape")]      # the second: IoU 5/6
    t = shape_targets(cands, truth)
    assert t[0] == 0 and t[1] == 0 and t[2] == pytest.approx(9800 / 10200) and t[3] == pytest.approx(5 / 6)
    assert not shape_targets(cands, []).any() and len(shape_targets([], truth)) == 0


def test_shape_features_tell_a_joint_box_from_the_shapes_inside_it():
    """Two squares joined by a line (from inside the left one) make one ink component; the network
    (given here) sees each square. Each square's box has ink all along its four edges, and the left
    one's cuts the line; the component's box holds both and cuts no stroke."""
    gray = np.full((256, 256), 255, np.uint8)
    cv2.rectangle(gray, (30, 60), (100, 130), 0, 4)
    cv2.rectangle(gray, (140, 60), (210, 130), 0, 4)
    cv2.line(gray, (60, 95), (140, 95), 0, 4)
    left, right = Detection([28.0, 58.0, 75.0, 75.0], 0.8, "shape"), Detection([138.0, 58.0, 75.0, 75.0], 0.7, "shape")
    joint = Detection([28.0, 58.0, 185.0, 75.0], 0.9, "shape")          # the component's box, as the hybrid gives it
    beside = Detection([60.0, 140.0, 50.0, 50.0], 0.1, "shape")         # no ink at all
    strokes = [Detection([58.0, 93.0, 84.0, 4.0], 0.9, "line")]        # the joining line
    out = {"boxes": torch.tensor([[28.0, 58.0, 103.0, 133.0]]), "scores": torch.tensor([0.8]),
           "labels": torch.tensor([1]), "views": torch.tensor([0])}
    f = shape_features(gray, [joint, left, right, beside], [left, right], strokes, out, ["shape", "line/normal"], 1)
    assert f.shape == (4, len(SHAPE_FEATURES)) and np.isfinite(f).all()
    col = {name: f[:, k] for k, name in enumerate(SHAPE_FEATURES)}
    assert list(col["comp"]) == [1, 0, 0, 0] and list(col["part"]) == [0, 1, 1, 0] and list(col["left"]) == [0, 0, 0, 1]
    assert min(col["b0"][1:3]) > 0.9 and col["b0"][3] == 0                # ink all along every edge, or none
    assert 0.5 < col["b0"][0] < 0.9 and col["b3"][0] > 0.9                # the gap between the squares
    assert col["n_in"][0] == 2 and col["n_in"][1] == 0                          # both squares inside the joint box
    assert col["st_cut"][1] == 1 and col["st_cut"][0] == 0                      # a square's edge cuts the line
    assert col["v_mean"][1] == pytest.approx(0.8) and col["v_mean"][2] == 0    # the view saw the left square
    assert col["net_best"][1] == pytest.approx(0.8) and col["net_best"][0] == 0


def test_on_real_shapes_true_boxes_have_ink_on_every_edge_and_none_just_outside(real_dir):
    """On real images, with their true shape boxes: ink on their edges and none in the ring just
    outside; boxes grown by 6 px have no ink on their edges, boxes shrunk by 6 px ink just outside."""
    import json
    coco = json.loads((real_dir / "shapes_coco.json").read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    empty = {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
             "views": torch.zeros(0, dtype=torch.int64)}
    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    true_edges, true_ring, grown_edges, shrunk_ring = [], [], [], []
    for image_id, boxes in list(by_image.items())[::12]:
        gray = cv2.imread(str(real_dir / files[image_id]), 0)
        for x, y, w, h in boxes:
            dets = [Detection([x, y, w, h], 0.9, "shape"), Detection([x - 6, y - 6, w + 12, h + 12], 0.5, "shape"),
                    Detection([x + 6, y + 6, w - 12, h - 12], 0.4, "shape")]
            f = shape_features(gray, dets, [], [], empty, ["shape"], 1)
            edges = f[:, [SHAPE_FEATURES.index(k) for k in ("b0", "b1", "b2", "b3")]]
            ring = f[:, SHAPE_FEATURES.index("ring")]
            true_edges.append(int((edges[0] > 0).sum())), true_ring.append(ring[0])
            grown_edges.append(edges[1].max()), shrunk_ring.append(ring[2])
    # 24 points an edge can miss where a curve only grazes it: most true boxes show ink on 3 or 4 edges
    assert len(true_edges) > 80 and np.mean(true_edges) > 3 and np.mean(np.array(true_edges) > 0) > 0.95
    assert max(true_ring) == 0 and max(grown_edges) == 0 and np.percentile(shrunk_ring, 10) > 0.03
