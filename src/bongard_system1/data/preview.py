"""A contact sheet of dataset images with their shape (green) and stroke (blue/red) boxes, for people."""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from ..errors import System1Error
from ..io_utils import write_image
from .dataset import coco_to_targets, read_gray

COLOURS = {"shape": (0, 170, 0), "line": (220, 90, 0), "arc": (0, 0, 230)}


def preview_grid(data_dir, out_path, num=16, strokes=False, tile=256):
    if not os.path.exists(os.path.join(data_dir, "shapes_coco.json")):
        raise System1Error(f"{data_dir} holds no shapes_coco.json")
    recs = coco_to_targets(data_dir, "all" if strokes else "shapes")[:num]
    if not recs:
        raise System1Error(f"{data_dir} has no images")
    tiles = []
    for rec in recs:
        gray = read_gray(rec["path"])
        img = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
        s = tile / max(gray.shape)
        img = cv2.resize(img, (round(gray.shape[1] * s), round(gray.shape[0] * s)), interpolation=cv2.INTER_AREA)
        for box, name in zip(rec["boxes"], rec["names"]):
            kind = name.split("/")[0]
            # a box far off the image (a hand-edited file) is drawn along the tile's edge, not
            # passed to OpenCV as a coordinate past its integer range
            x0, y0, x1, y1 = np.clip(np.nan_to_num(np.asarray(box, float) * s), -2, tile + 2)
            p0 = (int(round(x0)), int(round(y0)))
            p1 = (int(round(x1)) - 1, int(round(y1)) - 1)
            cv2.rectangle(img, p0, p1, COLOURS[kind], 2 if kind == "shape" else 1)
        canvas = np.full((tile, tile, 3), 255, np.uint8)
        canvas[:img.shape[0], :img.shape[1]] = img
        cv2.rectangle(canvas, (0, 0), (tile - 1, tile - 1), (200, 200, 200), 1)
        tiles.append(canvas)
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    tiles += [np.full_like(tiles[0], 255)] * (rows * cols - len(tiles))
    grid = np.concatenate([np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(rows)], axis=0)
    write_image(out_path, grid)
    return out_path


def cli_preview(args):
    from ..io_utils import check_not_an_input, check_output_image
    check_output_image(args.out)
    check_not_an_input(args.out, [args.data])
    path = preview_grid(args.data, args.out, num=args.num, strokes=args.strokes)
    print(f"wrote {path}")
    return 0
