"""The stroke rescorer: its targets, its ink features, and how it is trained, stored and applied."""

import cv2
import numpy as np
import pytest
import torch

from bongard_system1.data.generate import generate_dataset
from bongard_system1.predict import Detection, System1
from bongard_system1.rescore import (FEATURES, NETS, RESCORE_MIN_SCORE, Rescorer, build_rescorer_net, greedy_targets,
                                     stroke_features)
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
