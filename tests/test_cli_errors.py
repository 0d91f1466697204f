"""Bad input on the package's command line: one ``error:`` line, exit status 2, before any work."""

from __future__ import annotations

import errno
import json
import os

import pytest

from bongard_system1.cli import main
from bongard_system1.errors import run_guarded


def one_error_line(capsys, code):
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def exit_code(argv):
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:       # argparse's errors
        return exc.code


@pytest.mark.parametrize("argv", [
    ["generate", "--out", "x", "--num-images", 4, "--seed", -1],
    ["train", "--data", "d", "--out", "r", "--seed", -1],
    ["train", "--data", "d", "--out", "r", "--workers", -1],
    ["train", "--data", "d", "--out", "r", "--lr", -0.1],
    ["train", "--data", "d", "--out", "r", "--lr", "fast"],
    ["train", "--data", "d", "--out", "r", "--time-budget", 0],
    ["predict", "--model", "baseline", "--images", "i", "--out", "p.json", "--score-threshold", 1.5],
    ["predict", "--model", "baseline", "--images", "i", "--out", "p.json", "--score-threshold", "nan"],
    ["generate", "--out", "x", "--num-images", 4, "--image-size", 100000000],
    ["generate", "--out", "x", "--num-images", 4, "--seed", 10**30],
    ["train", "--data", "d", "--out", "r", "--image-size", 100000],
    ["draw", "--program", "line_normal_0.500-0.500", "--out", "a.png", "--scale", "nan"],
    ["draw", "--program", "line_normal_0.500-0.500", "--out", "a.png", "--scale", 0],
    ["draw", "--program", "line_normal_0.500-0.500", "--out", "a.png", "--size", 10**7],
    ["draw", "--program", "line_normal_0.500-0.500", "--out", "a.png", "--scale", "1e12"],
    ["generate", "--out", "x", "--num-images", 4, "--max-shapes", 100000],
])
def test_numbers_out_of_range_are_refused_by_the_parser(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(capsys, exit_code(argv))
    assert "expected" in line
    assert not any(tmp_path.iterdir())          # nothing written


def test_an_output_that_is_a_folder_or_cannot_be_made_is_refused_before_any_work(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    coco = tmp_path / "c.json"
    coco.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    line = one_error_line(capsys, exit_code(["evaluate", "--model", "baseline", "--coco", coco, "--out", tmp_path]))
    assert "is a folder" in line
    line = one_error_line(capsys, exit_code(["predict", "--model", "baseline", "--images", images, "--out", images]))
    assert "is a folder" in line
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    line = one_error_line(capsys, exit_code(["predict", "--model", "baseline", "--images", images,
                                             "--out", tmp_path / "p.json", "--overlay-dir", blocker / "sub"]))
    assert "--overlay-dir" in line and "cannot create" in line
    line = one_error_line(capsys, exit_code(["predict", "--model", "baseline", "--images", images,
                                             "--out", blocker / "p.json"]))
    assert "cannot write" in line
    assert not (tmp_path / "p.json").exists()


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux's /sys, read-only even to root")
def test_an_output_on_a_file_system_that_refuses_writes_is_refused_before_any_work(tmp_path, capsys):
    coco = _real_like(tmp_path)
    line = one_error_line(capsys, exit_code(["evaluate", "--model", "baseline", "--coco", coco,
                                             "--out", "/sys/kernel/metrics.json"]))
    assert "cannot write in /sys/kernel" in line


def test_an_os_error_such_as_a_full_disk_is_one_line(capsys):
    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/last.pt.tmp")
    line = one_error_line(capsys, run_guarded(full_disk))
    assert line == "error: No space left on device (/somewhere/last.pt.tmp)"


def _real_like(tmp_path, n_images=2, **changes):
    """A small COCO file in the real set's layout, with its images on disk; ``changes`` edit it."""
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True, exist_ok=True)
    doc = {"images": [{"id": i + 1, "file_name": f"images/{i}.png", "width": 64, "height": 64} for i in range(n_images)],
           "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [4, 4, 20, 20]}
                           for i in range(n_images)],
           "categories": [{"id": 1, "name": "shape"}]}
    import cv2
    import numpy as np
    for im in doc["images"]:
        img = np.full((64, 64), 255, np.uint8)
        cv2.rectangle(img, (4, 4), (23, 23), 0, 2)
        cv2.imwrite(str(root / im["file_name"]), img)
    for key, edit in changes.items():
        edit(doc[key])
    path = root / "shapes_coco.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("edit,words", [
    ({"images": lambda ims: ims[0].pop("file_name")}, "image 1 has no 'file_name'"),
    ({"images": lambda ims: ims[1].pop("id")}, "image record 1 has no 'id'"),
    ({"annotations": lambda anns: anns[0].pop("bbox")}, "annotation 0 has no 'bbox'"),
    ({"annotations": lambda anns: anns[1].update(bbox="abc")}, "annotation 1 has no 'bbox'"),
    ({"annotations": lambda anns: anns[0].pop("category_id")}, "annotation 0 has no 'category_id'"),
    ({"categories": lambda cats: cats[0].pop("name")}, "category record 0 has no 'id' or 'name'"),
    ({"annotations": lambda anns: anns.clear()}, "no ground-truth boxes: nothing to score"),
    ({"images": lambda ims: ims.clear(), "annotations": lambda anns: anns.clear()}, "lists no images"),
    ({"categories": lambda cats: cats[0].update(name="dog")}, "none of its categories (dog) is shape, line or arc"),
    ({"images": lambda ims: ims[0].update(id="i1")}, "image record 0 has an 'id' that is not an integer ('i1')"),
    ({"categories": lambda cats: cats.append({"id": 1, "name": "line"})}, "category id 1 appears twice"),
    ({"annotations": lambda anns: anns[0].update(iscrowd="yes")}, "annotation 0 has an 'iscrowd' that is not 0 or 1"),
])
def test_a_coco_file_missing_what_scoring_needs_is_one_line(tmp_path, capsys, edit, words):
    coco = _real_like(tmp_path, **edit)
    line = one_error_line(capsys, exit_code(["evaluate", "--model", "baseline", "--coco", coco,
                                             "--out", tmp_path / "m.json"]))
    assert words in line
    assert not (tmp_path / "m.json").exists()


def test_predict_takes_a_coco_file_of_images_only_and_evaluate_refuses_it(tmp_path, capsys):
    coco = _real_like(tmp_path)
    doc = json.loads(coco.read_text())
    del doc["annotations"]                    # a test set's image info: images and categories, no boxes
    coco.write_text(json.dumps(doc))
    assert exit_code(["predict", "--model", "baseline", "--coco", coco, "--out", tmp_path / "p.json"]) == 0
    preds = json.loads((tmp_path / "p.json").read_text())
    assert {p["image_id"] for p in preds} == {1, 2} and {p["category_id"] for p in preds} == {1}
    capsys.readouterr()
    line = one_error_line(capsys, exit_code(["evaluate", "--model", "baseline", "--coco", coco, "--out", tmp_path / "m.json"]))
    assert "no 'annotations' list" in line
    line = one_error_line(capsys, exit_code(["predict", "--model", "baseline", "--coco", coco, "--out", tmp_path / "p.json",
                                             "--parse-out", tmp_path / "p.json"]))
    assert "--parse-out" in line and "is the --out file too" in line


def test_flags_that_would_do_nothing_are_named(tmp_path, capsys):
    coco = _real_like(tmp_path)
    assert exit_code(["evaluate", "--model", "baseline", "--coco", coco, "--out", tmp_path / "m.json",
                      "--views", "2", "--test-size", "480"]) == 0
    assert "note: --test-size, --views do nothing with --model baseline" in capsys.readouterr().err
    line = one_error_line(capsys, exit_code(["predict", "--model", "baseline", "--images", coco.parent / "images",
                                             "--images-root", tmp_path, "--out", tmp_path / "p.json"]))
    assert "--images-root goes with --coco" in line and not (tmp_path / "p.json").exists()


def test_the_baseline_scores_a_good_file_and_the_output_may_not_be_the_input(tmp_path, capsys):
    coco = _real_like(tmp_path)
    assert exit_code(["evaluate", "--model", "baseline", "--coco", coco, "--out", tmp_path / "m.json"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["AP50"] == 1.0
    capsys.readouterr()
    before = coco.read_text()
    line = one_error_line(capsys, exit_code(["evaluate", "--model", "baseline", "--coco", coco, "--out", coco]))
    assert "would overwrite an input" in line and coco.read_text() == before
    line = one_error_line(capsys, exit_code(["predict", "--model", "baseline", "--coco", coco, "--out", coco]))
    assert "would overwrite an input" in line and coco.read_text() == before
    image = coco.parent / "images" / "0.png"
    png = image.read_bytes()
    for argv in (["predict", "--model", "baseline", "--images", image.parent, "--out", image],
                 ["preview", "--data", coco.parent, "--out", image],
                 # the COCO file's images, read from its folder when no --images-root is given
                 ["predict", "--model", "baseline", "--coco", coco, "--out", image],
                 ["evaluate", "--model", "baseline", "--coco", coco, "--out", image]):
        line = one_error_line(capsys, exit_code(argv))
        assert "would overwrite an input" in line, line
    assert image.read_bytes() == png and not (tmp_path / "p.json").exists()
    # a file of one's own beside the inputs may be written again
    mine = image.parent / "preds.json"
    for _ in range(2):
        assert exit_code(["predict", "--model", "baseline", "--images", image.parent, "--out", mine]) == 0
    assert json.loads(mine.read_text())


@pytest.mark.parametrize("command, outcome", [("evaluate", "every figure will be 0"),
                                              ("predict", "no detection will be written to --out")])
def test_a_model_that_finds_none_of_the_files_categories_is_warned_of(tmp_path, capsys, command, outcome):
    coco = _real_like(tmp_path, categories=lambda cats: cats[0].update(name="line"))   # a strokes file
    assert exit_code([command, "--model", "baseline", "--coco", coco, "--out", tmp_path / "o.json"]) == 0
    err = capsys.readouterr().err
    assert f"warning: baseline detects shape only and {coco} holds line: {outcome}" in err, err
    coco = _real_like(tmp_path)                                                       # a shapes file: no warning
    assert exit_code([command, "--model", "baseline", "--coco", coco, "--out", tmp_path / "o.json"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_images_are_written_only_under_image_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("shape.txt", "shape.jpg"):      # a JPEG's artefacts would spread ink past the boxes
        line = one_error_line(capsys, exit_code(["draw", "--program", "line_normal_0.500-0.500", "--out", name]))
        assert "expected a .png file" in line
    line = one_error_line(capsys, exit_code(["preview", "--data", tmp_path, "--out", tmp_path]))
    assert "is a folder" in line
    line = one_error_line(capsys, exit_code(["preview", "--data", tmp_path, "--out", "grid.txt"]))
    assert "give an image file name" in line
    assert not any(tmp_path.iterdir())
    assert exit_code(["draw", "--program", "line_normal_0.500-0.500", "--out", "new/sub/shape.png"]) == 0
    assert (tmp_path / "new" / "sub" / "shape.png").stat().st_size > 0


@pytest.mark.parametrize("program, says", [("arc_normal_0.000_0.500-0.500", "draws no ink"),
                                           ("line_normal_\u0660.500-0.500", "bad action string"),
                                           ("line_normal_0.5\u0665-0.500", "bad action string")])
def test_draw_refuses_a_program_with_no_ink_or_foreign_digits(program, says, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(capsys, exit_code(["draw", "--program", program, "--out", "shape.png"]))
    assert says in line
    assert not any(tmp_path.iterdir())


def test_preview_draws_boxes_far_off_the_image_along_its_edge(tmp_path, capsys):
    from bongard_system1.data.generate import generate_dataset
    import cv2
    generate_dataset(tmp_path / "ds", 2, 64, seed=1, workers=1, progress=False, quiet=True)
    coco = tmp_path / "ds" / "shapes_coco.json"
    doc = json.loads(coco.read_text())
    doc["annotations"][0]["bbox"] = [-1e10, 5, 2e10, 1e10]      # a hand-edited file
    coco.write_text(json.dumps(doc))
    assert exit_code(["preview", "--data", tmp_path / "ds", "--out", tmp_path / "grid.png"]) == 0, capsys.readouterr().err
    grid = cv2.imread(str(tmp_path / "grid.png"))
    green = (grid[..., 1] > grid[..., 0] + 80) & (grid[..., 1] > grid[..., 2] + 80)
    assert green[:, :256].any()


def test_predict_on_a_coco_file_with_nothing_to_predict_is_one_line(tmp_path, capsys):
    coco = _real_like(tmp_path, images=lambda ims: ims.clear(), annotations=lambda anns: anns.clear())
    line = one_error_line(capsys, exit_code(["predict", "--model", "baseline", "--coco", coco,
                                             "--out", tmp_path / "p.json"]))
    assert "lists no images: nothing to do" in line and not (tmp_path / "p.json").exists()
    line = one_error_line(capsys, exit_code(["predict", "--model", "baseline", "--coco", coco,
                                             "--out", tmp_path / "p.json", "--parse-out", ""]))
    assert "--parse-out: expected a path, got an empty string" in line


def test_predict_reads_subfolders_and_names_each_overlay_by_its_path(tmp_path, capsys):
    coco = _real_like(tmp_path)
    images = tmp_path / "imgs"
    for sub in ("bd_a", "ff_b"):         # the real set's layout: images/<problem>/pos_0.png
        (images / sub).mkdir(parents=True)
        (images / sub / "pos_0.png").write_bytes((coco.parent / "images" / "0.png").read_bytes())
    overlays = images / "overlays"       # inside the folder read: not read back as input next time
    for _ in range(2):
        assert exit_code(["predict", "--model", "baseline", "--images", images, "--out", tmp_path / "p.json",
                          "--overlay-dir", overlays]) == 0
        preds = json.loads((tmp_path / "p.json").read_text())
        assert sorted({d["file_name"] for d in preds}) == ["bd_a/pos_0.png", "ff_b/pos_0.png"]
    assert sorted(p.name for p in overlays.iterdir()) == ["bd_a__pos_0_overlay.png", "ff_b__pos_0_overlay.png"]
    for target in (images, tmp_path):               # overlays in the folder read, or above it: nothing skipped
        assert exit_code(["predict", "--model", "baseline", "--images", images / "bd_a", "--out", tmp_path / "q.json",
                          "--overlay-dir", target]) == 0
        assert {d["file_name"] for d in json.loads((tmp_path / "q.json").read_text())} == {"pos_0.png"}


def test_overlays_are_never_written_where_they_would_be_read_as_images(tmp_path, capsys):
    coco = _real_like(tmp_path, images=lambda ims: ims[1].update(file_name="images__0_overlay.png"))
    images = coco.parent / "images"
    (images / "1.png").rename(coco.parent / "images__0_overlay.png")    # an image named as the overlay of another
    before = {p: p.read_bytes() for p in coco.parent.rglob("*.png")}
    line = one_error_line(capsys, exit_code(["predict", "--model", "baseline", "--images", images,
                                             "--out", tmp_path / "p.json", "--overlay-dir", images]))
    assert "is the --images folder" in line
    line = one_error_line(capsys, exit_code(["predict", "--model", "baseline", "--coco", coco,
                                             "--out", tmp_path / "p.json", "--overlay-dir", coco.parent]))
    assert "images__0_overlay.png would overwrite an input image" in line
    assert {p: p.read_bytes() for p in coco.parent.rglob("*.png")} == before and not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_missing_or_corrupt_image_is_found_before_any_prediction(tmp_path, capsys, command):
    coco = _real_like(tmp_path, n_images=3)
    (coco.parent / "images" / "2.png").unlink()                     # the last image is missing
    (coco.parent / "images" / "1.png").write_bytes(b"not a png")     # and one before it is corrupt
    argv = [command, "--model", "baseline", "--coco", coco, "--out", tmp_path / "out.json"]
    if command == "predict":
        argv += ["--overlay-dir", tmp_path / "ov"]
    line = one_error_line(capsys, exit_code(argv))
    assert "1.png is missing or unreadable (and 1 more)" in line, line
    assert not (tmp_path / "out.json").exists() and not any((tmp_path / "ov").glob("*.png"))
    argv[2] = tmp_path / "no_model.pt"              # the images are checked before a model is even looked for
    line = one_error_line(capsys, exit_code(argv))
    assert "1.png is missing or unreadable" in line, line


@pytest.mark.parametrize("script, argv, says", [
    ("detector_goals.py", ["--run", "r", "--data", "{tmp}/none"], "--data {tmp}/none: no such folder"),
    ("detector_goals.py", ["--run", "r", "--data", "{tmp}", "--out", "{tmp}"], "--out {tmp} is a folder"),
    ("fidelity.py", ["--real", "{tmp}"], "shapes_coco.json not found there"),
    ("generator_speed.py", ["--workers", "0"], "--workers: expected a positive integer, got 0"),
    ("train_speed.py", ["--data", "{tmp}", "--configs", "resnet99:416:8"], "expected backbone:size:batch[:fp32]"),
    ("stamp_patches.py", ["--num-images", "10"], "expected an image count from 50"),
    ("status_speed.py", ["--repeats", "0"], "expected an integer from 1 to 1000, got 0"),
    ("stroke_grouping.py", ["--real", "none"], "leaves nothing to score without --data"),
    ("stroke_grouping.py", ["--real", "{tmp}/typo"], "--real {tmp}/typo: no such folder or file"),
])
def test_benchmark_scripts_give_one_error_line_before_any_work(tmp_path, script, argv, says):
    import subprocess
    import sys
    from .conftest import REPO
    argv = [a.format(tmp=tmp_path) for a in argv]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *argv], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and not proc.stdout, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says.format(tmp=tmp_path) in lines[0], lines
    assert [p.name for p in tmp_path.iterdir()] == []           # nothing written


@pytest.mark.parametrize("content, says", [
    ("{not json", "COCO file is not valid JSON"),
    (json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 512, "height": 512}],
                 "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9]}],
                 "categories": [{"id": 1, "name": "shape"}]}), "its annotations carry no action programs"),
])
def test_the_fidelity_benchmark_refuses_a_coco_file_it_cannot_re_render(tmp_path, content, says):
    import subprocess
    import sys
    from .conftest import REPO
    given = tmp_path / "in" / "mine.json"
    given.parent.mkdir()
    given.write_text(content)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fidelity.py"), "--real", str(given)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines


def test_benchmark_help_answers_without_torch():
    """``--help`` and a bad flag answer before torch is imported (it takes seconds to load here)."""
    import subprocess
    import sys
    from .conftest import REPO
    scripts = sorted(p for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_"))
    assert len(scripts) >= 7
    for script in scripts:
        for argv, code in ((["--help"], 0), (["--no-such-flag"], 2)):
            proc = subprocess.run([sys.executable, "-X", "importtime", str(script), *argv], capture_output=True,
                                  text=True, timeout=60, cwd=REPO, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
            imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
            assert proc.returncode == code, (script.name, argv, proc.stderr[-500:])
            assert not imported & {"torch", "torchvision"}, (script.name, argv)


def test_benchmarks_refuse_an_out_over_their_input_and_a_batch_larger_than_the_data(tmp_path):
    import subprocess
    import sys
    from bongard_system1.data.generate import generate_dataset
    from .conftest import REPO
    generate_dataset(tmp_path / "ds", 4, 32, seed=0, workers=1, progress=False, quiet=True)
    coco = (tmp_path / "ds" / "shapes_coco.json").read_bytes()
    for script, argv, says in (
            ("stroke_grouping.py", ["--real", "none", "--data", "ds", "--out", "ds/shapes_coco.json"], "would overwrite an input"),
            ("train_speed.py", ["--data", "ds", "--configs", "resnet18:64:2,resnet18:64:8"],
             "holds 4 training images: fewer than a batch of resnet18:64:8")):
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *argv], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], lines
    assert (tmp_path / "ds" / "shapes_coco.json").read_bytes() == coco


_LIMITED = ("import os, resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))\n"
            "os.execv(sys.argv[2], sys.argv[2:])\n")


def _with_file_size_limit(argv, limit, cwd):
    """Run ``argv`` where no file may grow past ``limit`` bytes (RLIMIT_FSIZE, SIGXFSZ ignored, both
    kept across exec): each write past it fails with EFBIG, as writes to a full disk fail with
    ENOSPC, without needing one."""
    import subprocess
    import sys
    pytest.importorskip("resource")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-c", _LIMITED, str(limit), *map(str, argv)], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)


def test_an_image_that_cannot_be_written_whole_is_one_error_line_and_no_broken_file(tmp_path):
    """cv2.imwrite said yes to a write a full disk cut short (an empty or truncated PNG, exit 0)."""
    import sys

    import cv2
    program = "line_zigzag_0.500-0.500,arc_circle_0.500_0.625-0.750"
    draw = [sys.executable, "-m", "bongard_system1", "draw", "--program", program, "--out", tmp_path / "shape.png"]
    proc = _with_file_size_limit(draw, 2000, tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == f"error: File too large ({tmp_path / 'shape.png'})", lines
    assert list(tmp_path.iterdir()) == []                       # no empty PNG, no temporary file
    images = tmp_path / "images"
    proc = _with_file_size_limit(draw[:-1] + [images / "0.png"], 10**7, tmp_path)   # with room, it draws
    assert proc.returncode == 0 and cv2.imread(str(images / "0.png")) is not None, proc.stderr
    for k in (1, 2):
        (images / f"{k}.png").write_bytes((images / "0.png").read_bytes())
    predict = [sys.executable, "-m", "bongard_system1", "predict", "--model", "baseline", "--images", images,
               "--out", tmp_path / "preds.json", "--overlay-dir", tmp_path / "ov"]
    proc = _with_file_size_limit(predict, 2000, tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: File too large ("), proc.stderr
    assert not (tmp_path / "ov").exists() or list((tmp_path / "ov").iterdir()) == []   # no broken overlay
    proc = _with_file_size_limit(predict, 10**7, tmp_path)    # with room, the same command writes them all
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == [f"{k}_overlay.png" for k in range(3)]


def test_a_checkpoint_that_cannot_be_written_is_one_error_line_and_the_old_one_kept(tmp_path):
    """torch's zip writer turned the failed write into a RuntimeError: a traceback and exit status 1."""
    import sys
    code = ("import sys, torch\n"
            "from bongard_system1.errors import run_guarded\n"
            "from bongard_system1.train import _atomic_torch_save\n"
            "sys.exit(run_guarded(_atomic_torch_save, {'w': torch.ones(200_000)}, sys.argv[1], sys.argv[2]))\n")
    last = tmp_path / "last.pt"
    last.write_bytes(b"the previous checkpoint")
    proc = _with_file_size_limit([sys.executable, "-c", code, last, tmp_path / "last.prev.pt"], 100_000, tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines == [f"error: File too large ({last})"], proc.stderr
    assert last.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]       # no temporary file left
    import torch
    from bongard_system1.train import _atomic_torch_save
    _atomic_torch_save({"w": torch.ones(200_000)}, str(last), str(tmp_path / "last.prev.pt"))   # with room
    assert (tmp_path / "last.prev.pt").read_bytes() == b"the previous checkpoint"
    assert torch.load(last, weights_only=True)["w"].shape == (200_000,)


def test_a_dataset_whose_coco_files_cannot_be_written_says_to_rerun_and_the_rerun_finishes(tmp_path):
    import sys
    gen = [sys.executable, "-m", "bongard_system1", "generate", "--out", tmp_path / "d", "--num-images", 64,
           "--image-size", 64, "--workers", 1, "--no-progress"]
    proc = _with_file_size_limit(gen, 80_000, tmp_path)     # images and parts (~40 kB) fit; COCO files (~150 kB) do not
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: writing the dataset failed: File too large (") and \
        "_coco.json)" in lines[0] and lines[0].endswith("run the same command again to resume"), lines
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["status"] == "in_progress"
    proc = _with_file_size_limit(gen, 10**8, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["status"] == "complete"
    assert len(json.loads((tmp_path / "d" / "strokes_coco.json").read_text())["images"]) == 64
    proc = _with_file_size_limit(gen[:5] + [tmp_path / "e"] + gen[6:], 200, tmp_path)   # no image fits
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and \
        lines[0].startswith(f"error: writing the dataset failed: File too large ({tmp_path / 'e' / 'images'}"), lines


def test_ctrl_c_while_a_checkpoint_is_written_is_an_interrupt_and_leaves_the_old_one(tmp_path, monkeypatch):
    """torch's zip writer turns the KeyboardInterrupt from a write into a RuntimeError."""
    import builtins

    import torch
    from bongard_system1 import train

    class Interrupted:
        def __init__(self, path, mode):
            self.f = builtins.open(path, mode)

        def write(self, data):
            if self.f.tell() > 1000:
                raise KeyboardInterrupt
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    last = tmp_path / "last.pt"
    last.write_bytes(b"the previous checkpoint")
    monkeypatch.setattr(train, "open", Interrupted, raising=False)
    with pytest.raises(KeyboardInterrupt):
        train._atomic_torch_save({"w": torch.ones(100_000)}, str(last))
    assert last.read_bytes() == b"the previous checkpoint" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
