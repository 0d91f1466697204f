"""The data stage: determinism across worker counts, resume after SIGKILL, validation and bad input."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from bongard_system1.data.generate import generate_dataset, repair_dataset
from bongard_system1.errors import DatasetDamaged
from bongard_system1.errors import System1Error

from .conftest import run_cli


def tree_digest(folder):
    """sha256 of every file (name and bytes) under a dataset folder."""
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            p = os.path.join(root, f)
            h.update(os.path.relpath(p, folder).encode())
            with open(p, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def test_generate_writes_coco_files_like_the_real_set(tmp_path):
    out = tmp_path / "ds"
    m = generate_dataset(out, 30, 128, seed=1, workers=1, val_fraction=0.2, progress=False)
    assert m["status"] == "complete" and m["num_images"] == 30 and m["num_val"] == 6
    shapes = json.loads((out / "shapes_coco.json").read_text())
    strokes = json.loads((out / "strokes_coco.json").read_text())
    assert shapes["categories"] == [{"id": 1, "name": "shape", "supercategory": "shape"}]
    assert [c["name"] for c in strokes["categories"]] == ["line", "arc"]
    assert sum(im["split"] == "val" for im in shapes["images"]) == 6
    a = shapes["annotations"][0]
    assert {"action_program", "strokes", "bbox", "start_coordinates", "scaling_factor"} <= set(a)
    assert {"style", "action", "shape_ann_id"} <= set(strokes["annotations"][0])
    # stroke annotations are the shapes' strokes
    assert len(strokes["annotations"]) == sum(len(a["strokes"]) for a in shapes["annotations"])
    # every box is tight on the saved image
    for im in shapes["images"]:
        img = cv2.imread(str(out / im["file_name"]), cv2.IMREAD_GRAYSCALE)
        assert img.shape == (128, 128)
        ink = img < 255
        covered = np.zeros_like(ink)
        for s in (s for s in shapes["annotations"] if s["image_id"] == im["id"]):
            x, y, w, h = s["bbox"]
            sub = ink[y:y + h, x:x + w]
            assert sub[0].any() and sub[-1].any() and sub[:, 0].any() and sub[:, -1].any()
            covered[y:y + h, x:x + w] = True
        assert not (ink & ~covered).any()
    assert not (out / ".parts").exists()


def test_same_arguments_give_identical_bytes_whatever_the_workers(tmp_path):
    generate_dataset(tmp_path / "w1", 120, 96, seed=4, workers=1, progress=False)
    generate_dataset(tmp_path / "w2", 120, 96, seed=4, workers=2, progress=False)
    assert tree_digest(tmp_path / "w1") == tree_digest(tmp_path / "w2")
    generate_dataset(tmp_path / "s5", 120, 96, seed=5, workers=2, progress=False)
    assert tree_digest(tmp_path / "w1") != tree_digest(tmp_path / "s5")


def test_rerun_of_a_finished_dataset_checks_it_and_does_nothing(tmp_path):
    out = tmp_path / "ds"
    generate_dataset(out, 20, 96, seed=2, workers=1, progress=False)
    before = tree_digest(out)
    proc = run_cli("generate", "--out", out, "--num-images", 20, "--image-size", 96, "--seed", 2, "--no-progress")
    assert proc.returncode == 0 and "already complete" in proc.stdout
    assert tree_digest(out) == before


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    args = ["--num-images", 2400, "--image-size", 160, "--seed", 9, "--workers", 2, "--no-progress"]
    ref = tmp_path / "ref"
    run_cli("generate", "--out", ref, *args, check=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "bongard_system1", "generate", "--out", str(out), *map(str, args)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / ".parts"
    deadline = time.time() + 60
    while time.time() < deadline and not (parts.exists() and len(list(parts.glob("images_*.json"))) >= 1):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("images_*.json")))
    assert 1 <= done < 10, "the kill should land mid-run"
    assert not (out / "shapes_coco.json").exists()
    proc = run_cli("generate", "--out", out, *args)
    assert proc.returncode == 0, proc.stderr
    assert tree_digest(out) == tree_digest(ref)


@pytest.mark.parametrize("flag,value", [("--num-images", 0), ("--num-images", -3), ("--num-images", 10**11),
                                        ("--image-size", 0), ("--image-size", -5), ("--image-size", 16),
                                        ("--image-size", 5000), ("--workers", -1), ("--val-fraction", 1.5),
                                        ("--val-fraction", 0.95), ("--out", ""), ("--out", "   ")])
def test_bad_numbers_give_one_error_line(tmp_path, flag, value):
    args = {"--num-images": 5, "--image-size": 64, "--out": tmp_path / "x"}
    args[flag] = value
    flat = [str(x) for kv in args.items() for x in kv]
    proc = run_cli("generate", *flat, cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error:")
    assert list(tmp_path.iterdir()) == []


def test_workers_0_is_one_process_as_in_the_pipeline(tmp_path):
    proc = run_cli("generate", "--out", tmp_path / "x", "--num-images", 5, "--image-size", 64, "--workers", 0,
                   "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "x" / "dataset.json").read_text())["num_images"] == 5


def test_other_arguments_on_an_existing_dataset_are_refused_and_nothing_is_lost(tmp_path):
    out = tmp_path / "ds"
    generate_dataset(out, 20, 96, seed=2, workers=1, progress=False)
    before = tree_digest(out)
    proc = run_cli("generate", "--out", out, "--num-images", 40, "--image-size", 96, "--seed", 2)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "num_images 20 -> 40" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert tree_digest(out) == before


def test_a_foreign_folder_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(System1Error, match="not a dataset folder"):
        generate_dataset(tmp_path, 5, 64, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    proc = run_cli("generate", "--out", ro / "ds", "--num-images", 5, "--image-size", 64)
    assert proc.returncode == 2 and "cannot write" in proc.stderr


def test_unwritable_output_path_even_as_root(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("generate", "--out", blocker / "ds", "--num-images", 5, "--image-size", 64)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


def test_preview_draws_a_grid(tmp_path):
    generate_dataset(tmp_path / "ds", 6, 96, seed=1, workers=1, progress=False)
    proc = run_cli("preview", "--data", tmp_path / "ds", "--out", tmp_path / "grid.png", "--strokes")
    assert proc.returncode == 0, proc.stderr
    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid.shape[0] >= 256 and (grid[..., 1] > grid[..., 0] + 80).any()   # green shape boxes


def test_a_missing_or_damaged_image_of_a_finished_dataset_is_drawn_again_on_rerun(tmp_path):
    ref = tmp_path / "ref"
    generate_dataset(ref, 40, 64, seed=2, workers=1, progress=False, quiet=True)
    out = tmp_path / "ds"
    generate_dataset(out, 40, 64, seed=2, workers=2, progress=False, quiet=True)
    (out / "images" / "000017.png").unlink()
    damaged = bytearray((out / "images" / "000023.png").read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF          # same size: only the bytes say it is damaged
    (out / "images" / "000023.png").write_bytes(bytes(damaged))
    proc = run_cli("generate", "--out", out, "--num-images", 40, "--image-size", 64, "--seed", 2, "--workers", 2)
    assert proc.returncode == 0, proc.stderr
    assert "2 damaged or missing image(s) drawn again" in proc.stdout
    assert proc.stderr == ""                     # no decoder noise about the damaged file
    assert tree_digest(out) == tree_digest(ref)


def test_repair_dataset_draws_missing_and_damaged_images_again_from_the_manifest(tmp_path):
    """What the pipeline calls on a dataset whose stage is done: the parameters come from dataset.json."""
    out = tmp_path / "ds"
    generate_dataset(out, 12, 64, seed=3, workers=1, progress=False, quiet=True)
    before = tree_digest(out)
    (out / "images" / "000002.png").unlink()
    (out / "images" / "000007.png").write_bytes(b"xx")
    assert repair_dataset(str(out), workers=1)["redrawn"] == 2
    assert tree_digest(out) == before and repair_dataset(str(out), workers=1)["redrawn"] == 0
    for name in ("shapes_coco.json", "strokes_coco.json"):      # as made before images had their CRC-32
        doc = json.loads((out / name).read_text())
        for im in doc["images"]:
            im.pop("png_crc32")
        (out / name).write_text(json.dumps(doc))
    (out / "images" / "000002.png").unlink()
    with pytest.raises(DatasetDamaged, match="000002.png is missing or damaged, and its record keeps no CRC-32") as e:
        repair_dataset(str(out), workers=1)
    assert "delete the folder" not in e.value.cause and not (out / "images" / "000002.png").exists()


def test_an_image_that_cannot_be_drawn_again_the_same_is_refused(tmp_path):
    out = tmp_path / "ds"
    generate_dataset(out, 20, 64, seed=2, workers=1, progress=False, quiet=True)
    for name in ("shapes_coco.json", "strokes_coco.json"):      # as if drawn by another encoder
        doc = json.loads((out / name).read_text())
        doc["images"][4]["png_crc32"] += 1
        (out / name).write_text(json.dumps(doc))
    proc = run_cli("generate", "--out", out, "--num-images", 20, "--image-size", 64, "--seed", 2)
    assert proc.returncode == 2 and "000004.png is damaged, and drawing it again does not give the image" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_same_size_damaged_image_of_a_finished_chunk_is_redrawn_on_resume(tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    generate_dataset(ref, 40, 64, seed=3, workers=1, progress=False, quiet=True)
    out = tmp_path / "ds"
    _interrupted(out, 40, monkeypatch)
    damaged = bytearray((out / "images" / "000002.png").read_bytes())
    damaged[-20] ^= 0x55
    (out / "images" / "000002.png").write_bytes(bytes(damaged))
    generate_dataset(out, 40, 64, seed=3, workers=1, progress=False, quiet=True)
    assert tree_digest(out) == tree_digest(ref)


def _interrupted(out, num_images, monkeypatch, after_chunks=1):
    """Start a one-worker run in-process and stop it (as a kill would) after ``after_chunks`` chunks."""
    from bongard_system1.data import generate as gen
    real, calls = gen._work_chunk, []

    def stop_after(job):
        if len(calls) >= after_chunks:
            raise KeyboardInterrupt
        calls.append(job[1])
        return real(job)

    monkeypatch.setattr(gen, "_work_chunk", stop_after)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(out, num_images, 64, seed=3, workers=1, progress=False, quiet=True)
    monkeypatch.setattr(gen, "_work_chunk", real)
    assert len(list((out / ".parts").glob("images_0000000_*.json"))) == 1 and not (out / "shapes_coco.json").exists()


def test_an_image_lost_while_interrupted_is_redrawn_with_its_chunk(tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    generate_dataset(ref, 40, 64, seed=3, workers=1, progress=False, quiet=True)
    out = tmp_path / "ds"
    _interrupted(out, 40, monkeypatch)
    (out / "images" / "000003.png").unlink()          # from the chunk finished before the interruption
    (out / "images" / "000005.png").write_bytes(b"\x89PNG")   # and one cut short
    proc = run_cli("generate", "--out", out, "--num-images", 40, "--image-size", 64, "--seed", 3, "--workers", 1,
                   "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert tree_digest(out) == tree_digest(ref)


def test_a_corrupt_part_file_is_redrawn_and_the_result_is_unchanged(tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    generate_dataset(ref, 40, 64, seed=3, workers=1, progress=False, quiet=True)
    out = tmp_path / "ds"
    _interrupted(out, 40, monkeypatch)
    (out / ".parts" / "images_0000000_0000016.json").write_text('[{"index": 0, "pen')     # torn write
    generate_dataset(out, 40, 64, seed=3, workers=2, progress=False, quiet=True)
    assert tree_digest(out) == tree_digest(ref)


def test_a_run_resumed_with_other_workers_keeps_its_chunks_and_redraws_nothing(tmp_path, monkeypatch):
    # 200 images come in chunks of 50 with one worker and of 25 with two: the resumed run must keep
    # the chunks the first run chose, whatever --workers it is given.
    ref = tmp_path / "ref"
    generate_dataset(ref, 200, 64, seed=3, workers=2, progress=False, quiet=True)
    out = tmp_path / "ds"
    _interrupted(out, 200, monkeypatch)
    assert [p.name for p in (out / ".parts").iterdir()] == ["images_0000000_0000050.json"]
    first = (out / "images" / "000000.png").stat().st_mtime_ns
    proc = run_cli("generate", "--out", out, "--num-images", 200, "--image-size", 64, "--seed", 3, "--workers", 2,
                   "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert tree_digest(out) == tree_digest(ref)
    assert (out / "images" / "000000.png").stat().st_mtime_ns == first     # the finished chunk was not redrawn
