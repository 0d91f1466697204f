"""The ``system1`` command line: a thin argparse layer over the package's functions.

Parsers are built without importing torch, so ``--help`` and ``status`` answer at once; each
subcommand imports its module only when it runs. Every :class:`System1Error` becomes one
``error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .argtypes import OneLineParser
from .argtypes import half_open_fraction as _fraction
from .argtypes import image_count as _image_count
from .argtypes import image_px as _image_px
from .argtypes import max_shapes as _max_shapes
from .argtypes import non_empty_path as _path
from .argtypes import turtle_scale as _turtle_scale
from .argtypes import non_negative_int as _non_negative_int
from .argtypes import png_path as _png_path
from .argtypes import positive_float as _positive_float
from .argtypes import positive_int as _positive_int
from .argtypes import scale_fraction as _scale
from .argtypes import seed_int as _seed
from .argtypes import test_sizes_px
from .argtypes import unit_fraction as _unit
from .errors import run_guarded
from .settings import MAX_VIEWS, OVERLAY_MIN_SCORE, PARSE_MIN_SCORE, TEST_VIEWS

_TEST_SIZE_HELP = ("resize images to S px for the network (default: 1.15x the training size, rounded to 32; "
                   "models only, not the baseline); several sizes, comma-separated (e.g. 480,416), "
                   "are all seen and their views fused, for a little more AP at more time")
_NO_RESCORE_HELP = ("keep the detector's fused stroke scores and the hybrid's shape scores (skip the rescorer "
                    "stored with the model; it is skipped anyway with views, test sizes or a stroke mode it was "
                    "not trained for, and its shape part with a shape mode other than hybrid)")
_NO_VOTE_HELP = "leave stamp styles as the detector gives them (skip the stamp vote stored with the model)"
_VIEWS_HELP = (f"views of each image the network sees, 1 to {MAX_VIEWS}: the image, mirrored left-right, mirrored top-bottom, "
               f"transposed, then its other symmetries (rotations, the other diagonal); their detections are fused "
               f"(default {TEST_VIEWS}; 1 is about 4x faster, 8 about 2x slower and a little more accurate)")
_FP32_HELP = ("run the network in fp32 (default: autocast, bf16 on CUDA (fp16 on a GPU without bf16) and on CPUs with "
              "AMX or AVX-512 BF16, "
              "1.7 to 3x faster there with the same AP)")
_STROKE_MODE_HELP = ("how stroke boxes meet the ink: snap (each edge moves to the ink within a few pixels, unless the "
                     "ink runs on into a neighbouring stroke) or model (the network's boxes as they are)")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="system1", description="System 1 for Bongard-LOGO: generate synthetic "
                                "data, train and evaluate a shape and stroke detector, run the checkpointed pipeline.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True

    g = sub.add_parser("generate", help="write a synthetic Bongard-LOGO dataset with COCO boxes")
    g.add_argument("--out", required=True, type=_path, help="output folder")
    g.add_argument("--num-images", type=_image_count, required=True, help="images to draw (train and val together)")
    g.add_argument("--image-size", type=_image_px, default=416, help="image side in px (default 416, as the quick profile)")
    g.add_argument("--seed", type=_seed, default=0, help="each image comes from its own stream of this seed (default 0)")
    g.add_argument("--workers", type=_non_negative_int, default=None,
                   help="drawing processes (default: every core; 0 or 1: one, as the pipeline's --workers 0)")
    g.add_argument("--val-fraction", type=_fraction, default=0.1, help="share of the images in the val split (default 0.1)")
    g.add_argument("--max-shapes", type=_max_shapes, default=3, help="shapes per image: 1 to this (at most 8; default 3)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    g.set_defaults(handler="bongard_system1.data.generate:cli_generate")

    d = sub.add_parser("draw", help="render one image from action strings (one --program per shape)")
    d.add_argument("--program", action="append", required=True,
                   help="comma-separated action strings of one shape, e.g. line_zigzag_0.500-0.500,arc_normal_0.500_0.625-0.750; "
                        "repeat the flag for more shapes (a grid of slots, one a shape)")
    d.add_argument("--out", required=True, type=_png_path, help="PNG file to write (lossless: a JPEG's artefacts would move the boxes)")
    d.add_argument("--size", type=_image_px, default=512, help="image side in px (default 512, as the real set)")
    d.add_argument("--scale", type=_turtle_scale, default=180.0, help="scaling factor of every shape (turtle units; 180 is the original's base); a shape too large for its slot is shrunk to fit, with a warning")
    d.set_defaults(handler="bongard_system1.logo.render:cli_draw")

    v = sub.add_parser("preview", help="draw a grid of dataset images with their boxes")
    v.add_argument("--data", required=True, type=_path, help="dataset folder (or a folder with shapes_coco.json)")
    v.add_argument("--out", required=True, type=_path, help="image file to write (PNG)")
    v.add_argument("--num", type=_positive_int, default=16, help="images in the grid (default 16)")
    v.add_argument("--strokes", action="store_true", help="draw stroke boxes too")
    v.set_defaults(handler="bongard_system1.data.preview:cli_preview")

    t = sub.add_parser("train", help="train the detector (resumes after a kill)")
    t.add_argument("--data", required=True, type=_path, help="dataset folder written by 'system1 generate'")
    t.add_argument("--out", required=True, type=_path, help="run folder: last.pt, best.pt, config.json, metrics.csv")
    t.add_argument("--backbone", choices=["resnet18", "resnet50"], default="resnet18", help="default resnet18")
    t.add_argument("--categories", choices=["shapes", "strokes", "all"], default="all",
                   help="what the detector learns: shapes, strokes (line and arc, each with its style) or all (default)")
    t.add_argument("--epochs", type=_positive_int, default=8, help="default 8, as the quick profile")
    t.add_argument("--batch-size", type=_positive_int, default=8,
                   help="default 8; the peak learning rate scales with sqrt(batch / 8)")
    t.add_argument("--image-size", type=_image_px, default=416,
                   help="training input size in px (default 416, as the quick profile)")
    t.add_argument("--early-scale", type=_scale, default=0.75, metavar="F",
                   help="progressive resizing: the first half of the one-cycle epochs train at F times the "
                        "image size (default 0.75: 320 px for 416, as the quick profile; 1: off)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto: CUDA when there is one")
    t.add_argument("--workers", type=_non_negative_int, default=None,
                   help="loader processes (default: 0 on CPU, up to 6 on CUDA)")
    t.add_argument("--seed", type=_seed, default=0, help="default 0; on one CPU a run is deterministic")
    t.add_argument("--lr", type=_positive_float, default=None, help="peak OneCycleLR learning rate")
    t.add_argument("--time-budget", type=_positive_float, default=None, help="minutes; epochs shrink to fit")
    t.add_argument("--stamp-images", type=_non_negative_int, default=3000, metavar="N",
                   help="synthetic images for the stamp vote trained after the detector (default 3000; 0: none; "
                        "else at least 50)")
    t.add_argument("--rescore-images", type=_non_negative_int, default=800, metavar="N",
                   help="synthetic images whose detections train the rescorer of strokes and shapes after the stamp vote "
                        "(default 800; 0: none)")
    t.add_argument("--restart", action="store_true", help="start over even if the --out folder holds a run with another config")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    t.set_defaults(handler="bongard_system1.train:cli_train")

    e = sub.add_parser("evaluate", help="COCO metrics of a model (or the classical baseline) on a COCO file")
    e.add_argument("--model", required=True, help="a .pt file, a run folder (its best.pt) or 'baseline'")
    e.add_argument("--coco", required=True, type=_path, help="shapes_coco.json or strokes_coco.json")
    e.add_argument("--images-root", default=None, type=_path, help="folder the file names are relative to")
    e.add_argument("--out", required=True, type=_path, help="metrics JSON to write")
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto: CUDA when there is one")
    e.add_argument("--shape-mode", choices=["hybrid", "snap", "model"], default="hybrid",
                   help="how shape boxes meet the ink (see the README)")
    e.add_argument("--stroke-mode", choices=["snap", "model"], default="snap", help=_STROKE_MODE_HELP)
    e.add_argument("--test-size", type=test_sizes_px, default=None, metavar="S", help=_TEST_SIZE_HELP)
    e.add_argument("--no-stamp-vote", action="store_true", help=_NO_VOTE_HELP)
    e.add_argument("--no-rescore", action="store_true", help=_NO_RESCORE_HELP)
    e.add_argument("--views", type=int, choices=range(1, MAX_VIEWS + 1), default=None, metavar="N", help=_VIEWS_HELP)
    e.add_argument("--fp32", action="store_true", help=_FP32_HELP)
    e.add_argument("--no-progress", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    e.set_defaults(handler="bongard_system1.evaluate:cli_evaluate")

    r = sub.add_parser("predict", help="COCO-style detections (and overlays) for images")
    r.add_argument("--model", required=True, help="a .pt file, a run folder or 'baseline'")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=_path, help="folder of images (subfolders too)")
    src.add_argument("--coco", type=_path, help="COCO file whose images to predict")
    r.add_argument("--images-root", default=None, type=_path,
                   help="with --coco: folder the file names are relative to (default: the file's folder)")
    r.add_argument("--out", required=True, type=_path, help="detections JSON to write")
    r.add_argument("--overlay-dir", default=None, type=_path,
                   help="write an overlay PNG per image here (the image's path, folders joined by __, "
                        "+ _overlay.png)")
    r.add_argument("--overlay-min-score", type=_unit, default=OVERLAY_MIN_SCORE, metavar="P",
                   help=f"overlays draw detections scored P or more, and never below --score-threshold "
                        f"(default {OVERLAY_MIN_SCORE:g}; --out holds every detection from --score-threshold)")
    r.add_argument("--parse-out", default=None, type=_path, metavar="FILE",
                   help="also write each image's shapes, each with the strokes drawn in it, as JSON")
    r.add_argument("--parse-min-score", type=_unit, default=PARSE_MIN_SCORE, metavar="P",
                   help=f"shapes and strokes kept in --parse-out: score P or more, and lower-scored strokes that "
                        f"cover ink no kept stroke covers (default {PARSE_MIN_SCORE:g}, "
                        "chosen for a model with its rescorer; whatever --score-threshold and the "
                        "--coco file's categories keep in --out)")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto: CUDA when there is one")
    r.add_argument("--score-threshold", type=_unit, default=0.05,
                   help="write detections scored this or more (default 0.05, the lowest the model keeps)")
    r.add_argument("--shape-mode", choices=["hybrid", "snap", "model"], default="hybrid")
    r.add_argument("--stroke-mode", choices=["snap", "model"], default="snap", help=_STROKE_MODE_HELP)
    r.add_argument("--test-size", type=test_sizes_px, default=None, metavar="S", help=_TEST_SIZE_HELP)
    r.add_argument("--no-stamp-vote", action="store_true", help=_NO_VOTE_HELP)
    r.add_argument("--no-rescore", action="store_true", help=_NO_RESCORE_HELP)
    r.add_argument("--views", type=int, choices=range(1, MAX_VIEWS + 1), default=None, metavar="N", help=_VIEWS_HELP)
    r.add_argument("--fp32", action="store_true", help=_FP32_HELP)
    r.add_argument("--no-progress", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    r.set_defaults(handler="bongard_system1.predict:cli_predict")

    for name, helptext in (("run", "run the checkpointed pipeline (data, training, evaluation)"),
                           ("status", "show each pipeline stage and why it would run again"),
                           ("reset", "delete a pipeline stage's records and outputs, and everything downstream")):
        s = sub.add_parser(name, help=helptext, add_help=False)
        s.add_argument("rest", nargs=argparse.REMAINDER)
        s.set_defaults(handler=f"bongard_system1.pipeline.cli:cli_{name}")
    return p


PIPELINE_COMMANDS = ("run", "status", "reset")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PIPELINE_COMMANDS:
        # the pipeline commands parse their own options (argparse.REMAINDER refuses a leading option)
        args = argparse.Namespace(command=argv[0], rest=argv[1:],
                                  handler=f"bongard_system1.pipeline.cli:cli_{argv[0]}")
    else:
        args = build_parser().parse_args(argv)
    module, func = args.handler.split(":")
    return run_guarded(lambda: getattr(importlib.import_module(module), func)(args))


if __name__ == "__main__":
    sys.exit(main())
