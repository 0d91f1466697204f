"""Training, checkpoints and inference on a tiny generated dataset: resume after SIGKILL, corrupt
checkpoints, config changes, evaluation and prediction through the command line."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from bongard_system1.boxes import iou_xywh
from bongard_system1.data.generate import generate_dataset
from bongard_system1.errors import System1Error
from bongard_system1.predict import System1
from bongard_system1.train import train_detector

from .conftest import run_cli

TINY = dict(epochs=2, batch_size=4, image_size=128, progress=False, stamp_images=0, rescore_images=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "ds"
    generate_dataset(out, 40, 128, seed=3, workers=1, val_fraction=0.25, max_shapes=2, progress=False, quiet=True)
    return out


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    res = train_detector(data, out, **TINY)
    return out, res


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_run_folder_holds_everything(run):
    out, res = run
    for name in ("last.pt", "best.pt", "config.json", "metrics.csv", "training_curves.png"):
        assert (out / name).exists(), name
    rows = _rows(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert json.loads((out / "config.json").read_text())["planned_epochs"] == 2
    assert all(float(r["loss"]) > 0 and 0.0 <= float(r["val_AP"]) <= 1.0 for r in rows)
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])       # it learns something
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and {"optimizer", "scheduler", "scaler", "rng_torch", "config_hash"} <= set(last)
    assert res["best_checkpoint"].endswith("best.pt") and len(res["history"]) == 2


def test_epoch_plan_puts_the_first_half_of_the_one_cycle_epochs_at_the_early_size():
    from bongard_system1.train import epoch_plan
    assert epoch_plan(8, 0.25, 416, 0.75) == (2, 3, 320)        # the quick profile: epochs 1-3 at 320 px
    assert epoch_plan(8, 0.25, 416, 1.0)[1] == 0                # off
    assert epoch_plan(50, 0.25, 416, 0.75) == (12, 19, 320)
    assert epoch_plan(2, 0.25, 128, 0.75) == (0, 1, 96)         # no SWA below 4 epochs
    assert epoch_plan(1, 0.25, 128, 0.75)[1] == 0


def test_a_run_of_exactly_five_optimizer_steps_trains_and_repeats_exactly(data, tmp_path):
    """torch's OneCycleLR divides by zero over 5 steps at pct_start 0.2 (a warm-up of one step):
    30 training images at batch 6 for one epoch are 5 steps. At 64 px, on a CPU with AVX-512 BF16,
    bf16 training gave garbage (a NaN loss in 4 of 5 runs on one thread, a different loss each run):
    it trains in fp32 there, so two runs end with the same weights."""
    weights = []
    for name in ("r5a", "r5b"):
        res = train_detector(data, tmp_path / name, epochs=1, batch_size=6, image_size=64, progress=False,
                             stamp_images=0, rescore_images=0)
        assert len(res["history"]) == 1 and len(_rows(tmp_path / name / "metrics.csv")) == 1
        weights.append(torch.load(tmp_path / name / "last.pt", weights_only=True)["model"])
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_early_epochs_see_smaller_images_with_their_boxes_scaled_alike(run, data):
    out, _ = run
    assert [r["image_size"] for r in _rows(out / "metrics.csv")] == ["96", "128"]
    from bongard_system1.data.dataset import DetectionDataset
    ds = DetectionDataset(data, 128, split="train", augment=False)
    full_x, full_t = ds[0]
    ds.set_epoch(0, 96)
    small_x, small_t = ds[0]
    assert tuple(full_x.shape) == (1, 128, 128) and tuple(small_x.shape) == (1, 96, 96)
    torch.testing.assert_close(small_t["boxes"], full_t["boxes"] * 0.75)
    # the ink is where the boxes say, at both sizes
    for x, t in ((full_x, full_t), (small_x, small_t)):
        ink = (x[0] < 0.5).nonzero()
        lo, hi = ink.min(0).values.flip(0).float(), ink.max(0).values.flip(0).float() + 1
        assert torch.all(t["boxes"][:, :2].min(0).values <= lo + 1)
        assert torch.all(t["boxes"][:, 2:].max(0).values >= hi - 1)


@pytest.mark.parametrize("size", [128, 96])
def test_augmented_boxes_stay_on_the_ink(data, size):
    # rotations, flips, scale and translation jitter and blur, at the data's size and resized: every
    # image's shape boxes together span its ink (pixels under 90% white; anti-aliased and blurred edges:
    # within 2 px)
    from bongard_system1.data.dataset import DetectionDataset
    ds = DetectionDataset(data, size, categories="shapes", split="train", augment=True)
    worst = 0.0
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            x, t = ds[i]
            ys, xs = (x[0] < 0.9).nonzero(as_tuple=True)
            ink = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            b = t["boxes"]
            span = torch.stack([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()])
            worst = max(worst, float((span - ink).abs().max()))
    assert worst <= 2.0          # 1.29 px at both sizes (2026-12-01)


def test_an_early_scale_of_one_keeps_the_config_hash_of_runs_made_before_it():
    from bongard_system1.train import TrainConfig
    off = TrainConfig(data_dir="d", early_scale=1.0)
    assert "early_scale" not in off.result_dict()
    assert TrainConfig(data_dir="d").hash() != off.hash()
    proc = run_cli("train", "--data", "d", "--out", "r", "--early-scale", "1.5")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--early-scale: expected a number in (0, 1], got 1.5" in proc.stderr


def test_the_peak_learning_rate_follows_the_batch_the_loader_really_gives():
    from bongard_system1.train import TrainConfig
    cfg = TrainConfig(data_dir="d", batch_size=32)
    assert cfg.peak_lr() == pytest.approx(4e-3)                  # 2e-3 x sqrt(32 / 8)
    assert cfg.peak_lr(1000) == pytest.approx(4e-3)
    assert cfg.peak_lr(8) == pytest.approx(2e-3)                 # 8 images: one batch of 8, not 32
    assert TrainConfig(data_dir="d", batch_size=32, lr=1e-3).peak_lr(8) == 1e-3   # --lr is taken as given


def test_rerun_of_a_finished_run_does_no_work(run, data):
    out, _ = run
    before = (out / "last.pt").stat().st_mtime_ns
    res = train_detector(data, out, **TINY)
    assert len(res["history"]) == 2 and (out / "last.pt").stat().st_mtime_ns == before


def test_changed_config_is_refused_with_the_keys_that_differ(run, data):
    out, _ = run
    with pytest.raises(System1Error, match=r"epochs 2 -> 3"):
        train_detector(data, out, **dict(TINY, epochs=3))
    proc = run_cli("train", "--data", data, "--out", out, "--epochs", 2, "--batch-size", 4, "--image-size", 160,
                   "--stamp-images", 0, "--rescore-images", 0)
    assert proc.returncode == 2 and "image_size 128 -> 160" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(data, tmp_path):
    out = tmp_path / "r"
    train_detector(data, out, **TINY)
    data_bytes = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data_bytes[: len(data_bytes) // 3])          # truncated
    proc = run_cli("train", "--data", data, "--out", out, "--epochs", 2, "--batch-size", 4, "--image-size", 128,
                   "--no-progress", "--stamp-images", 0, "--rescore-images", 0)
    assert proc.returncode == 0, proc.stderr
    assert "corrupt (moved to last.pt.corrupt); resuming from last.prev.pt (epoch 1)" in proc.stderr
    assert "after epoch 1" in proc.stderr
    assert [r["epoch"] for r in _rows(out / "metrics.csv")] == ["1", "2"]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    # the damaged file was set aside, not rotated into last.prev.pt: the good fallback is still there
    assert torch.load(out / "last.prev.pt", weights_only=True)["epoch"] == 1
    assert (out / "last.pt.corrupt").read_bytes() == data_bytes[: len(data_bytes) // 3]
    (out / "last.pt").write_bytes(b"\0" * 1000)                                 # damaged once more
    res = train_detector(data, out, **TINY)
    assert len(res["history"]) == 2 and torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    # killed after last.pt was written but before metrics.csv and the curves: the next run writes them
    rows = (out / "metrics.csv").read_text().splitlines()
    (out / "metrics.csv").write_text("\n".join(rows[:2]) + "\n")
    (out / "training_curves.png").unlink()
    res = train_detector(data, out, **TINY)
    assert [r["epoch"] for r in _rows(out / "metrics.csv")] == ["1", "2"] and len(res["history"]) == 2
    assert (out / "training_curves.png").is_file()


def test_a_run_folder_with_nothing_to_resume_is_not_trained_over(run, data, tmp_path):
    import shutil
    out = tmp_path / "r"
    shutil.copytree(run[0], out)
    for name in ("last.pt", "last.prev.pt"):        # deleted to save space (they are 3x best.pt)
        (out / name).unlink()
    best = (out / "best.pt").read_bytes()
    proc = run_cli("train", "--data", data, "--out", out, "--epochs", 1, "--batch-size", 4, "--image-size", 96,
                   "--stamp-images", 0, "--rescore-images", 0, "--no-progress")
    assert proc.returncode == 2 and "another config (epochs 2 -> 1, image_size 128 -> 96)" in proc.stderr
    assert "--restart" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (out / "best.pt").read_bytes() == best
    best_epoch = torch.load(out / "best.pt", weights_only=True)["epoch"]
    if best_epoch > 1:        # the same config: a best.pt past its first epoch is not trained over
        with pytest.raises(System1Error, match=f"holds a best.pt \\(epoch {best_epoch}\\) but no whole last.pt"):
            train_detector(data, out, **TINY)
        assert (out / "best.pt").read_bytes() == best
    else:                     # a first epoch at most is lost: trained again from the start
        res = train_detector(data, out, **TINY)
        assert len(res["history"]) == 2 and (out / "last.pt").is_file()


def test_a_finished_run_without_its_best_model_says_how_to_go_on(run, data, tmp_path):
    import shutil
    out = tmp_path / "r"
    shutil.copytree(run[0], out)
    (out / "best.pt").write_bytes((out / "best.pt").read_bytes()[:1000])
    with pytest.raises(System1Error, match=r"best.pt is damaged and training has finished \(2/2 epochs\).*--restart"):
        train_detector(data, out, **TINY)
    (out / "best.pt").unlink()
    with pytest.raises(System1Error, match=r"best.pt is missing and training has finished"):
        train_detector(data, out, **TINY)


def test_a_second_training_in_the_same_run_folder_is_refused(data, tmp_path):
    from bongard_system1.train import _run_folder_lock
    out = tmp_path / "busy"
    with _run_folder_lock(str(out)):          # as a first training holds it while it runs
        with pytest.raises(System1Error, match="another training run is using"):
            train_detector(data, out, **TINY)
    assert sorted(p.name for p in out.iterdir()) == [".train.lock"]         # nothing written
    fresh = tmp_path / "fresh"
    with pytest.raises(System1Error, match="stamp images must be 0"):
        train_detector(data, fresh, **dict(TINY, stamp_images=5))
    assert not fresh.exists()                   # a run that failed at once leaves no folder behind


@pytest.mark.parametrize("split,words", [("val", "has no training images"), ("train", "has no validation images")])
def test_a_dataset_without_a_split_is_refused_and_a_restart_keeps_the_old_run(run, data, tmp_path, split, words):
    import shutil
    bad = tmp_path / "ds"
    shutil.copytree(data, bad)
    for name in ("shapes_coco.json", "strokes_coco.json"):
        doc = json.loads((bad / name).read_text())
        for im in doc["images"]:
            im["split"] = split
        (bad / name).write_text(json.dumps(doc))
    old = tmp_path / "old"
    shutil.copytree(run[0], old)
    best = (old / "best.pt").read_bytes()
    with pytest.raises(System1Error, match=words):
        train_detector(bad, old, restart=True, **TINY)
    assert (old / "best.pt").read_bytes() == best and (old / "last.pt").is_file()


@pytest.mark.parametrize("damage,words", [("image", "are missing, unreadable or not the size"),
                                          ("style", "classes this model does not know: line/weird")])
def test_a_bad_image_or_class_is_refused_before_training_and_a_restart_keeps_the_old_run(run, data, tmp_path,
                                                                                        damage, words):
    import shutil
    bad = tmp_path / "ds"
    shutil.copytree(data, bad)
    if damage == "image":
        (bad / "images" / "000003.png").write_bytes(b"\x89PNG cut short")
    else:
        doc = json.loads((bad / "strokes_coco.json").read_text())
        line = next(a for a in doc["annotations"] if doc["categories"][a["category_id"] - 1]["name"] == "line")
        line["style"] = "weird"
        (bad / "strokes_coco.json").write_text(json.dumps(doc))
    old = tmp_path / "old"
    shutil.copytree(run[0], old)
    before = {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()}
    with pytest.raises(System1Error, match=words):
        train_detector(bad, old, restart=True, **TINY)
    assert all((old / name).read_bytes() == b for name, b in before.items() if name != ".train.lock")


def test_a_restart_killed_in_its_first_epoch_leaves_the_old_run_as_it_was(run, data, tmp_path, monkeypatch):
    import shutil
    import bongard_system1.train as train_mod
    old = tmp_path / "old"
    shutil.copytree(run[0], old)
    before = {p.name: p.read_bytes() for p in old.iterdir() if p.is_file() and p.name != ".train.lock"}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt          # as a kill in the first training step would
    monkeypatch.setattr(train_mod, "train_step", killed)
    with pytest.raises(KeyboardInterrupt):
        train_detector(data, old, restart=True, **dict(TINY, epochs=3))
    after = {p.name: p.read_bytes() for p in old.iterdir() if p.is_file() and p.name != ".train.lock"}
    assert after == before               # config.json too: it still describes last.pt's run
    with pytest.raises(System1Error, match="epochs 2 -> 3"):        # and a plain rerun says so
        train_detector(data, old, **dict(TINY, epochs=3))


def _train_cmd(data, out, epochs):
    return [sys.executable, "-m", "bongard_system1", "train", "--data", str(data), "--out", str(out),
            "--epochs", str(epochs), "--batch-size", "4", "--image-size", "128", "--no-progress", "--seed", "1",
            "--stamp-images", "0", "--rescore-images", "0"]


def test_sigkill_then_rerun_resumes_and_ends_like_an_uninterrupted_run(data, tmp_path):
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(data, ref, 4), check=True, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(data, out, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "last.pt").exists():
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = torch.load(out / "last.pt", weights_only=True)["epoch"]
    assert 1 <= done < 4
    again = subprocess.run(_train_cmd(data, out, 4), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"after epoch {done}" in again.stderr
    assert [r["epoch"] for r in _rows(out / "metrics.csv")] == ["1", "2", "3", "4"]
    a = torch.load(ref / "last.pt", weights_only=True)
    b = torch.load(out / "last.pt", weights_only=True)
    for k, v in a["model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    ra, rb = _rows(ref / "metrics.csv"), _rows(out / "metrics.csv")
    assert [round(float(r["loss"]), 3) for r in ra] == [round(float(r["loss"]), 3) for r in rb]


def test_evaluate_and_predict_from_the_command_line(run, data, tmp_path):
    out, _ = run
    m = tmp_path / "m.json"
    proc = run_cli("evaluate", "--model", out, "--coco", data / "strokes_coco.json", "--out", m)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(m.read_text())
    assert metrics["split"] == "val" and metrics["num_images"] == 10
    assert set(metrics["per_category"]) == {"line", "arc"} and metrics["stroke_mode"] == "snap"
    assert metrics["shape_mode"] == "hybrid"
    preds = tmp_path / "p.json"
    proc = run_cli("predict", "--model", out / "best.pt", "--coco", data / "shapes_coco.json", "--out", preds,
                   "--overlay-dir", tmp_path / "ov", "--score-threshold", "0.0")
    assert proc.returncode == 0, proc.stderr
    dets = json.loads(preds.read_text())
    # a shapes file gets shape detections only, with that file's ids
    assert dets and {d["category"] for d in dets} == {"shape"} and {d["category_id"] for d in dets} == {1}
    assert len(list((tmp_path / "ov").glob("*_overlay.png"))) == 40
    proc = run_cli("predict", "--model", out, "--coco", data / "strokes_coco.json", "--out", preds,
                   "--score-threshold", "0.0")
    dets = json.loads(preds.read_text())
    assert {d["category"] for d in dets} <= {"line", "arc"} and all("style" in d for d in dets)
    assert all(d["category_id"] == {"line": 1, "arc": 2}[d["category"]] for d in dets)
    # --stroke-mode model: the same detections with the network's own boxes, which the snap moved
    proc = run_cli("predict", "--model", out, "--coco", data / "strokes_coco.json", "--out", tmp_path / "raw.json",
                   "--score-threshold", "0.0", "--stroke-mode", "model")
    assert proc.returncode == 0, proc.stderr
    raw = json.loads((tmp_path / "raw.json").read_text())
    assert raw and len(raw) == len(dets)
    assert [(d["image_id"], d["score"], d["style"]) for d in raw] == [(d["image_id"], d["score"], d["style"]) for d in dets]
    assert any(r["bbox"] != d["bbox"] for r, d in zip(raw, dets))


def test_parse_from_the_command_line_and_the_api_groups_the_kept_detections(run, data, tmp_path):
    out, _ = run
    preds, parses = tmp_path / "p.json", tmp_path / "parse.json"
    # fp32 on both sides: this tiny model's scores lie close together, and bf16 could reorder them
    proc = run_cli("predict", "--model", out, "--images", data / "images", "--out", preds,
                   "--parse-out", parses, "--parse-min-score", "0.05", "--fp32")
    assert proc.returncode == 0, proc.stderr
    dets, parsed = json.loads(preds.read_text()), json.loads(parses.read_text())
    assert len(parsed) == 40 and "shapes holding" in proc.stdout
    assert "not rescored" in proc.stderr          # this model has no rescorer, and the parse says what that means
    for p in parsed:           # every kept detection is in the parse once: shapes, and strokes in them or loose
        mine = [d for d in dets if d["file_name"] == p["file_name"]]
        assert len(p["shapes"]) == sum(d["category"] == "shape" for d in mine)
        held = [st for s in p["shapes"] for st in s["strokes"]]
        assert len(held) + len(p["unassigned_strokes"]) == sum(d["category"] != "shape" for d in mine)
        for s in p["shapes"]:
            assert all(iou_xywh(st["bbox"], s["bbox"]) > 0 for st in s["strokes"])
    assert sum(len(s["strokes"]) for p in parsed for s in p["shapes"]) > 0
    proc = run_cli("predict", "--model", out, "--images", data / "images", "--out", preds, "--parse-out", parses,
                   "--parse-min-score", "1.5", "--fp32")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--parse-min-score" in proc.stderr
    system = System1.load(out, amp=False)
    image = data / "images" / parsed[0]["file_name"]
    p = system.parse(image, 0.05, 0.05)
    assert p.to_dict()["shapes"] == parsed[0]["shapes"]


def test_boxes_come_back_in_the_original_pixels_of_resized_and_non_square_images(run, data):
    out, _ = run
    # fp32: this tiny model's top scores lie within 0.001 of each other, and bf16's rounding can reorder
    # them between the two sizes; the mapping is what is tested here (the views' own: tests/test_views.py)
    model = System1.load(out, shape_mode="model", stroke_mode="model", views=1, amp=False)
    img = cv2.imread(str(data / "images" / "000000.png"), cv2.IMREAD_GRAYSCALE)
    wide = np.full((128, 256), 255, np.uint8)
    wide[:, :128] = img                      # the same content in a non-square image
    for big, factor in ((cv2.resize(img, (256, 256), interpolation=cv2.INTER_NEAREST), 2.0),
                        (cv2.resize(wide, (512, 256), interpolation=cv2.INTER_NEAREST), 2.0)):
        small_dets = model.detect(img if big.shape[0] == big.shape[1] else wide, score_threshold=0.0)
        big_dets = model.detect(big, score_threshold=0.0)
        # the small image's best box, scaled, is among the big image's best five (the resized pixels differ
        # a little, and this tiny model's top scores are close enough to trade places)
        top_small = max(small_dets, key=lambda d: d.score)
        best_big = sorted(big_dets, key=lambda d: -d.score)[:5]
        assert any(d.category == top_small.category
                   and np.allclose(np.array(d.bbox), np.array(top_small.bbox) * factor, atol=4.0) for d in best_big)
        assert all(0 <= d.bbox[0] <= big.shape[1] and 0 <= d.bbox[1] <= big.shape[0] for d in big_dets)
    # four views of a non-square image: every fused box inside it
    tall = np.ascontiguousarray(wide.T)
    for device in ("tpu", None, "cuda:x"):
        with pytest.raises(System1Error, match="expected auto, cpu or cuda"):
            System1.load(out, device=device)
    assert System1.load(out, device=torch.device("cpu")).device == "cpu"
    model = System1.load(out, shape_mode="model")
    for bad in (-1, 1.5, float("nan"), "0.5"):
        with pytest.raises(System1Error, match="score_threshold: expected a number in"):
            model.detect(tall, score_threshold=bad)
    dets = model.detect(tall, score_threshold=0.0)
    assert dets and all(-1 <= d.bbox[0] and d.bbox[0] + d.bbox[2] <= 129 and -1 <= d.bbox[1]
                        and d.bbox[1] + d.bbox[3] <= 257 for d in dets)


def test_images_meet_the_network_at_the_test_size(run, data, tmp_path):
    out, _ = run
    img = cv2.imread(str(data / "images" / "000000.png"), cv2.IMREAD_GRAYSCALE)
    assert System1.load(out).test_size == 160            # 1.15 x the training size 128, rounded to 32
    for size, expected in ((None, 160), (192, 192)):
        system = System1.load(out, shape_mode="model", test_size=size)
        seen = []
        system.model.backbone.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape)))
        system.detect(img)
        assert seen == [(4, 1, expected, expected)]         # the image and its three mirror images, one batch
    with pytest.raises(System1Error, match="test size"):
        System1.load(out, test_size=8)
    proc = run_cli("evaluate", "--model", out, "--coco", data / "shapes_coco.json", "--out", tmp_path / "m.json",
                   "--test-size", "128", "--views", "2")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["test_size"] == 128 and metrics["views"] == 2
    proc = run_cli("predict", "--model", out, "--coco", data / "shapes_coco.json", "--out", tmp_path / "p.json",
                   "--test-size", "8")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--test-size: expected an integer from 32 to 4096, got 8" in proc.stderr


def test_several_test_sizes_are_all_seen_and_their_views_fused(run, data, tmp_path):
    out, _ = run
    img = cv2.imread(str(data / "images" / "000000.png"), cv2.IMREAD_GRAYSCALE)
    both = System1.load(out, shape_mode="model", test_size=(160, 128), views=2, amp=False)
    seen = []
    both.model.backbone.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape)))
    o = both.network_outputs([img])[0]
    assert seen == [(2, 1, 160, 160), (2, 1, 128, 128)]       # two views at each size
    assert both.model.transform.min_size == (160,)             # the model is left at its first size
    # views 2 and 3 are what the network gives at 128 px for the image and its mirror image
    alone = System1.load(out, shape_mode="model", test_size=128, views=2, amp=False).network_outputs([img])[0]
    for v in (0, 1):
        torch.testing.assert_close(o["boxes"][o["views"] == v + 2], alone["boxes"][alone["views"] == v])
        torch.testing.assert_close(o["scores"][o["views"] == v + 2], alone["scores"][alone["views"] == v])
    assert both.detect(img, score_threshold=0.0)
    with pytest.raises(System1Error, match="distinct sizes"):
        System1.load(out, test_size=(160, 160))
    proc = run_cli("evaluate", "--model", out, "--coco", data / "shapes_coco.json", "--out", tmp_path / "m.json",
                   "--test-size", "160,128", "--views", "1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "m.json").read_text())["test_size"] == [160, 128]
    proc = run_cli("evaluate", "--model", out, "--coco", data / "shapes_coco.json", "--out", tmp_path / "m.json",
                   "--test-size", "160,160")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "distinct sizes" in proc.stderr


def test_bad_checkpoint_and_missing_data_give_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = run_cli("evaluate", "--model", bad, "--coco", tmp_path / "x.json", "--out", tmp_path / "m.json")
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "r")
    assert proc.returncode == 2 and "dataset folder not found" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_cli("train", "--data", tmp_path / "empty", "--out", tmp_path / "r")
    assert proc.returncode == 2 and "holds no shapes_coco.json: generate a dataset first" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_train_refuses_a_file_for_a_folder_and_the_dataset_as_its_run_folder(data, tmp_path):
    for args, says in (((data / "shapes_coco.json", tmp_path / "r"), "is a file; give the dataset folder"),
                       ((data, data / "shapes_coco.json"), "is a file; give a run folder"),
                       ((data, data), "is the dataset folder")):
        proc = run_cli("train", "--data", args[0], "--out", args[1], "--epochs", 1)
        assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "r").exists() and not (data / "last.pt").exists() and not (data / "config.json").exists()


def test_a_time_budget_cuts_the_planned_epochs_and_resume_keeps_the_plan(data, tmp_path, capsys):
    out = tmp_path / "tb"
    # a budget far below one epoch of 30 training images at 128 px still trains one epoch
    res = train_detector(data, out, epochs=50, batch_size=4, image_size=128, progress=False, time_budget=0.001,
                          stamp_images=0, rescore_images=0)
    err = capsys.readouterr().err
    assert "time budget 0.001 min" in err and "so 1 of 50 epochs" in err
    assert res["planned_epochs"] == 1 and res["epochs_done"] == 1
    # the same command again: finished, the plan comes from the checkpoint, no new epoch
    again = train_detector(data, out, epochs=50, batch_size=4, image_size=128, progress=False, time_budget=0.001,
                          stamp_images=0, rescore_images=0)
    assert again["planned_epochs"] == 1 and len(again["history"]) == 1
    # --status reads the plan from config.json: one epoch of one, nothing left
    from bongard_system1.schedule import run_progress
    assert run_progress(out).startswith("1/1 epochs done, the last in ")


def test_cpu_bf16_is_read_from_the_cpuinfo_flags():
    from bongard_system1.precision import bf16_flag_in
    amd = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
    intel = "flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert bf16_flag_in(amd) == "avx512_bf16"
    assert bf16_flag_in(intel) == "amx_bf16"
    assert bf16_flag_in("flags\t\t: fpu avx2 avx512f avx512bw\n") is None
    assert bf16_flag_in("bugs\t\t: avx512_bf16_missing\nflags\t\t: fpu avx2\n") is None
    assert bf16_flag_in("") is None


def test_mixed_precision_on_cpu_only_with_hardware_bf16(monkeypatch):
    from bongard_system1 import precision, train
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    dtype, scaler = train.amp_settings("cpu")
    assert dtype is None and not scaler.is_enabled()
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    dtype, scaler = train.amp_settings("cpu")
    assert dtype == torch.bfloat16 and not scaler.is_enabled()
    assert train.amp_settings("cpu", amp=False)[0] is None
    # at 64 px or less FCOS's P7 convolution sees a 1x1 input, whose bf16 weight gradient oneDNN
    # leaves partly unwritten: fp32 there, on the CPU only
    assert train.amp_settings("cpu", smallest_size=64)[0] is None
    assert train.amp_settings("cpu", smallest_size=65)[0] == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert train.amp_settings("cuda", smallest_size=64)[0] == torch.bfloat16


def test_head_outputs_stay_float32_under_bf16_autocast():
    from bongard_system1.model import ModelConfig, build_model
    model = build_model(ModelConfig(image_size=64)).eval()
    feats = [torch.rand(1, 128, s, s) for s in (8, 4, 2, 1, 1)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.head(feats)
    assert all(v.dtype == torch.float32 for v in out.values())


def test_inference_runs_in_bf16_where_the_cpu_has_hardware_bf16_and_finds_what_fp32_finds(run, data, monkeypatch,
                                                                                           tmp_path):
    from bongard_system1 import precision
    out, _ = run
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    img = cv2.imread(str(data / "images" / "000000.png"), cv2.IMREAD_GRAYSCALE)
    found, heads = {}, {}
    for amp in (False, True):
        system = System1.load(out, shape_mode="model", stroke_mode="model", views=1, amp=amp)
        assert system.amp_dtype == (torch.bfloat16 if amp else None)
        seen = []
        system.model.backbone.register_forward_hook(lambda m, a, o: seen.append(next(iter(o.values())).dtype))
        system.model.head.register_forward_hook(lambda m, a, o, amp=amp: heads.__setitem__(amp, o))
        found[amp] = system.detect(img, score_threshold=0.0)
        assert seen == [torch.bfloat16 if amp else torch.float32]
    assert found[True] and all(isinstance(d.score, float) for d in found[True])
    # What the network says at every location, in bf16 as in fp32. (Whole detections are compared by
    # the real-set AP in the README: this tiny model's top scores lie so close together that NMS may
    # keep different ones of its near-identical boxes.)
    assert all(h["cls_logits"].dtype == torch.float32 for h in heads.values())
    probs = {amp: torch.sigmoid(h["cls_logits"]) for amp, h in heads.items()}
    assert (probs[True] - probs[False]).abs().max() < 0.05
    reg32, reg16 = heads[False]["bbox_regression"], heads[True]["bbox_regression"]
    assert ((reg16 - reg32).abs() / reg32.abs().clamp(min=1.0)).median() < 0.05
    proc = run_cli("evaluate", "--model", out, "--coco", data / "shapes_coco.json", "--out", tmp_path / "m.json",
                   "--fp32", "--views", "1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "m.json").read_text())["precision"] == "float32"
