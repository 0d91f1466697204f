"""The data stage: write a synthetic Bongard-LOGO dataset with exact COCO shape and stroke boxes.

Layout of ``OUT``::

    images/000000.png ...    grayscale PNGs, black ink on white
    shapes_coco.json         category shape (1); each annotation has action_program and strokes
    strokes_coco.json        categories line (1) and arc (2); each annotation has style
    dataset.json             the manifest: parameters, counts, split, status

Image ``i`` is drawn from its own random stream ``default_rng([seed, i])``, so the output does not
depend on the number of workers or on interruptions. Work is done in chunks; a chunk is finished
when its annotation part (``.parts/images_START_STOP.json``) is written, after its images; the
first run fixes the chunks in the in-progress manifest. A rerun with the same arguments (any
``--workers``) skips finished chunks (redrawing any whose part is unreadable or whose images
are missing or cut short); other arguments are refused. The train/val split is a seeded
permutation: ``round(N * val_fraction)`` images get ``"split": "val"``.

Checks: each worker reads every image back after writing it and compares the bytes; each image's
record keeps the length and CRC-32 of its PNG bytes, and a resumed run redraws any chunk whose
images no longer hold them; at the end every image must hold them and the counts must match. Run
again on a complete dataset, the command draws again any image that is missing or damaged (each
image comes from its own seeded stream) and then checks every image (:func:`validate_dataset`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np

from ..configs import config_diff
from ..errors import DatasetDamaged, System1Error, os_error_text
from ..io_utils import naming, write_json_atomic
from ..logo.render import render
from ..logo.sample import sample_image
from ..settings import DATA_FORMAT_VERSION, IMAGE_SIZE_RANGE, MAX_DATASET_IMAGES
from ..wording import counted, number

SHAPE_CATEGORIES = [{"id": 1, "name": "shape", "supercategory": "shape"}]
STROKE_CATEGORIES = [{"id": 1, "name": "line", "supercategory": "stroke"},
                     {"id": 2, "name": "arc", "supercategory": "stroke"}]
STROKE_CATEGORY_ID = {"line": 1, "arc": 2}
# No PNG row filter and run-length zlib: 3x faster to encode than OpenCV's default filtering and
# smaller files for black-on-white drawings (measured: 0.31 ms and 3.4 kB against 0.95 ms and 5.7 kB
# at 416 px). Pixels are the same either way.
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
              cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]


def dataset_params(num_images, image_size, seed, val_fraction, max_shapes):
    """The arguments that decide the dataset's content (worker counts are not among them)."""
    return {"format_version": DATA_FORMAT_VERSION, "num_images": int(num_images), "image_size": int(image_size),
            "seed": int(seed), "val_fraction": float(val_fraction), "max_shapes": int(max_shapes)}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow),
    else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_args(num_images, image_size, val_fraction, max_shapes, workers):
    if not 1 <= int(num_images) <= MAX_DATASET_IMAGES:
        raise System1Error(f"--num-images must be from 1 to {MAX_DATASET_IMAGES}, got {num_images}")
    if not IMAGE_SIZE_RANGE[0] <= int(image_size) <= IMAGE_SIZE_RANGE[1]:
        raise System1Error("--image-size must be from {} to {} px, ".format(*IMAGE_SIZE_RANGE) + f"got {image_size}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise System1Error(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if int(num_images) - _num_val(num_images, val_fraction) < 1:
        raise System1Error(f"--val-fraction {val_fraction} of {num_images} images leaves no training image; "
                           "give more images or a smaller fraction")
    if int(max_shapes) <= 0:
        raise System1Error(f"--max-shapes must be positive, got {max_shapes}")
    if workers is not None and int(workers) <= 0:
        raise System1Error(f"--workers must be positive, got {workers}")


def _num_val(num_images, val_fraction):
    return int(round(int(num_images) * float(val_fraction)))


def val_ids(num_images, seed, val_fraction):
    n_val = _num_val(num_images, val_fraction)
    perm = np.random.default_rng([int(seed), 0x5917]).permutation(num_images)
    return set(int(i) for i in perm[:n_val])


def draw_image(index, seed, image_size, max_shapes):
    """Sample and render image ``index``; returns the rendering and its shapes."""
    rng = np.random.default_rng([int(seed), int(index)])
    shapes, pen = sample_image(rng, max_shapes=max_shapes)
    return render(shapes, image_size, pen_width=pen), shapes, pen


def _image_name(index):
    return f"images/{index:06d}.png"


def _write_file(path, data):
    """Write ``data`` to ``path`` in place (no temporary file: a chunk whose part file is missing is
    redrawn whole, so a half-written image is always rewritten). os.open: half the cost of open()."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:                  # os.write names no file
        raise naming(exc, path) from None
    finally:
        os.close(fd)


def _work_chunk(job):
    out, chunk, start, stop, p = job
    records = []
    for i in range(start, stop):
        rendering, shapes, pen = draw_image(i, p["seed"], p["image_size"], p["max_shapes"])
        path = os.path.join(out, _image_name(i))
        ok, buf = cv2.imencode(".png", rendering.image, PNG_PARAMS)
        if not ok:
            raise System1Error(f"could not encode image {i}")
        data = buf.tobytes()
        _write_file(path, data)
        with open(path, "rb") as f:         # read back: the file must hold exactly what was encoded
            if f.read() != data:
                raise System1Error(f"image {path} reads back different from what was written")
        objs = []
        for shape, box, sboxes in zip(shapes, rendering.shape_boxes, rendering.stroke_boxes):
            if box is None:
                continue
            objs.append({"bbox": box, "shape_name": shape.name, "action_program": shape.program,
                         "start_coordinates": [round(v, 4) for v in shape.start],
                         "start_orientation": round(shape.orientation, 4), "scaling_factor": round(shape.scale, 4),
                         "strokes": [{"stroke_index": k, "type": a.kind, "style": a.style, "action": str(a), "bbox": b}
                                     for k, (a, b) in enumerate(zip(shape.actions, sboxes)) if b is not None]})
        records.append({"index": i, "pen_width": round(pen, 3), "shapes": objs, "png_bytes": len(data),
                        "png_crc32": zlib.crc32(data)})
    write_json_atomic(_part_path(out, start, stop), records, indent=None)
    return chunk, records


def _chunk_size(num_images, workers):
    return max(16, min(256, math.ceil(num_images / (max(workers, 1) * 4))))


def _chunks(num_images, size):
    return [(c, s, min(s + size, num_images)) for c, s in enumerate(range(0, num_images, size))]


def _read_manifest(out):
    path = os.path.join(out, "dataset.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise System1Error(f"{path} is not valid JSON ({exc}); delete the folder or choose another --out")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("params", {}), dict):
        raise System1Error(f"{path} is not a dataset manifest; delete the folder or choose another --out")
    return manifest


class _Assembler:
    """Builds the two COCO files from the chunks' records, fed chunk by chunk in index order (while
    the workers draw the next ones), so that ids are consecutive as in the real set."""

    def __init__(self, params):
        self.params = params
        self.vals = val_ids(params["num_images"], params["seed"], params["val_fraction"])
        self.images, self.shape_anns, self.stroke_anns = [], [], []
        self.written = []          # {index, png_bytes, png_crc32} of every image, for the final check

    def add(self, records):
        size = self.params["image_size"]
        shape_anns, stroke_anns = self.shape_anns, self.stroke_anns
        for rec in records:
            i = rec["index"]
            image_id = i + 1
            self.written.append({"index": i, "png_bytes": rec["png_bytes"], "png_crc32": rec["png_crc32"]})
            self.images.append({"id": image_id, "file_name": _image_name(i), "width": size, "height": size,
                                "split": "val" if i in self.vals else "train", "num_shapes": len(rec["shapes"]),
                                "pen_width": rec["pen_width"], "png_crc32": rec["png_crc32"]})
            for s_idx, obj in enumerate(rec["shapes"]):
                shape_id = len(shape_anns) + 1
                strokes = []
                for st in obj["strokes"]:
                    stroke_id = len(stroke_anns) + 1
                    b = st["bbox"]
                    stroke_anns.append({"id": stroke_id, "image_id": image_id,
                                        "category_id": STROKE_CATEGORY_ID[st["type"]], "bbox": b,
                                        "area": b[2] * b[3], "iscrowd": 0, "style": st["style"],
                                        "action": st["action"], "shape_ann_id": shape_id,
                                        "shape_index": s_idx, "stroke_index": st["stroke_index"]})
                    strokes.append(dict(st, stroke_ann_id=stroke_id))
                b = obj["bbox"]
                shape_anns.append({"id": shape_id, "image_id": image_id, "category_id": 1, "bbox": b,
                                   "area": b[2] * b[3], "iscrowd": 0, "shape_name": obj["shape_name"],
                                   "shape_index": s_idx, "action_program": obj["action_program"],
                                   "strokes": strokes, "start_coordinates": obj["start_coordinates"],
                                   "start_orientation": obj["start_orientation"],
                                   "scaling_factor": obj["scaling_factor"]})

    def write(self, out):
        info = {"description": "synthetic Bongard-LOGO (bongard-system1)", "params": self.params}
        # indent=None: the json module's C encoder, several times faster on large files
        write_json_atomic(os.path.join(out, "shapes_coco.json"), {"info": info, "categories": SHAPE_CATEGORIES,
                          "images": self.images, "annotations": self.shape_anns}, indent=None)
        write_json_atomic(os.path.join(out, "strokes_coco.json"), {"info": info, "categories": STROKE_CATEGORIES,
                          "images": self.images, "annotations": self.stroke_anns}, indent=None)
        return len(self.images), len(self.shape_anns), len(self.stroke_anns), len(self.vals)


def _read_part(out, start, stop):
    """The records of the finished chunk of images ``start`` to ``stop - 1``, or None when its part
    file is unreadable or holds other images (the chunk is then redone)."""
    try:
        with open(_part_path(out, start, stop)) as f:
            records = json.load(f)
        if [r["index"] for r in records] != list(range(start, stop)):
            return None
        if not all(isinstance(r.get("shapes"), list) and "pen_width" in r and isinstance(r.get("png_bytes"), int)
                   and isinstance(r.get("png_crc32"), int) for r in records):
            return None
        return records
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _part_path(out, start, stop):
    return os.path.join(out, ".parts", f"images_{start:07d}_{stop:07d}.json")


def _holds_what_was_written(path, crc, size=None) -> bool:
    """The file is there with the bytes that were written (their CRC-32, and length when given)."""
    try:
        with open(path, "rb") as f:
            data = f.read() if size is None else f.read(size + 1)
    except OSError:
        return False
    return (size is None or len(data) == size) and zlib.crc32(data) == crc


def _first_changed(out, records):
    """The first image of a chunk's records that is missing or not the bytes that were written, or None."""
    for rec in records:
        path = os.path.join(out, _image_name(rec["index"]))
        if not _holds_what_was_written(path, rec["png_crc32"], rec["png_bytes"]):
            return path
    return None


def image_is_whole(path, height, width) -> bool:
    """The image is there, decodes, and has the size its record says."""
    arr = cv2.imread(path, cv2.IMREAD_GRAYSCALE) if os.path.isfile(path) else None   # no OpenCV warning
    return arr is not None and arr.shape == (height, width)


def _image_ok(path, height, width, crc) -> bool:
    """The image holds the bytes written, when its record has their CRC-32 (fast, and no decoder
    complains on stderr about a damaged file); else (an older dataset) it decodes to the size its
    record says."""
    if isinstance(crc, int):
        return _holds_what_was_written(path, crc)
    return image_is_whole(path, height, width)


def _unreadable(job):
    """The images of a list that are missing, damaged, unreadable or of the wrong size."""
    out, items = job
    return [name for name, h, w, crc in items if not _image_ok(os.path.join(out, name), h, w, crc)]


def validate_dataset(out, workers=1, redraw_params=None, strict=False) -> dict:
    """Check a finished dataset: both COCO files parse, every image is there and readable, counts
    match. With ``redraw_params`` (the dataset's parameters), missing or damaged images are drawn
    again first (``redrawn`` in the result says how many); ``strict``: only those whose record keeps
    the CRC-32 of their bytes, so that a redrawn image is known to be the one recorded. A dataset
    that is not what its files record is a :class:`DatasetDamaged`."""
    from .coco import read_coco
    counts, docs = {}, {}
    for name in ("shapes_coco.json", "strokes_coco.json"):
        try:
            docs[name] = read_coco(os.path.join(out, name), sized=True)
        except System1Error as exc:
            raise DatasetDamaged(str(exc)) from None
        counts[name] = (len(docs[name]["images"]), len(docs[name]["annotations"]))
    images = docs["shapes_coco.json"]["images"]
    manifest = _read_manifest(out) or {}
    expected = manifest.get("params", {}).get("num_images", len(images))
    if len(images) != expected:
        raise DatasetDamaged(f"{len(images)} image records, expected {expected}")
    bad = damaged_images(out, images, workers)
    redrawn = 0
    if bad and redraw_params is not None:
        redrawn = _repair(out, redraw_params, bad, images, strict)
        names = set(bad)
        bad = damaged_images(out, [im for im in images if im["file_name"] in names])
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DatasetDamaged(f"image {os.path.join(out, bad[0])}{more} is missing, damaged, unreadable or not the "
                             "size its record says")
    return {"images": len(images), "shapes": counts["shapes_coco.json"][1], "strokes": counts["strokes_coco.json"][1],
            "redrawn": redrawn}


def damaged_images(out, images, workers=1) -> list[str]:
    """The file names of the COCO ``images`` (of the dataset in ``out``) that are missing, damaged,
    unreadable or of the wrong size."""
    items = [(im["file_name"], im["height"], im["width"], im.get("png_crc32")) for im in images]
    workers = max(1, min(int(workers), usable_cores()))
    step = max(1, math.ceil(len(items) / (workers * 4)))
    jobs = [(out, items[k:k + step]) for k in range(0, len(items), step)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            return [name for names in pool.map(_unreadable, jobs) for name in names]
    return [name for names in map(_unreadable, jobs) for name in names]


def repair_dataset(out, workers=None) -> dict:
    """Check a finished dataset (see :func:`validate_dataset`) and draw its missing or damaged images
    again from the parameters its manifest records, only where the CRC-32 recorded for an image
    proves the redrawn one the same bytes, so its COCO files stay true. Returns the counts,
    ``redrawn`` among them; a dataset that cannot be so repaired is a :class:`DatasetDamaged`, and
    a repair that cannot be written (a full disk) a System1Error."""
    params = (_read_manifest(out) or {}).get("params") or None     # the pipeline checked its sha256 first
    return validate_dataset(out, int(workers or usable_cores()), redraw_params=params, strict=True)


def _repair(out, params, names, images, strict=False) -> int:
    """Redraw the damaged images ``names`` of a complete dataset (each image comes from its own
    seeded stream, so it is drawn again exactly); returns how many were redrawn. Refuses a name
    the generator does not make, a redrawn image whose bytes differ from the CRC-32 recorded, and
    (``strict``) one whose record keeps no CRC-32."""
    crcs = {im["file_name"]: im.get("png_crc32") for im in images}
    for name in names:
        path = os.path.join(out, name)
        stem = os.path.basename(name)[:-len(".png")] if name.endswith(".png") else ""
        if not (stem.isascii() and stem.isdigit()) or name != _image_name(int(stem)):
            raise DatasetDamaged(f"{path} is damaged and is not an image this generator draws",
                                 "delete the folder or choose another --out")
        if strict and not isinstance(crcs.get(name), int):
            raise DatasetDamaged(f"{path} is missing or damaged, and its record keeps no CRC-32 (a dataset "
                                 "made before 2026-12-07) to prove a redrawn image the same",
                                 "delete the folder and generate it again")
        index = int(stem)
        rendering, _, _ = draw_image(index, params["seed"], params["image_size"], params["max_shapes"])
        ok, buf = cv2.imencode(".png", rendering.image, PNG_PARAMS)
        data = buf.tobytes()
        if not ok or (isinstance(crcs.get(name), int) and zlib.crc32(data) != crcs[name]):
            raise DatasetDamaged(f"{path} is damaged, and drawing it again does not give the image recorded "
                                 "(another OpenCV or generator version?)", "delete the folder and generate it again")
        try:
            _write_file(os.path.join(out, name), data)
        except OSError as exc:
            raise System1Error(f"cannot repair {os.path.join(out, name)}: {exc.strerror or exc}") from None
    return len(names)


def generate_dataset(out_dir, num_images, image_size, seed=0, workers=None, val_fraction=0.1, max_shapes=3,
                     progress=True, quiet=False) -> dict:
    """Generate (or finish, or confirm) a dataset in ``out_dir``; returns its manifest."""
    _check_args(num_images, image_size, val_fraction, max_shapes, workers)
    out = os.path.abspath(out_dir)
    params = dataset_params(num_images, image_size, seed, val_fraction, max_shapes)
    manifest = _read_manifest(out)
    if manifest is not None:
        if manifest.get("params") != params:
            raise System1Error(f"{out_dir} holds a dataset made with other arguments "
                               f"({config_diff(manifest.get('params', {}), params)}); use another --out or delete it")
        if manifest.get("status") == "complete":
            counts = validate_dataset(out, int(workers or usable_cores()), redraw_params=params)
            if not quiet:
                fixed = f"; {counts['redrawn']} damaged or missing image(s) drawn again" if counts["redrawn"] else ""
                print(f"dataset already complete in {out_dir}: {counted(counts['images'], 'image')}, "
                      f"{counted(counts['shapes'], 'shape')}, {counted(counts['strokes'], 'stroke')} (checked{fixed})")
            return manifest
    elif os.path.isdir(out) and os.listdir(out):
        raise System1Error(f"{out_dir} exists and is not a dataset folder made by 'system1 generate'; "
                           "choose an empty or new folder")
    try:
        os.makedirs(os.path.join(out, "images"), exist_ok=True)
        os.makedirs(os.path.join(out, ".parts"), exist_ok=True)
        workers = int(workers or usable_cores())
        if manifest is None or not isinstance(manifest.get("chunk_size"), int) or manifest["chunk_size"] < 1:
            # The chunks are fixed by the first run, so a resumed run finds its parts whatever --workers is.
            manifest = {"params": params, "status": "in_progress",
                        "chunk_size": _chunk_size(params["num_images"], workers)}
            write_json_atomic(os.path.join(out, "dataset.json"), manifest)
    except OSError as exc:
        raise System1Error(f"cannot write to {out_dir}: {exc.strerror or exc}")

    chunks = _chunks(params["num_images"], manifest["chunk_size"])
    todo = [c for c in chunks if not os.path.exists(_part_path(out, c[1], c[2]))]
    done_images = params["num_images"] - sum(b - a for _, a, b in todo)
    assembler = _Assembler(params)
    from tqdm import tqdm
    bar = tqdm(total=params["num_images"], initial=done_images, unit="img", desc="generate",
               disable=not progress or not todo, file=sys.stderr)
    jobs = [(out, c, a, b, params) for c, a, b in todo]
    try:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs))) if workers > 1 and len(jobs) > 1 else None
        try:
            results = pool.map(_work_chunk, jobs) if pool else map(_work_chunk, jobs)
            todo_ids = {c for c, _, _ in todo}
            for chunk, a, b in chunks:           # in index order: finished parts from disk, new ones as they come
                if chunk in todo_ids:
                    _, records = next(results)
                    bar.update(len(records))
                else:
                    records = _read_part(out, a, b)
                    if records is None or _first_changed(out, records) is not None:
                        _, records = _work_chunk((out, chunk, a, b, params))     # redraw it whole
                assembler.add(records)
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
        n_img, n_shapes, n_strokes, n_val = assembler.write(out)
    except OSError as exc:
        raise _write_failed(exc)
    finally:
        bar.close()
    if n_img != params["num_images"]:
        raise DatasetDamaged(f"{n_img} image records, expected {params['num_images']}")
    bad = _first_changed(out, assembler.written)      # every image there, with the bytes that were written
    if bad:
        raise DatasetDamaged(f"image {bad} is missing or not the bytes that were written")
    counts = {"images": n_img, "shapes": n_shapes, "strokes": n_strokes}
    manifest = {"params": params, "status": "complete", "num_images": n_img, "num_train": n_img - n_val,
                "num_val": n_val, "num_shapes": n_shapes, "num_strokes": n_strokes,
                "split": "val: the first round(N*val_fraction) indices of a permutation of the image indices "
                         "seeded by seed (generate.val_ids); each image's record says its split"}
    try:
        write_json_atomic(os.path.join(out, "dataset.json"), manifest)
    except OSError as exc:
        raise _write_failed(exc)
    shutil.rmtree(os.path.join(out, ".parts"), ignore_errors=True)
    if not quiet:
        print(f"dataset complete in {out_dir}: {counted(counts['images'], 'image')} ({number(n_img - n_val)} train, "
              f"{number(n_val)} val), {counted(counts['shapes'], 'shape')}, {counted(counts['strokes'], 'stroke')}; "
              "all images checked")
    return manifest


def _write_failed(exc: OSError) -> System1Error:
    return System1Error(f"writing the dataset failed: {os_error_text(exc)}; "
                        "finished images are kept: run the same command again to resume")


def cli_generate(args):
    workers = None if args.workers is None else max(1, args.workers)      # 0: one process, as the pipeline's
    generate_dataset(args.out, args.num_images, args.image_size, seed=args.seed, workers=workers,
                     val_fraction=args.val_fraction, max_shapes=args.max_shapes,
                     progress=not args.no_progress and sys.stderr.isatty())
    return 0
