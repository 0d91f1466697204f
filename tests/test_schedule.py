"""The epoch plan's time estimates: what each epoch's log line and ``--status`` say is left."""

import csv
import json

from bongard_system1.schedule import format_duration, remaining_epoch_seconds, run_progress


def test_remaining_epoch_seconds_uses_the_epochs_done_and_scales_by_pixels_for_a_new_size():
    assert remaining_epoch_seconds([], 8, 3, 320, 416) is None
    one = [{"epoch": 1, "image_size": 320, "seconds": 400.0}]
    # two more at 320 px (400 s each), five at 416 px (400 * (416/320)^2 = 676 s each)
    assert abs(remaining_epoch_seconds(one, 8, 3, 320, 416) - (2 * 400 + 5 * 676)) < 1e-6
    four = one + [{"epoch": 2, "image_size": 320, "seconds": 380.0}, {"epoch": 3, "image_size": 320, "seconds": 390.0},
                  {"epoch": 4, "image_size": 416, "seconds": 600.0}]
    assert remaining_epoch_seconds(four, 8, 3, 320, 416) == 4 * 600.0   # measured at 416 px now
    assert remaining_epoch_seconds(four, 4, 3, 320, 416) == 0.0
    assert format_duration(25 * 60) == "25 min" and format_duration(3.4 * 3600) == "3.4 h"


def _run_folder(tmp_path, rows, **config):
    cfg = {"epochs": 8, "image_size": 416, "swa_fraction": 0.25, "early_scale": 0.75, **config}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with open(tmp_path / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "image_size", "val_AP", "seconds"])
        w.writeheader()
        w.writerows(rows)
    return tmp_path


def test_run_progress_reads_a_run_folder_as_the_trainer_writes_it(tmp_path):
    run = _run_folder(tmp_path, [{"epoch": 1, "image_size": 320, "val_AP": 0.3691, "seconds": 1200.0},
                                 {"epoch": 2, "image_size": 320, "val_AP": 0.494, "seconds": 1180.0}])
    # one more 320 px epoch (1190 s), five at 416 px (1180 s * 1.69 each): 11,164 s
    assert run_progress(run) == "2/8 epochs done, the last in 1180 s (val AP 0.494); about 3.1 h of epochs left"
    assert run_progress(_run_folder(tmp_path, [{"epoch": 1, "image_size": 96, "val_AP": 0.1, "seconds": 30.0}],
                                    epochs=2, image_size=128, planned_epochs=1)) == \
        "1/1 epochs done, the last in 30 s (val AP 0.100)"        # a time budget planned fewer epochs: all done


def test_run_progress_is_none_before_the_first_epoch_or_for_a_broken_folder(tmp_path):
    assert run_progress(tmp_path) is None                                  # no files at all
    assert run_progress(_run_folder(tmp_path, [])) is None                  # no epoch finished yet
    (tmp_path / "config.json").write_text("{not json")
    assert run_progress(tmp_path) is None
