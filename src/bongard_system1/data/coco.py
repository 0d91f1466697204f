"""Reading COCO detection files: every problem with the file is one ``System1Error`` line.

Standard library only (the pipeline checks a real set with it before any stage runs). Checked: the
file reads as JSON, holds ``images``, ``annotations`` and ``categories`` lists, each image has an
integer ``id`` (once) and a ``file_name``, each annotation an ``image_id`` of a listed image, a
``category_id`` of a listed category and a ``bbox`` of four finite numbers, and each category an
integer ``id`` (once) and a ``name``; optional fields (``area``, ``iscrowd``, ``problem_type``) have
the types COCO tools expect.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import System1Error


def read_coco(path, sized: bool = False, annotations: bool = True) -> dict:
    """The COCO dict in ``path``, checked as the module docstring says; ``sized``: every image
    record must also give its ``width`` and ``height`` (a dataset's files, for training);
    ``annotations`` False: a file without an ``annotations`` list (image info only, as a test set's)
    is taken, with none."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise System1Error(f"COCO file not found: {path}") from None
    except IsADirectoryError:
        raise System1Error(f"COCO file is a directory, not a file: {path}") from None
    except json.JSONDecodeError as e:
        raise System1Error(f"COCO file is not valid JSON: {path} (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise System1Error(f"COCO file is not valid JSON (not UTF-8 text): {path}") from None
    except OSError as e:
        raise System1Error(f"cannot read COCO file {path}: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise System1Error(f"not a COCO file (top level is not an object): {path}")
    if not annotations and "annotations" not in data:
        data["annotations"] = []
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise System1Error(f"not a COCO file (no {', '.join(repr(k) for k in missing)} list): {path}")
    problem = coco_problem(data, sized)
    if problem:
        raise System1Error(f"not a usable COCO file: {path}: {problem}")
    return data


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)          # COCO's ids are integers


def coco_problem(data: dict, sized: bool = False) -> str | None:
    """The first thing wrong with a COCO dict's records, in words, or None."""
    image_ids = set()
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im:
            return f"image record {i} has no 'id'"
        if not _is_int(im["id"]):
            return f"image record {i} has an 'id' that is not an integer ({im['id']!r})"
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            return f"image {im['id']!r} has no 'file_name'"
        if im["id"] in image_ids:
            return f"image id {im['id']!r} appears twice"
        if sized and not all(_is_int(im.get(k)) and im[k] > 0 for k in ("width", "height")):
            return f"image {im['id']!r} has no 'width' and 'height'"
        if "problem_type" in im and not isinstance(im["problem_type"], str):
            return f"image {im['id']!r} has a 'problem_type' that is not a name"
        image_ids.add(im["id"])
    cat_ids = set()
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
            return f"category record {i} has no 'id' or 'name'"
        if c["id"] in cat_ids:
            return f"category id {c['id']!r} appears twice"
        cat_ids.add(c["id"])
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict):
            return f"annotation {i} is not an object"
        if "id" in a and not _is_int(a["id"]):
            return f"annotation {i} has an 'id' that is not an integer"
        if a.get("image_id") not in image_ids:
            return f"annotation {i} has no 'image_id' of a listed image"
        if a.get("category_id") not in cat_ids:
            return f"annotation {i} has no 'category_id' of a listed category"
        box = a.get("bbox")
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
                or box[2] < 0 or box[3] < 0):
            return f"annotation {i} has no 'bbox' of four numbers [x, y, w, h] (w, h >= 0)"
        if "area" in a and not (isinstance(a["area"], (int, float)) and not isinstance(a["area"], bool)):
            return f"annotation {i} has an 'area' that is not a number"
        if "iscrowd" in a and a["iscrowd"] not in (0, 1):
            return f"annotation {i} has an 'iscrowd' that is not 0 or 1"
    return None


MODEL_CATEGORIES = ("shape", "line", "arc")


def warn_if_nothing_in_common(detector, names, model, path, outcome="every figure will be 0") -> None:
    """A warning on stderr when ``detector`` (a System1, whose ``names`` are its classes, or the
    baseline, which finds shapes) finds none of the categories ``names`` of the COCO file ``path``:
    a shapes-only model on a strokes file scores 0 and predicts nothing for it."""
    import sys
    kinds = {str(n).split("/")[0] for n in getattr(detector, "names", None) or ["shape"]}
    wanted = {str(n) for n in names}
    if not kinds & wanted:
        print(f"warning: {model} detects {', '.join(sorted(kinds))} only and {path} holds "
              f"{', '.join(sorted(wanted))}: {outcome}", file=sys.stderr)


def check_usable(gt: dict, path, *, need_boxes: bool = True) -> None:
    """Refuse a COCO dict that gives a model nothing to do: no image, no box (to score against) or
    no category named shape, line or arc (instead of an AP of 0 or an empty output)."""
    if not gt["images"]:
        raise System1Error(f"{path} lists no images: nothing to do")
    if need_boxes and not gt["annotations"]:
        raise System1Error(f"{path} has no ground-truth boxes: nothing to score")
    names = {c["name"] for c in gt["categories"]}
    if not names & set(MODEL_CATEGORIES):
        raise System1Error(f"{path}: none of its categories ({', '.join(sorted(names)) or 'none'}) is "
                           "shape, line or arc, the categories this model finds")
