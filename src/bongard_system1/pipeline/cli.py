"""Command line of the checkpointed pipeline: the original ``train_system1_checkpointed.py`` contract,
``python -m scripts.validate_phase1``, and ``system1 run|status|reset``.

Only the standard library (and filelock) is imported here, so ``--help``, ``--status`` and
``--reset`` answer at once; the stages import torch when they run. User-facing errors are
:class:`System1Error`: :func:`main` and :func:`validate_main` print them as one ``error: ...`` line
and exit with status 2; argparse errors are one line with status 2 as well.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..argtypes import OneLineParser
from ..argtypes import image_count as _image_count
from ..argtypes import image_px as _image_px
from ..argtypes import max_shapes as _max_shapes
from ..argtypes import non_empty_path as _path
from ..argtypes import non_negative_int as _non_negative_int
from ..argtypes import open_fraction as _fraction
from ..argtypes import positive_float as _positive_float
from ..argtypes import positive_int as _positive_int
from ..argtypes import scale_fraction as _scale
from ..argtypes import seed_int as _seed
from ..errors import System1Error, run_guarded
from . import profiles
from .records import STAGES

RESET_CHOICES = ("data", "training", "evaluation", "all")
# flag dest -> settings key, for the settings a flag overrides
OVERRIDE_DESTS = {"dataset_size": "dataset_size", "image_size": "image_size", "epochs": "epochs",
                  "batch_size": "batch_size", "backbone": "backbone", "categories": "categories",
                  "device": "device", "workers": "workers", "seed": "seed", "lr": "lr",
                  "time_budget": "time_budget", "val_fraction": "val_fraction", "max_shapes": "max_shapes",
                  "real_max_images": "real_max_images", "stamp_images": "stamp_images",
                  "early_scale": "early_scale", "rescore_images": "rescore_images"}


def _add_settings_flags(p: argparse.ArgumentParser, default_profile: str | None) -> None:
    g = p.add_argument_group("profile and settings (any flag overrides the profile's value)")
    prof = g.add_mutually_exclusive_group()
    prof.add_argument("--profile", choices=profiles.profile_names(), default=None,
                      help=f"smoke (tests, <1 min), quick (CPU, 1 to 1.5 hours on 2 cores with bf16, 4 to 5 in fp32), standard, "
                           f"professional (GPU) "
                           f"(default: {default_profile or profiles.DEFAULT_PROFILE})")
    prof.add_argument("--professional", dest="profile", action="store_const", const="professional",
                      help="same as --profile professional")
    g.add_argument("--dataset_size", "--dataset-size", dest="dataset_size", type=_image_count, metavar="N",
                   help="synthetic images to generate")
    g.add_argument("--image_size", "--image-size", dest="image_size", type=_image_px, metavar="N",
                   help="synthetic image size and training input size (pixels)")
    g.add_argument("--epochs", type=_positive_int, metavar="N", help="training epochs (with 4 or more, the last quarter are averaged by SWA)")
    g.add_argument("--batch_size", "--batch-size", dest="batch_size", type=_positive_int, metavar="N",
                   help="training images per step")
    g.add_argument("--backbone", choices=["resnet18", "resnet50"], help="the detector's ResNet FPN backbone")
    g.add_argument("--categories", choices=["shapes", "strokes", "all"],
                   help="what the detector learns: shape boxes, stroke boxes (line, arc, with style), or both")
    g.add_argument("--lr", type=_positive_float, help="peak OneCycleLR learning rate")
    g.add_argument("--time_budget", "--time-budget", dest="time_budget", type=_positive_float, metavar="MIN",
                   help="training time budget in minutes (epochs shrink to fit)")
    g.add_argument("--early_scale", "--early-scale", dest="early_scale", type=_scale, metavar="F",
                   help="progressive resizing: the first half of the one-cycle epochs train at F times the "
                        "image size (1: off)")
    g.add_argument("--val_fraction", "--val-fraction", dest="val_fraction", type=_fraction, metavar="F",
                   help="share of the synthetic images kept for validation")
    g.add_argument("--max_shapes", "--max-shapes", dest="max_shapes", type=_max_shapes, metavar="N",
                   help="shapes per synthetic image: 1 to N")
    g.add_argument("--real_max_images", "--real-max-images", dest="real_max_images", type=_positive_int,
                   metavar="N", help="evaluate on at most N real images (spread over the set)")
    g.add_argument("--stamp_images", "--stamp-images", dest="stamp_images", type=_non_negative_int, metavar="N",
                   help="synthetic images for the stamp vote trained after the detector (0: none)")
    g.add_argument("--rescore_images", "--rescore-images", dest="rescore_images", type=_non_negative_int, metavar="N",
                   help="synthetic images whose detections train the rescorer of strokes and shapes after the stamp vote "
                        "(0: none)")
    g.add_argument("--seed", type=_seed, help="seed of the data and of training")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train and evaluate (auto: CUDA when there is one)")
    g.add_argument("--workers", type=_non_negative_int, metavar="N", help="training loader workers, and the data stage's drawing processes (default: the profile's "
                        "loader workers, and every core for drawing; 0: no loader workers, one drawing process; "
                        "not part of any config)")
    p.add_argument("--workdir", default=".", type=_path, metavar="DIR", help="work directory (default: the current directory)")
    p.add_argument("--real-data", "--real_data", dest="real_data", default=None, metavar="PATH",
                   help="real COCO shapes file or its folder (default: ../shared/real-bongard-logo/shapes_coco.json when it "
                        "exists; 'none' for no real set)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser(prog: str = "train_system1_checkpointed.py",
                 default_profile: str | None = None) -> argparse.ArgumentParser:
    """The original contract: run (default), --status, --reset STAGE, --force-*, --no-checkpoint."""
    p = OneLineParser(prog=prog, description="Run the checkpointed System 1 pipeline (data, training, "
                      "evaluation), skipping every stage whose record is complete and valid.")
    _add_settings_flags(p, default_profile)
    act = p.add_argument_group("actions").add_mutually_exclusive_group()
    act.add_argument("--status", action="store_true",
                     help="print each stage, its key facts and why it would run again (fast, no torch)")
    act.add_argument("--reset", choices=RESET_CHOICES, metavar="STAGE",
                     help="delete the records and outputs of STAGE (data, training, evaluation, all) "
                          "and everything downstream")
    f = p.add_argument_group("forcing")
    f.add_argument("--force-data", action="store_true", help="redo data, training and evaluation")
    f.add_argument("--force-train", action="store_true", help="redo training and evaluation")
    f.add_argument("--force-eval", action="store_true", help="redo evaluation")
    f.add_argument("--force-all", action="store_true", help="redo every stage")
    f.add_argument("--no-checkpoint", action="store_true",
                   help="run every stage without reading or writing records (outputs go to *_unrecorded folders)")
    return p


def _overrides(args) -> dict:
    return {key: getattr(args, dest) for dest, key in OVERRIDE_DESTS.items() if getattr(args, dest, None) is not None}


def _force_from(args) -> str | None:
    if args.force_all or args.force_data:
        return "data"
    if args.force_train:
        return "training"
    if args.force_eval:
        return "evaluation"
    return None


def options_from_args(args, default_profile: str | None = None, log_name: str | None = None):
    """A :class:`RunOptions` from parsed arguments (resolves the profile, overrides and real set)."""
    from .stages import RunOptions, resolve_real_data

    profile = args.profile or default_profile or profiles.DEFAULT_PROFILE
    overrides = _overrides(args)
    settings = profiles.resolve_settings(profile, overrides)
    return RunOptions(workdir=Path(args.workdir).expanduser(), settings=settings,
                      real_data=resolve_real_data(args.real_data), force_from=_force_from(args),
                      checkpoint=not args.no_checkpoint, progress=not args.no_progress and sys.stderr.isatty(),
                      overrides=overrides, log_name=log_name)


def do_status(args, default_profile: str | None = None) -> int:
    from .stages import resolve_real_data
    from .status import check_workdir, pipeline_status

    default_profile = default_profile or profiles.DEFAULT_PROFILE
    explicit = bool(args.profile or _overrides(args) or args.real_data)
    settings = real = None
    if explicit:
        settings = profiles.resolve_settings(args.profile or default_profile, _overrides(args))
        real = resolve_real_data(args.real_data)
    workdir = Path(args.workdir).expanduser()
    check_workdir(workdir)
    lines, _ = pipeline_status(workdir, settings, real, explicit=explicit, default_profile=default_profile,
                               overrides=_overrides(args))
    print("\n".join(lines))
    return 0


def do_reset(workdir, stage: str) -> int:
    from .status import reset_stage

    deleted = reset_stage(Path(workdir).expanduser(), stage)
    if deleted:
        print(f"reset {stage}: deleted")
        for path in deleted:
            print(f"  {path}")
    else:
        print(f"reset {stage}: nothing to delete")
    return 0


def do_run(args, default_profile: str | None = None, log_name: str | None = None) -> dict:
    from .run import run_pipeline

    return run_pipeline(options_from_args(args, default_profile, log_name))


def _refuse_flags_beside(args, action: str, settings_too: bool) -> None:
    """``--reset`` deletes and ``--status`` only reads: a flag that would do something else beside
    them is refused, not silently dropped."""
    given = [f"--{name.replace('_', '-')}" for name in ("force_all", "force_data", "force_train", "force_eval",
                                                         "no_checkpoint") if getattr(args, name, False)]
    if settings_too:
        given += [f"--{dest}" for dest in OVERRIDE_DESTS if getattr(args, dest, None) is not None]
    if given:
        raise System1Error(f"{action} runs nothing, so it takes no {', '.join(given)}"
                           + ("; reset first, then run with them" if settings_too else ""))


def dispatch(args, default_profile: str | None = None) -> int:
    if args.status:
        _refuse_flags_beside(args, "--status", settings_too=False)
        return do_status(args, default_profile)
    if args.reset:
        _refuse_flags_beside(args, "--reset", settings_too=True)
        return do_reset(args.workdir, args.reset)
    do_run(args, default_profile)
    return 0


def main(argv=None) -> int:
    """``python train_system1_checkpointed.py ...``: every System1Error becomes one line, exit 2."""
    args = build_parser().parse_args(argv)
    return run_guarded(dispatch, args)


# ---------------------------------------------------------------------------------------------
# system1 run | status | reset  (the package CLI catches System1Error itself)


def cli_run(args) -> int:
    ns = build_parser(prog="system1 run").parse_args(list(args.rest))
    return dispatch(ns)


def cli_status(args) -> int:
    p = OneLineParser(prog="system1 status", description="Show each pipeline stage and why it would run again.")
    _add_settings_flags(p, None)
    ns = p.parse_args(list(args.rest))
    return do_status(ns)


def cli_reset(args) -> int:
    p = OneLineParser(prog="system1 reset", description="Delete a stage's records and outputs, and "
                      "everything downstream; lists what it deleted.")
    p.add_argument("stage", choices=RESET_CHOICES)
    p.add_argument("--workdir", default=".", type=_path, metavar="DIR")
    ns = p.parse_args(list(args.rest))
    return do_reset(ns.workdir, ns.stage)


# ---------------------------------------------------------------------------------------------
# python -m scripts.validate_phase1


def format_targets(rows: list[dict]) -> list[str]:
    lines = [f"{'target':<24} {'needed':>8} {'measured':>9}  met",
             f"{'-' * 24} {'-' * 8} {'-' * 9}  ---"]
    for row in rows:
        value = "missing" if row["value"] is None else f"{row['value']:.3f}"
        lines.append(f"{row['target']:<24} {'>= ' + format(row['threshold'], '.2f'):>8} {value:>9}  "
                     f"{'✅' if row['met'] else '❌'}")
    return lines


VALIDATE_PROFILE = "professional"     # validate_phase1's default profile: its runs and its --status


def validate_main(argv=None) -> int:
    """Run the pipeline (professional by default), print the Phase 1 target table; 0 only if all met."""
    p = build_parser(prog="python -m scripts.validate_phase1", default_profile=VALIDATE_PROFILE)
    p.description = ("Run the checkpointed pipeline (professional profile by default) and check the Phase 1 "
                     "targets: synthetic AP@[.5:.95] >= 0.85, synthetic AP50 >= 0.95, real AP50 >= 0.70. "
                     "Exit status 0 only when every target is met.")
    args = p.parse_args(argv)
    if args.status or args.reset:
        return run_guarded(lambda a: dispatch(a, default_profile=VALIDATE_PROFILE), args)
    return run_guarded(_validate, args)


def _validate(args) -> int:
    from .stages import Reporter, target_status

    results = do_run(args, default_profile=VALIDATE_PROFILE)
    rows = results.get("targets") or target_status(results.get("summary") or {})
    workdir = Path(args.workdir).expanduser().resolve()
    log = Reporter(workdir / "logs" / "validate_phase1.log")
    log("")
    log(f"Phase 1 targets (profile {results['profile']}; synthetic = mean of "
        f"{', '.join((results.get('summary') or {}).get('synthetic_sets') or []) or 'no sets'}; "
        f"real = mean of {', '.join((results.get('summary') or {}).get('real_sets') or []) or 'no real set'})")
    for line in format_targets(rows):
        log(line)
    ok = bool(rows) and all(r["met"] for r in rows)
    log(f"Phase 1 {'PASSED' if ok else 'NOT MET'}; results in {results.get('results_file')}")
    return 0 if ok else 1


__all__ = ["build_parser", "main", "cli_run", "cli_status", "cli_reset", "validate_main", "STAGES"]
