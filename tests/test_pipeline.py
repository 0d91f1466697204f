"""Fast tests of the checkpointed pipeline: records, hashing, decisions, lock, reset, CLI, status.

The generator, trainer and evaluator are replaced by small fakes (modules in ``sys.modules``) so
these tests take seconds and never import torch; ``test_pipeline_e2e.py`` drives the real ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from bongard_system1.errors import DatasetDamaged, System1Error
from bongard_system1.pipeline import cli, profiles
from bongard_system1.pipeline.lock import PipelineLock
from bongard_system1.pipeline.records import CheckpointManager, config_diff, config_hash
from bongard_system1.pipeline.records import RECORD_FILES
from bongard_system1.pipeline.status import pipeline_status, reset_stage

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


# ---------------------------------------------------------------------------------------------
# fakes


class Killed(BaseException):
    """Stands in for a SIGKILL in the middle of a stage."""


@pytest.fixture
def fakes(monkeypatch):
    """Fake generate_dataset / train_detector / load_checkpoint_model / evaluate_model."""
    state = {"generate": [], "train": [], "evaluate": [], "repaired": [], "fail": set(), "metrics": {"AP": 0.9, "AP50": 0.97}}

    def generate_dataset(out_dir, num_images, image_size, seed=0, workers=None, val_fraction=0.1, max_shapes=3,
                         progress=True):
        state["generate"].append(str(out_dir))
        out = Path(out_dir)
        (out / "images").mkdir(parents=True, exist_ok=True)
        if "generate" in state["fail"]:
            raise System1Error("generator exploded")
        nval = round(num_images * val_fraction)
        images = [{"id": i + 1, "file_name": f"images/{i:06d}.png", "width": image_size, "height": image_size,
                   "split": "val" if i < nval else "train"} for i in range(num_images)]
        for im in images:
            (out / im["file_name"]).write_bytes(b"png")
        anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [0, 0, 2, 2]} for i in range(num_images)]
        for name in ("shapes_coco.json", "strokes_coco.json"):
            (out / name).write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))
        manifest = {"params": {"num_images": num_images, "image_size": image_size, "seed": seed},
                    "status": "complete", "num_images": num_images, "num_train": num_images - nval, "num_val": nval}
        (out / "dataset.json").write_text(json.dumps(manifest))
        return manifest

    def repair_dataset(out, workers=None):
        """As the real one: missing images drawn again (a fake image is its bytes b"png"), a damaged
        one that cannot be drawn again the same is an error."""
        out = Path(out)
        names = [im["file_name"] for im in json.loads((out / "shapes_coco.json").read_text())["images"]]
        if "repair" in state["fail"]:
            raise DatasetDamaged(f"{out / names[0]} is damaged, and drawing it again does not give the image "
                                 "recorded", "delete the folder and generate it again")
        if "repair-write" in state["fail"]:
            raise System1Error(f"cannot repair {out / names[0]}: No space left on device")
        redrawn = 0
        for name in names:
            if not (out / name).is_file() or (out / name).read_bytes() != b"png":
                (out / name).write_bytes(b"png")
                redrawn += 1
        state["repaired"].append(redrawn)
        return {"images": len(names), "redrawn": redrawn}

    def train_detector(data_dir, out_dir, *, backbone="resnet18", categories="all", epochs=12, batch_size=8,
                       image_size=320, device="auto", workers=None, seed=0, lr=None, time_budget=None,
                       restart=False, progress=True, stamp_images=0, early_scale=0.75, rescore_images=0,
                       start_over_unresumable=False):
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        resumed = (out / "last.pt").exists()
        state["train"].append({"out": str(out), "resumed": resumed, "epochs": epochs, "data": str(data_dir),
                               "stamp_images": stamp_images, "early_scale": early_scale,
                               "rescore_images": rescore_images})
        (out / "last.pt").write_bytes(b"LAST")
        if "train" in state["fail"]:
            raise Killed()
        (out / "best.pt").write_bytes(b"CKPT" + f"{epochs}-{backbone}".encode())
        history = [{"epoch": e + 1, "loss": 1.0 / (e + 1), "val_AP": 0.1 * e} for e in range(epochs)]
        return {"best_checkpoint": str(out / "best.pt"), "last_checkpoint": str(out / "last.pt"),
                "history": history, "best_metric": 0.5, "val_metrics": {"AP": 0.5, "AP50": 0.8},
                "device": "cpu", "seconds": 1.0}

    def load_checkpoint_model(path):
        if not Path(path).read_bytes().startswith(b"CKPT"):
            raise System1Error(f"{path} is not a readable checkpoint")
        return object(), {}

    def evaluate_model(model_path, coco_path, images_root=None, device="auto", progress=True, shape_mode="hybrid",
                       detector=None, test_size=None, views=None, amp=True):
        state["evaluate"].append(str(coco_path))
        assert Path(coco_path).is_file() and Path(images_root).is_dir()
        return dict(state["metrics"], AP75=0.5, per_category={})

    class System1:
        @classmethod
        def load(cls, path, device="auto", shape_mode="hybrid", test_size=None, views=None, amp=True):
            return cls()

    mods = {"bongard_system1.data.generate": {"generate_dataset": generate_dataset, "repair_dataset": repair_dataset},
            "bongard_system1.train": {"train_detector": train_detector, "load_checkpoint_model": load_checkpoint_model,
                                      "resolve_device": lambda device="auto": "cpu" if device == "auto" else device},
            "bongard_system1.evaluate": {"evaluate_model": evaluate_model},
            "bongard_system1.predict": {"System1": System1}}
    for name, attrs in mods.items():
        mod = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(mod, k, v)
        monkeypatch.setitem(sys.modules, name, mod)
    return state


def run(wd, *argv, real="none"):
    """The original command, in-process: returns its exit status."""
    args = ["--workdir", str(wd), "--no-progress", "--real-data", real]
    if "--profile" not in argv and "--professional" not in argv:
        args += ["--profile", "smoke"]
    try:
        return cli.main(list(argv) + args)
    except SystemExit as exc:
        return exc.code


def ran_stages(out: str) -> list[str]:
    return [s for s in ("data", "training", "evaluation") if f"[{s}] running" in out]


@pytest.fixture
def real_set(tmp_path):
    """A tiny real set: shapes and strokes COCO files with a few images."""
    root = tmp_path / "real"
    (root / "images").mkdir(parents=True)
    images = [{"id": i + 1, "file_name": f"images/{i}.png", "width": 64, "height": 64} for i in range(12)]
    for im in images:
        (root / im["file_name"]).write_bytes(b"\x89PNG\r\n\x1a\n (the fakes read no pixel)")
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [1, 1, 5, 5]} for i in range(12)]
    for name, category in (("shapes_coco.json", "shape"), ("strokes_coco.json", "line")):
        (root / name).write_text(json.dumps({"images": images, "annotations": anns,
                                             "categories": [{"id": 1, "name": category}]}))
    return root / "shapes_coco.json"


# ---------------------------------------------------------------------------------------------
# pure pieces


def test_config_hash_is_stable_and_diff_is_in_words():
    a = {"epochs": 25, "image_size": 416}
    assert config_hash(a) == config_hash({"image_size": 416, "epochs": 25})
    assert config_hash(a) != config_hash({"epochs": 50, "image_size": 416})
    assert config_diff(a, {"epochs": 50, "image_size": 416}) == "epochs 25 -> 50"


def test_profiles_and_overrides():
    smoke = profiles.resolve_settings("smoke")
    assert (smoke["dataset_size"], smoke["image_size"], smoke["epochs"], smoke["batch_size"]) == (24, 128, 2, 4)
    quick = profiles.resolve_settings("quick", {"epochs": 3})
    assert quick["epochs"] == 3 and quick["time_budget"] is None
    pro = profiles.resolve_settings("professional")
    assert (pro["dataset_size"], pro["image_size"], pro["backbone"], pro["epochs"], pro["batch_size"]) == \
        (10000, 416, "resnet50", 50, 32)
    std = profiles.resolve_settings("standard")
    assert (std["backbone"], std["image_size"], std["epochs"], std["batch_size"]) == ("resnet18", 416, 25, 8)
    # worker counts and devices never enter a stage's config
    assert "workers" not in profiles.train_config(pro) and "device" not in profiles.train_config(pro)
    with pytest.raises(System1Error):
        profiles.resolve_settings("huge")
    with pytest.raises(System1Error):
        profiles.resolve_settings("smoke", {"epochs": 0})
    # progressive resizing: in the quick profile's training config; absent where off, so the configs of
    # profiles without it hash as they did before it existed
    assert profiles.train_config(quick)["early_scale"] == 0.75
    assert "early_scale" not in profiles.train_config(pro)
    assert profiles.train_config(profiles.resolve_settings("quick", {"epochs": 3, "early_scale": 1.0})) == \
        {k: v for k, v in profiles.train_config(quick).items() if k != "early_scale"}
    with pytest.raises(System1Error, match="early_scale must be in"):
        profiles.resolve_settings("quick", {"early_scale": 1.5})


# ---------------------------------------------------------------------------------------------
# the run, with fakes


def test_first_run_does_everything_second_skips(fakes, tmp_path, capsys, real_set):
    wd = tmp_path / "wd"
    assert run(wd, real=str(real_set)) == 0
    out = capsys.readouterr().out
    assert ran_stages(out) == ["data", "training", "evaluation"]
    for name in ("data_generation.json", "training.json", "evaluation.json"):
        rec = json.loads((wd / "checkpoints" / name).read_text())
        assert rec["status"] == "complete" and rec["config_hash"] and rec["versions"]["python"]
    tr = json.loads((wd / "checkpoints" / "training.json").read_text())
    data = json.loads((wd / "checkpoints" / "data_generation.json").read_text())
    assert tr["upstream_hash"] == data["dataset_hash"]
    assert tr["outputs"]["best_checkpoint"]["path"] == "runs/smoke/best.pt"
    ev = json.loads((wd / "checkpoints" / "evaluation.json").read_text())
    assert ev["upstream_hash"] == tr["outputs"]["best_checkpoint"]["sha256"]
    assert set(ev["metrics"]["sets"]) == {"synthetic_shapes", "synthetic_strokes", "real_shapes", "real_strokes"}
    assert ev["validation"]["real_shapes"]["images"] == 8          # the smoke profile caps the real set
    results = json.loads((wd / "results" / "system1_training_results.json").read_text())
    assert results["training"]["history"][0]["epoch"] == 1
    assert [t["met"] for t in results["targets"]] == [True, True, True]
    assert (wd / "logs" / "smoke_training.log").read_text().count("[training] running") == 1

    assert run(wd, real=str(real_set)) == 0
    out = capsys.readouterr().out
    assert ran_stages(out) == [] and "every stage was up to date" in out
    assert len(fakes["generate"]) == 1 and len(fakes["train"]) == 1


def test_epochs_change_retrains_and_reevaluates_but_keeps_data(fakes, tmp_path, capsys):
    wd = tmp_path / "wd"
    run(wd)
    capsys.readouterr()
    assert run(wd, "--epochs", "3") == 0
    out = capsys.readouterr().out
    assert ran_stages(out) == ["training", "evaluation"]
    assert "[training] running: config changed: epochs 2 -> 3" in out
    assert len(fakes["generate"]) == 1
    # trained fresh in a staging folder, swapped in when complete
    assert fakes["train"][-1]["out"].endswith("smoke.new") and not fakes["train"][-1]["resumed"]
    assert (wd / "runs" / "smoke" / "best.pt").read_bytes() == b"CKPT3-resnet18"
    assert not (wd / "runs" / "smoke.new").exists()


def test_the_early_scale_flag_reaches_the_trainer_and_retrains(fakes, tmp_path, capsys):
    wd = tmp_path / "wd"
    run(wd)
    assert fakes["train"][-1]["early_scale"] == 0.75          # the smoke profile's
    capsys.readouterr()
    assert run(wd, "--early-scale", "1") == 0
    out = capsys.readouterr().out
    assert ran_stages(out) == ["training", "evaluation"] and "early_scale 0.75 -> 1.0" in out
    assert fakes["train"][-1]["early_scale"] == 1.0


def test_a_changed_stamp_vote_or_rescorer_is_trained_in_place_without_a_new_detector(fakes, tmp_path, capsys):
    wd = tmp_path / "wd"
    run(wd)
    capsys.readouterr()
    assert run(wd, "--stamp_images", "0") == 0
    out = capsys.readouterr().out
    assert "[training] running: config changed: stamp_images 60 -> 0" in out
    assert "only its stamp vote and rescorer are trained" in out and ran_stages(out) == ["training", "evaluation"]
    # the finished run folder itself, not a fresh staging folder
    assert fakes["train"][-1]["out"].endswith("runs/smoke") and fakes["train"][-1]["stamp_images"] == 0
    assert not (wd / "runs" / "smoke.new").exists()
    # so does the rescorer
    assert run(wd, "--stamp_images", "0", "--rescore_images", "0") == 0
    out = capsys.readouterr().out
    assert "config changed: rescore_images 6 -> 0, rescorer_version 3 -> none" in out
    assert "only its stamp vote and rescorer are trained" in out and fakes["train"][-1]["rescore_images"] == 0
    assert fakes["train"][-1]["out"].endswith("runs/smoke")
    # a vote from too few images is refused before any stage runs
    assert run(wd, "--stamp_images", "10") == 2
    assert "at least 50" in capsys.readouterr().err


def test_deleted_or_corrupt_model_retrains(fakes, tmp_path, capsys):
    wd = tmp_path / "wd"
    run(wd)
    (wd / "runs" / "smoke" / "best.pt").unlink()
    capsys.readouterr()
    run(wd)
    out = capsys.readouterr().out
    assert "[training] running: output missing" in out and ran_stages(out) == ["training", "evaluation"]
    best = wd / "runs" / "smoke" / "best.pt"
    best.write_bytes(b"XXXX" + best.read_bytes()[4:])          # same size, other bytes
    run(wd)
    out = capsys.readouterr().out
    assert "[training] running: checkpoint corrupt" in out


def test_garbage_record_is_reported_and_recovered(fakes, tmp_path, capsys):
    wd = tmp_path / "wd"
    run(wd)
    (wd / "checkpoints" / "training.json").write_text("{not json")
    capsys.readouterr()
    assert run(wd) == 0
    captured = capsys.readouterr()
    assert "training.json is not valid JSON" in captured.err
    assert "[training] running: no record" in captured.out
    assert json.loads((wd / "checkpoints" / "training.json").read_text())["status"] == "complete"
    lines, ok = pipeline_status(wd)
    assert ok


def test_missing_or_damaged_images_are_drawn_again_in_place(fakes, tmp_path, capsys):
    """A dataset's images, deleted or damaged after its stage finished, are drawn again in place by
    the next run (the same bytes: nothing downstream reruns); --status says so of missing ones."""
    wd = tmp_path / "wd"
    run(wd)
    images = wd / "processed_data" / "smoke_synthetic" / "images"
    (images / "000003.png").unlink()
    lines, ok = pipeline_status(wd)
    assert ok and any("up to date (1 of 24 images missing: the next run draws them again, or remakes the stage if "
                      "it cannot)" in line for line in lines)
    (images / "mine.png").write_bytes(b"png")           # a PNG of one's own is not one of the dataset's
    assert pipeline_status(wd)[1]
    capsys.readouterr()
    run(wd)
    out = capsys.readouterr().out
    assert ran_stages(out) == [] and "1 missing or damaged image(s) drawn again" in out
    assert (images / "000003.png").read_bytes() == b"png" and fakes["repaired"] == [1]
    (images / "000005.png").write_bytes(b"xx")           # damaged: only a run, which reads them all, sees it
    assert pipeline_status(wd)[1]
    run(wd)
    out = capsys.readouterr().out
    assert ran_stages(out) == [] and "1 missing or damaged image(s) drawn again" in out
    assert (images / "000005.png").read_bytes() == b"png" and len(fakes["generate"]) == 1


def test_unrepairable_images_regenerate_and_cascade(fakes, tmp_path, capsys):
    wd = tmp_path / "wd"
    run(wd)
    fakes["fail"].add("repair")
    capsys.readouterr()
    run(wd)
    out = capsys.readouterr().out
    assert "[data] running: output corrupt: " in out and ran_stages(out) == ["data", "training", "evaluation"]
    assert "does not give the image recorded\n" in out and "delete the folder" not in out   # the pipeline remakes it
    assert "[training] running: upstream changed" in out
    fakes["fail"] = {"repair-write"}                  # a repair that cannot be written stops the run: nothing reruns
    assert run(wd) == 2
    captured = capsys.readouterr()
    assert "cannot repair" in captured.err and "No space left on device" in captured.err
    assert ran_stages(captured.out) == [] and len(fakes["generate"]) == 2
    fakes["fail"] = set()
    (wd / "processed_data" / "smoke_synthetic" / "images" / "000099.png").write_bytes(b"png")  # one image too many
    lines, ok = pipeline_status(wd)
    assert not ok and any("output changed: 25 images on disk, 24 recorded" in line for line in lines)


def test_an_edited_annotation_file_regenerates_the_data_and_cascades(fakes, tmp_path, capsys):
    wd = tmp_path / "wd"
    run(wd)
    path = wd / "processed_data" / "smoke_synthetic" / "shapes_coco.json"
    doc = json.loads(path.read_text())
    doc["annotations"][0]["bbox"][0] += 1          # one box moved: the same size and counts
    path.write_text(json.dumps(doc))
    lines, ok = pipeline_status(wd)
    assert not ok and any("would run again: output changed" in line and "shapes_coco.json" in line for line in lines)
    capsys.readouterr()
    run(wd)
    out = capsys.readouterr().out
    assert "[data] running: output changed" in out and ran_stages(out) == ["data", "training", "evaluation"]
    assert json.loads(path.read_text())["annotations"][0]["bbox"][0] == doc["annotations"][0]["bbox"][0] - 1
    capsys.readouterr()
    run(wd)
    assert ran_stages(capsys.readouterr().out) == []


def test_force_keeps_old_outputs_until_new_ones_are_complete(fakes, tmp_path, capsys):
    wd = tmp_path / "wd"
    run(wd)
    shapes = wd / "processed_data" / "smoke_synthetic" / "shapes_coco.json"
    before = shapes.read_text()
    fakes["fail"].add("generate")
    assert run(wd, "--force-data") == 2
    assert "generator exploded" in capsys.readouterr().err
    assert shapes.read_text() == before
    assert (wd / "processed_data" / "smoke_synthetic.new").is_dir()
    rec = json.loads((wd / "checkpoints" / "data_generation.json").read_text())
    assert rec["status"] == "failed" and rec["staging_dir"] == "processed_data/smoke_synthetic.new"
    fakes["fail"].clear()
    run(wd)
    out = capsys.readouterr().out
    assert "[data] running: previous run failed" in out
    assert fakes["generate"][-1].endswith("smoke_synthetic.new")     # resumed in the staging folder
    assert not (wd / "processed_data" / "smoke_synthetic.new").exists()
    # --force-eval redoes evaluation only; --force-train training and evaluation
    run(wd, "--force-eval")
    assert ran_stages(capsys.readouterr().out) == ["evaluation"]
    run(wd, "--force-train")
    assert ran_stages(capsys.readouterr().out) == ["training", "evaluation"]
    run(wd, "--force-all")
    assert ran_stages(capsys.readouterr().out) == ["data", "training", "evaluation"]


def test_interrupted_training_resumes_in_the_same_folder(fakes, tmp_path, capsys, monkeypatch):
    wd = tmp_path / "wd"
    fakes["fail"].add("train")
    # a SIGKILL leaves the record "running": make fail() a no-op to simulate it
    monkeypatch.setattr(CheckpointManager, "fail", lambda self, *a, **k: None)
    with pytest.raises(Killed):
        cli.main(["--workdir", str(wd), "--profile", "smoke", "--real-data", "none", "--no-progress"])
    assert json.loads((wd / "checkpoints" / "training.json").read_text())["status"] == "running"
    lines, _ = pipeline_status(wd)
    assert any("previous run interrupted" in line for line in lines)
    fakes["fail"].clear()
    capsys.readouterr()
    assert run(wd) == 0
    out = capsys.readouterr().out
    assert "[training] running: previous run interrupted" in out and "[training] resuming from runs/smoke/last.pt" in out
    assert fakes["train"][-1]["resumed"] and fakes["train"][-1]["out"].endswith("runs/smoke")
    assert ran_stages(out) == ["training", "evaluation"]


def test_status_follows_a_retrain_in_its_staging_folder(fakes, tmp_path, capsys, monkeypatch):
    wd = tmp_path / "wd"
    run(wd)                                         # a finished 2-epoch run in runs/smoke
    fake = sys.modules["bongard_system1.train"]
    plain = fake.train_detector

    def killed_after_one_epoch(data_dir, out_dir, **kw):
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"planned_epochs": kw["epochs"], "epochs": kw["epochs"],
                                                     "swa_fraction": 0.25, "image_size": 128, "early_scale": 1.0}))
        (out / "metrics.csv").write_text("epoch,image_size,loss,val_AP,seconds\n1,128,0.9,0.123,42.0\n")
        raise Killed()

    monkeypatch.setattr(fake, "train_detector", killed_after_one_epoch)
    monkeypatch.setattr(CheckpointManager, "fail", lambda self, *a, **k: None)      # as after a SIGKILL
    with pytest.raises(Killed):
        cli.main(["--workdir", str(wd), "--profile", "smoke", "--real-data", "none", "--no-progress", "--epochs", "5"])
    rec = json.loads((wd / "checkpoints" / "training.json").read_text())
    assert rec["status"] == "running" and rec["staging_dir"] == "runs/smoke.new"
    lines, _ = pipeline_status(wd, profiles.resolve_settings("smoke", {"epochs": 5}), None, explicit=True)
    text = "\n".join(lines)
    # the run being trained (epoch 1 of 5, in runs/smoke.new), not the finished one it will replace
    assert "1/5 epochs done, the last in 42 s (val AP 0.123)" in text, text
    monkeypatch.setattr(fake, "train_detector", plain)
    # back to the old settings: the finished run it was to replace is untouched, so nothing is redone
    best = (wd / "runs" / "smoke" / "best.pt").read_bytes()
    lines, ok = pipeline_status(wd, profiles.resolve_settings("smoke"), None, explicit=True)
    assert ok and "   up to date (a run with other settings that was to replace it did not finish)" in lines, lines
    capsys.readouterr()
    assert run(wd) == 0
    out = capsys.readouterr().out
    assert ran_stages(out) == [] and "did not finish" in out
    assert (wd / "runs" / "smoke" / "best.pt").read_bytes() == best and (wd / "runs" / "smoke.new").is_dir()
    # and with the new settings again, the stopped run goes on in its staging folder and then replaces it
    assert run(wd, "--epochs", "5") == 0
    out = capsys.readouterr().out
    assert "[training] running: previous run interrupted" in out and fakes["train"][-1]["out"].endswith("smoke.new")
    rec = json.loads((wd / "checkpoints" / "training.json").read_text())
    assert rec["status"] == "complete" and rec["config"]["epochs"] == 5 and "replaces" not in rec
    assert not (wd / "runs" / "smoke.new").exists()
    run(wd)
    assert ran_stages(capsys.readouterr().out) == ["training", "evaluation"]     # the 2-epoch run is gone now


@pytest.mark.parametrize("record, key, named", [
    ("data_generation.json", "dir", "../victim"), ("data_generation.json", "dir", ".."),
    ("data_generation.json", "dir", "processed_data/../.."), ("training.json", "run_dir", "runs/../.."),
    ("training.json", "run_dir", "."), ("training.json", "run_dir", "VICTIM_ABSOLUTE")])
def test_reset_never_deletes_outside_the_work_directory(fakes, tmp_path, capsys, record, key, named):
    wd = tmp_path / "wd"
    run(wd)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    path = wd / "checkpoints" / record
    rec = json.loads(path.read_text())
    rec["outputs"][key] = named.replace("VICTIM_ABSOLUTE", str(victim))     # a hand-edited record
    path.write_text(json.dumps(rec))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    capsys.readouterr()
    assert run(wd, "--reset", "data") == 2
    err = capsys.readouterr().err
    assert ("outside the work directory" in err or "the work directory" in err and "itself" in err) and err.count("\n") == 1
    assert (victim / "keep.txt").read_text() == "mine"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_reset_all_deletes_only_what_the_pipeline_wrote(fakes, tmp_path, capsys):
    # a folder that was never a work directory: its results/, runs/ (TensorBoard's default) and
    # logs/ are the user's own
    mine = {"results/table.csv": "a", "runs/tb/events.out": "b", "logs/notes.log": "c", "processed_data/x.npz": "d",
            "checkpoints/model.ckpt": "e"}
    for name, text in mine.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert reset_stage(tmp_path, "all") == []
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(mine)
    assert not list((tmp_path / "checkpoints").glob(".pipeline.lock*"))
    # a real work directory beside them: the pipeline's files go, the user's stay
    run(tmp_path)
    capsys.readouterr()
    assert run(tmp_path, "--reset", "all") == 0
    out = capsys.readouterr().out
    assert "results/system1_training_results.json" in out and "runs/smoke/" in out and "logs/smoke_training.log" in out
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(mine)
    for name, text in mine.items():
        assert (tmp_path / name).read_text() == text


def test_reset_and_status_refuse_flags_they_would_ignore(fakes, tmp_path, capsys):
    wd = tmp_path / "wd"
    run(wd)
    capsys.readouterr()
    assert run(wd, "--reset", "data", "--epochs", "3") == 2
    assert run(wd, "--reset", "training", "--force-all") == 2
    assert run(wd, "--status", "--force-train") == 2
    err = capsys.readouterr().err
    assert "--reset runs nothing, so it takes no --epochs" in err and "no --force-all" in err and "no --force-train" in err
    assert err.count("\n") == 3
    assert (wd / "checkpoints" / "data_generation.json").exists() and (wd / "runs" / "smoke").is_dir()


@pytest.mark.parametrize("damage", [lambda r: r.update(outputs=[]), lambda r: r["outputs"].update(shapes_coco="x"),
                                    lambda r: r.update(validation="none"), lambda r: r["outputs"].pop("dir")])
def test_a_record_with_a_damaged_layout_counts_as_no_record(fakes, tmp_path, capsys, damage):
    wd = tmp_path / "wd"
    run(wd)
    path = wd / "checkpoints" / "data_generation.json"
    rec = json.loads(path.read_text())
    damage(rec)
    path.write_text(json.dumps(rec))
    lines, ok = pipeline_status(wd)
    assert not ok and any("no record" in line for line in lines)
    capsys.readouterr()
    assert run(wd) == 0
    out = capsys.readouterr()
    assert "is damaged" in out.err and "[data] running: no record" in out.out


@pytest.mark.parametrize("stage, damage", [
    ("training", lambda r: r.update(started=5)), ("training", lambda r: r.update(run_settings=["a"])),
    ("training", lambda r: r["run_settings"].update(overrides=[1])), ("training", lambda r: r.pop("finished")),
    ("training", lambda r: r["metrics"].update(history=5)), ("training", lambda r: r["metrics"].update(history=[3])),
    ("training", lambda r: r["config"].pop("backbone")),
    ("evaluation", lambda r: r["outputs"].update(model="runs/smoke/best.pt")),
    ("evaluation", lambda r: r["metrics"].update(summary=[])), ("evaluation", lambda r: r.update(validation={"x": 1})),
    ("data", lambda r: r["validation"].update(num_images="24"))])
def test_a_record_with_fields_of_the_wrong_type_counts_as_no_record_in_status_and_run(fakes, tmp_path, capsys,
                                                                                      stage, damage):
    wd = tmp_path / "wd"
    run(wd)
    path = wd / "checkpoints" / RECORD_FILES[stage]
    rec = json.loads(path.read_text())
    damage(rec)
    path.write_text(json.dumps(rec))
    lines, ok = pipeline_status(wd)
    assert not ok and any("is damaged" in line for line in lines), lines
    capsys.readouterr()
    assert run(wd) == 0
    out = capsys.readouterr()
    assert "is damaged" in out.err and f"[{stage}] running: no record" in out.out


def test_status_falls_back_to_the_default_profile_when_the_recorded_settings_are_unusable(fakes, tmp_path):
    wd = tmp_path / "wd"
    run(wd)
    for name in RECORD_FILES.values():
        path = wd / "checkpoints" / name
        rec = json.loads(path.read_text())
        rec["run_settings"]["profile"] = "nosuch"
        path.write_text(json.dumps(rec))
    lines, ok = pipeline_status(wd)
    assert "unknown profile 'nosuch'" in lines[1] and lines[2] == "compared with the default profile (quick)"
    assert not ok


def test_status_names_the_real_set_of_the_last_run_when_it_is_not_the_default(fakes, tmp_path, monkeypatch):
    from bongard_system1.pipeline import stages
    default = tmp_path / "real" / "shapes_coco.json"          # a default real set that exists
    default.parent.mkdir()
    default.write_text("{}")
    monkeypatch.setattr(stages, "DEFAULT_REAL_DATA", str(default))
    wd = tmp_path / "wd"
    run(wd, "--epochs", "3")                      # with --real-data none
    lines, _ = pipeline_status(wd)
    assert "compared with the last run's settings: --profile smoke --epochs 3 --real-data none" in lines, lines


def test_reset_cascades_lists_and_all_leaves_a_clean_directory(fakes, tmp_path, capsys):
    wd = tmp_path / "wd"
    run(wd)
    capsys.readouterr()
    assert run(wd, "--reset", "training") == 0
    out = capsys.readouterr().out
    assert "checkpoints/training.json" in out and "checkpoints/evaluation.json" in out and "runs/" in out
    assert (wd / "checkpoints" / "data_generation.json").exists() and not (wd / "runs").exists()
    run(wd)
    assert ran_stages(capsys.readouterr().out) == ["training", "evaluation"]
    assert run(wd, "--reset", "all") == 0
    out = capsys.readouterr().out
    assert "processed_data/smoke_synthetic/" in out and "checkpoints/data_generation.json" in out
    assert list(wd.iterdir()) == []
    assert run(wd, "--reset", "all") == 0
    assert "nothing to delete" in capsys.readouterr().out


def test_second_concurrent_run_is_refused_naming_the_holder(fakes, tmp_path, capsys):
    wd = tmp_path / "wd"
    with PipelineLock(wd):
        assert run(wd) == 2
        err = capsys.readouterr().err
        assert f"pid {os.getpid()}" in err and err.count("\n") == 1
        assert run(wd, "--reset", "all") == 2
    assert run(wd) == 0


def test_lock_is_not_stale_after_sigkill(tmp_path):
    wd = tmp_path / "wd"
    code = ("import sys, time; from bongard_system1.pipeline.lock import PipelineLock; "
            f"lock = PipelineLock({str(wd)!r}).acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(System1Error, match=f"pid {proc.pid}"):
            PipelineLock(wd).acquire()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    lock = PipelineLock(wd).acquire()
    lock.release()


def test_lock_taken_on_a_file_unlinked_meanwhile_is_taken_again_on_the_new_one(tmp_path, monkeypatch):
    # ``reset all`` unlinks the lock file: a run that opened it just before and locked it just after
    # must not hold a lock nobody else sees (a second run would lock the new file and run beside it)
    import filelock
    wd = tmp_path / "wd"
    real_acquire, swaps = filelock.FileLock.acquire, []

    def acquire_then_swap(self, *args, **kwargs):
        out = real_acquire(self, *args, **kwargs)
        if not swaps:           # once: the file is unlinked and another run creates it anew
            swaps.append(1)
            os.unlink(self.lock_file)
            Path(self.lock_file).touch()
        return out

    monkeypatch.setattr(filelock.FileLock, "acquire", acquire_then_swap)
    lock = PipelineLock(wd).acquire()
    try:
        assert swaps and PipelineLock(wd).is_held_elsewhere()
        with pytest.raises(System1Error, match="another pipeline run holds the lock"):
            PipelineLock(wd).acquire()
    finally:
        lock.release()


def test_a_holder_that_names_nobody_is_looked_at_again_before_the_run_is_refused(tmp_path):
    # A holder names itself just after it locks and unnames itself just before it lets go (``reset
    # all`` deletes the pid file, then the lock file): in that gap a second run waits, then either
    # takes the lock or names the holder.
    wd = tmp_path / "wd"
    (wd / "checkpoints").mkdir(parents=True)
    lock_file, pid_file = wd / "checkpoints" / ".pipeline.lock", wd / "checkpoints" / ".pipeline.lock.pid"
    code = ("import sys, time, filelock, pathlib; lock = filelock.FileLock(sys.argv[1], timeout=0); "
            "lock.acquire(); print('held', flush=True); time.sleep(0.4); "
            "pathlib.Path(sys.argv[2]).write_text('pid 4242, since then') if sys.argv[3] == 'name' else None; "
            "time.sleep(0.4 if sys.argv[3] == 'leave' else 60)")
    for then in ("leave", "name", "stay"):
        proc = subprocess.Popen([PY, "-c", code, str(lock_file), str(pid_file), then],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "held"
            start = time.monotonic()
            if then == "leave":                # it lets go within the wait: the lock is taken
                PipelineLock(wd).acquire().release()
            else:
                with pytest.raises(System1Error) as err:
                    PipelineLock(wd).acquire()
                assert ("pid 4242" if then == "name" else "pid unknown") in str(err.value)
                if then == "stay":
                    assert time.monotonic() - start >= 0.9
        finally:
            proc.kill()
            proc.wait(timeout=10)
            proc.stdout.close()
        pid_file.unlink(missing_ok=True)


def test_no_checkpoint_reads_and_writes_no_records(fakes, tmp_path, capsys):
    wd = tmp_path / "wd"
    run(wd)
    records = {p.name: p.read_text() for p in (wd / "checkpoints").glob("*.json")}
    recorded = {name: (wd / name).read_text() for name in ("results/system1_training_results.json",
                                                           "logs/smoke_training.log")}
    capsys.readouterr()
    assert run(wd, "--no-checkpoint") == 0
    assert ran_stages(capsys.readouterr().out) == ["data", "training", "evaluation"]
    assert {p.name: p.read_text() for p in (wd / "checkpoints").glob("*.json")} == records
    assert (wd / "runs" / "smoke_unrecorded" / "best.pt").exists()
    # the recorded run's results and log stay as they were; the unrecorded run's go beside them
    assert {name: (wd / name).read_text() for name in recorded} == recorded
    assert json.loads((wd / "results" / "system1_training_results_unrecorded.json").read_text())
    assert "checkpointing off" in (wd / "logs" / "smoke_training_unrecorded.log").read_text()
    run(wd)
    assert ran_stages(capsys.readouterr().out) == []


def test_bad_input_is_one_line_and_non_zero(fakes, tmp_path, capsys):
    for argv in (["--epochs", "0"], ["--dataset_size", "-3"], ["--reset", "models"], ["--profile", "huge"],
                 ["--early-scale", "0"]):
        assert run(tmp_path / "wd", *argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert run(blocker / "wd") == 2
    err = capsys.readouterr().err
    assert "cannot write to work directory" in err and err.count("\n") == 1
    for action in ([], ["--status"], ["--reset", "all"]):
        assert run(blocker, *action) == 2
        err = capsys.readouterr().err
        assert f"work directory {blocker} is a file" in err and err.count("\n") == 1, err
    assert blocker.read_text() == "x"
    assert run(tmp_path / "wd", real=str(tmp_path / "missing.json")) == 2
    assert f"real data {tmp_path / 'missing.json'}: no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run(tmp_path / "wd", real=str(tmp_path / "empty")) == 2
    assert f"real data file not found: {tmp_path / 'empty' / 'shapes_coco.json'}" in capsys.readouterr().err
    assert run(tmp_path / "wd", "--dataset_size", "1") == 2         # a quarter of one image rounds to none
    assert "gives 0 validation and 1 training images" in capsys.readouterr().err
    (tmp_path / "wd2").mkdir()
    (tmp_path / "wd2" / "results").write_text("a file where a folder goes")
    assert run(tmp_path / "wd2") == 2
    assert "results is a file" in capsys.readouterr().err and not (tmp_path / "wd2" / "processed_data").exists()
    (tmp_path / "wd3" / "results" / "system1_training_results.json").mkdir(parents=True)
    assert run(tmp_path / "wd3") == 2       # found before the stages run, not after all of them
    err = capsys.readouterr().err
    assert "system1_training_results.json is a folder" in err and err.count("\n") == 1
    assert not (tmp_path / "wd3" / "processed_data").exists()


def _break_real_set(real_set, how):
    root = real_set.parent
    if how == "truncated":
        real_set.write_text(real_set.read_text()[:40])
    elif how == "image missing":
        (root / "images" / "3.png").unlink()
    elif how == "no boxes":
        doc = json.loads(real_set.read_text())
        real_set.write_text(json.dumps(dict(doc, annotations=[])))
    elif how == "no file_name":
        doc = json.loads(real_set.read_text())
        del doc["images"][0]["file_name"]
        real_set.write_text(json.dumps(doc))
    elif how == "garbage image":
        (root / "images" / "5.png").write_bytes(b"GIF89a, not what it says")
    elif how == "no known category":
        doc = json.loads(real_set.read_text())
        real_set.write_text(json.dumps(dict(doc, categories=[{"id": 1, "name": "blob"}])))
    elif how == "not json":
        real_set.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")


@pytest.mark.parametrize("how,words", [("truncated", "is not valid JSON"), ("image missing", "1 of its 12 images are missing"),
                                       ("no boxes", "nothing to score"), ("no file_name", "image 1 has no 'file_name'"),
                                       ("not json", "not UTF-8"), ("garbage image", "not PNG or JPEG files"),
                                       ("no known category", "none of its categories (blob)")])
def test_a_bad_real_set_is_refused_before_any_stage_and_keeps_the_last_evaluation(fakes, tmp_path, capsys, real_set,
                                                                                 how, words):
    wd = tmp_path / "wd"
    assert run(wd, real=str(real_set)) == 0
    evaluation = (wd / "checkpoints" / "evaluation.json").read_text()
    _break_real_set(real_set, how)
    capsys.readouterr()
    assert run(wd, "--epochs", "3", real=str(real_set)) == 2          # a change that would retrain
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert len(fakes["train"]) == 1                                    # nothing ran
    assert (wd / "checkpoints" / "evaluation.json").read_text() == evaluation


def test_the_real_set_named_by_its_strokes_file_or_its_folder_is_the_same_set(fakes, tmp_path, capsys, real_set):
    wd = tmp_path / "wd"
    assert run(wd, real=str(real_set)) == 0
    for other in (real_set.with_name("strokes_coco.json"), real_set.parent):
        capsys.readouterr()
        assert run(wd, real=str(other)) == 0
        assert ran_stages(capsys.readouterr().out) == []
    assert run(wd, real="") == 2
    assert "--real-data is empty" in capsys.readouterr().err


def test_status_text_reasons(fakes, tmp_path, capsys):
    wd = tmp_path / "wd"
    lines, ok = pipeline_status(wd)
    assert not ok and any("no record" in line for line in lines)
    run(wd)
    lines, ok = pipeline_status(wd)
    text = "\n".join(lines)
    assert ok and text.count("✅") == 3 and "24 images at 128 px" in text and "resnet18" in text
    assert "(a run without these flags is a quick run: give them again to go on with this one)" in text
    settings = profiles.resolve_settings("smoke", {"epochs": 5})
    lines, ok = pipeline_status(wd, settings, None, explicit=True)
    text = "\n".join(lines)
    assert "would run again: config changed: epochs 2 -> 5" in text
    assert "❌ evaluation" in text and text.count("✅") == 1
    capsys.readouterr()
    assert cli.main(["--status", "--workdir", str(wd), "--epochs", "5", "--profile", "smoke",
                     "--real-data", "none"]) == 0
    assert "epochs 2 -> 5" in capsys.readouterr().out
    # a key left out of the config when off reads as its value, not "(unset)"
    lines, _ = pipeline_status(wd, profiles.resolve_settings("smoke", {"rescore_images": 0}), None, explicit=True)
    assert "config changed: rescore_images 6 -> 0, rescorer_version 3 -> none" in "\n".join(lines)


def test_status_imports_no_torch(fakes, tmp_path):
    wd = tmp_path / "wd"
    run(wd)
    # (how fast it answers is measured by benchmarks/status_speed.py, not timed here)
    proc = subprocess.run([PY, "-X", "importtime", str(REPO / "train_system1_checkpointed.py"), "--status",
                           "--workdir", str(wd)], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "torchvision", "cv2", "matplotlib", "numpy"}, imported & {"torch", "cv2"}
    assert "✅ data" in proc.stdout and "✅ evaluation" in proc.stdout
    for argv in (["--help"], ["--reset", "evaluation", "--workdir", str(wd)]):
        proc = subprocess.run([PY, "-X", "importtime", str(REPO / "train_system1_checkpointed.py"), *argv],
                              capture_output=True, text=True, timeout=30, cwd=REPO)
        assert proc.returncode == 0
        assert "torch" not in {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}


def test_validate_phase1_table_and_exit_status(fakes, tmp_path, capsys, real_set):
    wd = tmp_path / "wd"
    argv = ["--profile", "smoke", "--workdir", str(wd), "--no-progress"]
    assert cli.validate_main(argv + ["--real-data", str(real_set)]) == 0
    out = capsys.readouterr().out
    assert "synthetic AP@[.5:.95]" in out and out.count("✅") == 3 and "PASSED" in out
    assert "real AP50" in (wd / "logs" / "validate_phase1.log").read_text()
    # a missing real set is not met, never passed
    assert cli.validate_main(argv + ["--real-data", "none"]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and "NOT MET" in out
    fakes["metrics"] = {"AP": 0.5, "AP50": 0.97}
    assert cli.validate_main(argv + ["--real-data", str(real_set), "--force-eval"]) == 1
    capsys.readouterr()
    # its --status compares with its own default, professional, not the pipeline's quick
    assert cli.validate_main(["--status", "--workdir", str(wd)]) == 0
    assert "(a run without these flags is a professional run" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    for more, says in (([], "compared with the default profile (professional)"),
                       (["--epochs", "3"], "compared with: --profile professional --epochs 3\n")):
        assert cli.validate_main(["--status", "--workdir", str(tmp_path / "empty"), *more]) == 0
        assert says in capsys.readouterr().out
    # a professional run that trains on the CPU says it is meant for a GPU, with its own figures (and runs);
    # not when a time budget caps it, nor when training is up to date
    pro = ["--workdir", str(tmp_path / "pro"), "--dataset_size", "24", "--device", "cpu", "--real-data", "none",
           "--no-progress"]
    assert cli.validate_main(pro) == 1
    assert ("the professional profile is meant for a GPU; on this CPU its training (resnet50, 50 epochs of 24 "
            "images at 416 px) will be slow") in capsys.readouterr().out
    assert cli.validate_main(pro) == 1
    assert "meant for a GPU" not in capsys.readouterr().out
    assert cli.validate_main(pro + ["--time-budget", "5"]) == 1
    out = capsys.readouterr().out
    assert "[training] running" in out and "meant for a GPU" not in out


def test_package_cli_run_status_reset(fakes, tmp_path, capsys):
    from bongard_system1.cli import main as system1

    wd = tmp_path / "wd"
    assert system1(["run", "--profile", "smoke", "--workdir", str(wd), "--real-data", "none", "--no-progress"]) == 0
    capsys.readouterr()
    assert system1(["status", "--workdir", str(wd)]) == 0
    assert capsys.readouterr().out.count("✅") == 3
    assert system1(["reset", "evaluation", "--workdir", str(wd)]) == 0
    assert "checkpoints/evaluation.json" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        system1(["reset", "bogus", "--workdir", str(wd)])
    assert exc.value.code == 2
    assert reset_stage(wd, "evaluation") == []


def test_a_full_disk_mid_stage_shows_its_own_error_when_the_failed_record_cannot_be_written(fakes, tmp_path,
                                                                                           capsys, monkeypatch):
    """The failed-stage record is written on the same full disk: its own OSError hid the stage's."""
    import errno
    wd = tmp_path / "wd"
    fake = sys.modules["bongard_system1.train"]

    def disk_fills(data_dir, out_dir, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(out_dir) / "last.pt"))

    plain_write = CheckpointManager.write

    def write(self, stage, record):
        if record.get("status") == "failed":
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path(stage)))
        plain_write(self, stage, record)

    monkeypatch.setattr(fake, "train_detector", disk_fills)
    monkeypatch.setattr(CheckpointManager, "write", write)
    assert run(wd) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: No space left on device (") and \
        lines[0].endswith("runs/smoke/last.pt)"), lines
    assert json.loads((wd / "checkpoints" / "training.json").read_text())["status"] == "running"
    status, _ = pipeline_status(wd)
    assert any("previous run interrupted" in line for line in status)
    assert json.loads((wd / "checkpoints" / "data_generation.json").read_text())["status"] == "complete"


def test_a_staging_folder_warns_when_the_disk_has_less_room_than_the_folder_it_replaces(fakes, tmp_path, capsys,
                                                                                        monkeypatch):
    import collections
    from bongard_system1.pipeline import stages
    wd = tmp_path / "wd"
    assert run(wd) == 0
    assert "warning" not in capsys.readouterr().err
    assert run(wd, "--force-train") == 0                     # room enough: no warning
    assert "warning" not in capsys.readouterr().err
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(stages.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2, 2))
    assert run(wd, "--force-train") == 0
    err = capsys.readouterr().err
    assert stages.folder_bytes(wd / "runs" / "smoke") > 0
    assert "[training] warning: runs/smoke.new is built beside runs/smoke, which stays until it is " \
        "complete" in err and "0 MiB is free, so the disk may fill" in err, err
    assert run(wd, "--force-data") == 0
    err = capsys.readouterr().err
    assert "[data] warning: processed_data/smoke_synthetic.new is built beside processed_data/smoke_synthetic" in err
    assert "--reset data (which drops the trained run" in err


def test_cuda_asked_for_without_a_gpu_is_refused_before_the_data_stage(tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    wd = tmp_path / "wd"
    assert run(wd, "--device", "cuda") == 2
    assert "--device cuda asked for, but no CUDA device is available" in capsys.readouterr().err
    assert not (wd / "processed_data").exists() and not (wd / "checkpoints" / "data_generation.json").exists()
