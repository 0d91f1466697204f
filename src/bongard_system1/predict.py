"""Inference: load a trained System 1 model, detect shapes and strokes, write COCO results and overlays.

``System1.load(path).detect(image)`` returns :class:`Detection` objects in the image's own pixels.
The network sees the image and, by default, three mirror images of it (``views``); their
detections are fused, and stroke detections of one type (line or arc) are merged across styles
(the style is the class whose scores over the views sum highest). Then, where the model carries a
stamp vote (:mod:`stamps`), stroke styles are re-read from the holes inside their stamps. Stroke boxes
then meet the ink (``stroke_mode``: ``snap``, the default, or ``model``; see :func:`snap_stroke_to_ink`),
and so do shape boxes (``shape_mode``):

* ``model``: the network's boxes as they are;
* ``snap``: each edge moves to the outermost ink within a few pixels of it, never further;
* ``hybrid`` (default): the ink's connected components (see :mod:`baseline`) give exact boxes
  wherever the network agrees that a component is one shape; where the network is confident of two or
  more shapes inside one component (shapes that touch or cross), its own snapped boxes are used, and
  where it is less sure, they are kept too, ranked below every component.

Images are resized for the network to its test size (see :mod:`settings`), and the network runs
under bf16 autocast where the device multiplies bf16 fast (see :mod:`precision`; ``amp=False``: fp32).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from . import STYLES
from .baseline import classical_shapes, clean_page
from .boxes import fraction_inside, iou_xywh
from .errors import System1Error
from .grouping import ImageParse, parse_detections
from .io_utils import write_image
from .precision import autocast, autocast_dtype
from .settings import (FUSE_IOU, HYBRID_CONFIDENT, HYBRID_PARTS_MIN, HYBRID_WHOLE, MAX_TEST_SIZES,
                       OVERLAY_MIN_SCORE, PARSE_MIN_SCORE, STROKE_SNAP_INSIDE, STROKE_SNAP_OUTSIDE,
                       TEST_SIZE_RANGE, TEST_VIEWS, default_test_size)
from .rescore import RESCORE_MIN_SCORE, stroke_features
from .rescore_shapes import shape_features
from .views import MAX_VIEWS, fuse, to_original, view_images
from .wording import counted

CHECKPOINT_FORMAT = "bongard-system1/1"


@dataclass
class Detection:
    bbox: list            # [x, y, w, h] in the image's pixels
    score: float
    category: str         # shape, line or arc
    style: str | None = None

    def to_dict(self):
        d = asdict(self)
        if d["style"] is None:
            d.pop("style")
        return d


def as_gray(image) -> np.ndarray:
    """A path, a PIL image or an array -> a 2-D uint8 gray image, black ink on white.

    Files are read as OpenCV reads them in gray (16 bits shifted to 8, a JPEG's EXIF orientation
    applied); one with an alpha channel is laid over a white page. Arrays may be H x W (gray) or
    H x W x 1, 3 or 4 (BGR, alpha laid over white) of any integer, float or bool type: uint16 is
    shifted to 8 bits as OpenCV does, numbers whose maximum is at most 1 (floats, bools, 0/1
    integers) are taken as 0..1, others clipped to 0..255. PIL images are taken in their own
    channel order (RGB). Anything else is a :class:`System1Error` naming it. A lossy file (JPEG,
    lossy WebP) or an off-white page has its page made pure white (:func:`baseline.clean_page`),
    since ink is every pixel darker than 255; a clean page is left as it is."""
    if isinstance(image, (str, os.PathLike)):
        return _read_gray(os.fspath(image))
    if type(image).__module__.startswith("PIL."):      # a JPEG opened with PIL is cleaned as its file is
        return _array_to_gray(_pil_to_array(image), "image", lossy=getattr(image, "format", None) in ("JPEG", "MPO"))
    if image is None or isinstance(image, (bytes, bytearray, dict, set)) or np.isscalar(image):
        raise System1Error(f"image: expected a path, a PIL image or an array, got {type(image).__name__}")
    return _array_to_gray(np.asarray(image), "image")


def _read_gray(path: str) -> np.ndarray:
    arr = cv2.imread(path, cv2.IMREAD_GRAYSCALE) if os.path.isfile(path) else None
    if arr is None:
        raise System1Error(f"image {path} is missing or unreadable")
    lossy = _is_lossy(path)
    if _may_have_alpha(path):
        full = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if full is not None and full.ndim == 3 and full.shape[2] == 4:
            return _array_to_gray(full, f"image {path}", lossy=lossy)
    return clean_page(arr, lossy=lossy)


def _is_lossy(path: str) -> bool:
    """Whether a file is stored lossily, by its bytes, not its name: a JPEG, or a WebP whose image is
    a lossy ``VP8 `` chunk (simple, or inside the extended format's ``VP8X`` layout)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if head[:3] == b"\xff\xd8\xff":
                return True
            if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
                return False
            while True:                                   # the WebP's chunks: VP8 (lossy), VP8L, ALPH, ...
                chunk = f.read(8)
                if len(chunk) < 8:
                    return False
                if chunk[:4] == b"VP8 ":
                    return True
                size = int.from_bytes(chunk[4:8], "little")
                f.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return False


def _may_have_alpha(path: str) -> bool:
    """Whether a file may carry an alpha channel: a PNG says so in its header (colour types 4 and 6);
    WebP and TIFF files are read in full to see."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".webp", ".tif", ".tiff"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return False
    return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26 and head[25] in (4, 6)


def _pil_to_array(image) -> np.ndarray:
    """A PIL image as an array in this module's conventions (BGR channel order, 16 bits as uint16)."""
    mode = image.mode
    if mode not in ("L", "RGB", "RGBA", "I", "I;16", "I;16L", "I;16B", "F"):
        image, mode = image.convert("RGBA"), "RGBA"       # palette, LA, 1-bit, CMYK, ...: as they show
    arr = np.asarray(image)
    if mode == "RGB":
        return arr[..., ::-1]
    if mode == "RGBA":
        return arr[..., [2, 1, 0, 3]]
    if mode == "I" and arr.size and arr.max() > 255:      # 32-bit integers holding a 16-bit image
        return np.clip(arr, 0, 65535).astype(np.uint16)
    return arr


def check_image_files(paths, hint: str) -> None:
    """Every path is an image :func:`as_gray` reads, or one System1Error naming the first bad one,
    how many more there are, and ``hint``: checked before any inference, since reading a thousand
    images takes seconds and a bad last one would otherwise throw away minutes of work."""
    bad = []
    for path in paths:
        try:
            as_gray(path)
        except System1Error as exc:
            bad.append(str(exc))
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise System1Error(f"{bad[0]}{more}; {hint}")


def _array_to_gray(arr: np.ndarray, what: str, lossy: bool = False) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise System1Error(f"{what}: expected H x W (gray) or H x W x 1, 3 or 4 (channels last), "
                           f"got an array of shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise System1Error(f"{what} is empty (shape {arr.shape})")
    if arr.dtype == np.uint8:
        arr8 = arr
    elif arr.dtype == bool or (np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.complexfloating)):
        vals = arr.astype(np.float64)
        if not np.isfinite(vals).all():
            raise System1Error(f"{what} has NaN or infinite values")
        if arr.dtype == np.uint16:
            vals = np.floor(vals / 256.0)           # as OpenCV reads a 16-bit file in 8 bits
        elif vals.max() <= 1.0:
            vals = vals * 255.0
        arr8 = np.clip(np.rint(vals), 0, 255).astype(np.uint8)
    else:
        raise System1Error(f"{what}: expected numbers, got an array of {arr.dtype}")
    if arr8.ndim == 2:
        return clean_page(arr8, lossy)
    gray = cv2.cvtColor(np.ascontiguousarray(arr8[..., :3]), cv2.COLOR_BGR2GRAY)
    if arr8.shape[2] == 4:          # alpha: ink over a white page
        alpha = arr8[..., 3].astype(np.float32) / 255.0
        gray = np.rint(gray * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return clean_page(gray, lossy)


def snap_to_ink(gray: np.ndarray, box_xyxy, margin: int = 6):
    """Move each edge of a box to the outermost ink pixel within ``margin`` pixels of it."""
    h, w = gray.shape
    x0, y0, x1, y1 = box_xyxy
    ox0, oy0 = max(int(np.floor(x0)) - margin, 0), max(int(np.floor(y0)) - margin, 0)
    ox1, oy1 = min(int(np.ceil(x1)) + margin, w), min(int(np.ceil(y1)) + margin, h)
    ix0, iy0 = min(int(np.ceil(x0)) + margin, w), min(int(np.ceil(y0)) + margin, h)
    ix1, iy1 = max(int(np.floor(x1)) - margin, 0), max(int(np.floor(y1)) - margin, 0)
    if ox1 <= ox0 or oy1 <= oy0:
        return box_xyxy
    ink = gray[oy0:oy1, ox0:ox1] < 255
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return box_xyxy
    nx0, nx1 = ox0 + cols[0], ox0 + cols[-1] + 1
    ny0, ny1 = oy0 + rows[0], oy0 + rows[-1] + 1
    # never shrink past the inner band: the ink there decides nothing about the edge
    nx0, ny0 = min(nx0, max(ix0, ox0)), min(ny0, max(iy0, oy0))
    nx1, ny1 = max(nx1, min(ix1, ox1)), max(ny1, min(iy1, oy1))
    return [float(nx0), float(ny0), float(nx1), float(ny1)]


def _edge_to_ink(profile: np.ndarray, edge: int, inward: int, outward: int, upper: bool):
    """Where one box edge meets the ink along ``profile`` (ink per column or row over the box's span):
    the outermost ink within ``inward`` pixels inside and ``outward`` outside the edge, or None when
    there is none or the ink runs on just past that band (the stroke meets a neighbour there)."""
    n = len(profile)
    if upper:        # a right or bottom edge: exclusive end, inside is below it
        lo, hi = max(0, edge - inward), min(n, edge + outward)
        if hi < n and profile[hi]:
            return None
        idx = np.flatnonzero(profile[lo:hi])
        return None if idx.size == 0 else lo + int(idx[-1]) + 1
    lo, hi = max(0, edge - outward), min(n, edge + inward)
    if lo > 0 and profile[lo - 1]:
        return None
    idx = np.flatnonzero(profile[lo:hi])
    return None if idx.size == 0 else lo + int(idx[0])


def snap_stroke_to_ink(ink: np.ndarray, box_xyxy, inward: int = STROKE_SNAP_INSIDE,
                       outward: int = STROKE_SNAP_OUTSIDE):
    """A stroke box (xyxy) whose edges meet the ink (``ink``: a boolean image, True where drawn).

    Each edge moves to the outermost ink, over the box's span, among the ``inward`` pixel rows (or
    columns) just inside it and the ``outward`` ones just outside it: so it moves at most
    ``inward - 1`` pixels in and ``outward`` out. An edge stays where the ink runs on past that band: strokes of one
    shape join end to end, so there the ink says nothing about where this stroke ends. The box keeps
    its edges if it would collapse.
    """
    h, w = ink.shape
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    ix0, iy0 = max(0, int(round(x0))), max(0, int(round(y0)))
    ix1, iy1 = min(w, int(round(x1))), min(h, int(round(y1)))
    if ix1 - ix0 < 2 or iy1 - iy0 < 2:
        return [x0, y0, x1, y1]
    # ink per column and per row over the box's span, read only near the edges (the band and the
    # line just past it): a full profile would cost a pass over the image's height per detection
    r = max(inward, outward) + 1
    cols, rows = np.zeros(w, bool), np.zeros(h, bool)
    for e in (ix0, ix1):
        cols[max(0, e - r):e + r] = ink[iy0:iy1, max(0, e - r):e + r].any(axis=0)
    for e in (iy0, iy1):
        rows[max(0, e - r):e + r] = ink[max(0, e - r):e + r, ix0:ix1].any(axis=1)
    moved = [_edge_to_ink(cols, ix0, inward, outward, False), _edge_to_ink(rows, iy0, inward, outward, False),
             _edge_to_ink(cols, ix1, inward, outward, True), _edge_to_ink(rows, iy1, inward, outward, True)]
    out = [float(m) if m is not None else v for m, v in zip(moved, (x0, y0, x1, y1))]
    if out[2] - out[0] < 1 or out[3] - out[1] < 1:
        return [x0, y0, x1, y1]
    return out


SHAPE_MODES = ("hybrid", "snap", "model")
STROKE_MODES = ("snap", "model")


LEFTOVER_FLOOR, LEFTOVER_SPAN = 0.05, 0.2     # hybrid shapes no ink component explains: 0.05 to 0.25


def hybrid_shapes(gray, model_shapes, confident=HYBRID_CONFIDENT, same=0.8, whole=HYBRID_WHOLE,
                  parts_min=HYBRID_PARTS_MIN, components=None):
    """Shape boxes from ink components where the network agrees, from the network where shapes touch.

    Every component is a candidate, ranked by the network's score for it (scores in [0.5, 1]). When
    the network is confident (>= ``confident``) of two or more distinct shapes inside one component,
    and does not also see the component as one shape (no box at IoU >= ``same`` with it scored
    ``whole`` or more), those boxes replace it and the component drops to 0.25. Network boxes that
    no component explains are kept below every component (``LEFTOVER_FLOOR + LEFTOVER_SPAN x score``:
    0.05 to 0.25, so the default threshold keeps them, in the network's order); those that match a
    component (IoU >= 0.5) are dropped as its duplicates, unless the component is one the network
    sees two or more distinct shapes inside, scored ``parts_min`` or more, and did not split: those
    shapes stay, with the leftovers (a shape that touches a smaller one can match their joint
    component). ``components``: ``baseline.classical_shapes(gray)`` when the caller has it already.
    ``confident`` was chosen on synthetic validation images (shapes AP 0.883 at 0.7, 0.884
    at 0.6, 0.870 at 0.5, 0.826 at 0.4), and so were ``whole`` and ``parts_min`` (see :mod:`settings`).
    """
    comps = [c["bbox"] for c in (classical_shapes(gray) if components is None else components)]
    out, used = [], set()
    order = sorted(range(len(model_shapes)), key=lambda k: -model_shapes[k].score)
    for c in comps:
        ious = [iou_xywh(d.bbox, c) for d in model_shapes]
        parts = []          # distinct shapes clearly smaller than the component, best first
        for k in order:
            d = model_shapes[k]
            if d.score < min(confident, parts_min) or fraction_inside(d.bbox, c) < 0.85 or ious[k] >= same:
                continue
            if all(iou_xywh(d.bbox, p.bbox) < 0.5 for _, p in parts):
                parts.append((k, d))
        sure = [(k, d) for k, d in parts if d.score >= confident]
        matched = [k for k, iou in enumerate(ious) if iou >= 0.5]
        seen_whole = max((d.score for d, iou in zip(model_shapes, ious) if iou >= same), default=0.0)
        box = list(map(float, c))
        if len(sure) >= 2 and seen_whole < whole:
            out.extend(Detection(d.bbox, 0.5 + 0.5 * d.score, "shape") for _, d in sure)
            used.update(k for k, _ in sure)
            out.append(Detection(box, 0.25, "shape"))
        else:
            out.append(Detection(box, 0.5 + 0.5 * max((model_shapes[k].score for k in matched), default=0.0), "shape"))
            kept = {k for k, d in parts if d.score >= parts_min}
            if len(kept) >= 2:      # shapes inside it, not duplicates of it: they stay, with the leftovers
                matched = [k for k in matched if k not in kept]
        used.update(matched)
    out.extend(Detection(d.bbox, LEFTOVER_FLOOR + LEFTOVER_SPAN * d.score, "shape")
               for k, d in enumerate(model_shapes) if k not in used)
    return out


def refine_shapes(gray, shapes: list[Detection], mode: str) -> list[Detection]:
    """The network's shape detections as ``mode`` (model, snap or hybrid) makes them meet the ink."""
    if mode == "model":
        return list(shapes)
    snapped = []
    for d in shapes:
        x0, y0, x1, y1 = snap_to_ink(gray, [d.bbox[0], d.bbox[1], d.bbox[0] + d.bbox[2], d.bbox[1] + d.bbox[3]])
        snapped.append(Detection([x0, y0, x1 - x0, y1 - y0], d.score, d.category, d.style))
    return hybrid_shapes(gray, snapped) if mode == "hybrid" else snapped


def refine_strokes(gray, strokes: list[Detection], mode: str) -> list[Detection]:
    """Stroke detections as ``mode`` makes them meet the ink: ``snap`` (:func:`snap_stroke_to_ink`) or
    ``model`` (the network's boxes as they are)."""
    if mode not in STROKE_MODES:
        raise System1Error(f"unknown stroke mode {mode!r} (expected one of {', '.join(STROKE_MODES)})")
    if mode == "model" or not strokes:
        return list(strokes)
    ink = gray < 255
    out = []
    for d in strokes:
        x0, y0, x1, y1 = snap_stroke_to_ink(ink, [d.bbox[0], d.bbox[1], d.bbox[0] + d.bbox[2], d.bbox[1] + d.bbox[3]])
        out.append(Detection([x0, y0, x1 - x0, y1 - y0], d.score, d.category, d.style))
    return out


def resolve_model_path(path) -> str:
    if os.path.isdir(path):
        cand = os.path.join(path, "best.pt")
        if not os.path.exists(cand):
            raise System1Error(f"{path} has no best.pt (is it a finished training run folder?)")
        return cand
    if not os.path.exists(path):
        raise System1Error(f"model {path} not found")
    return path


class System1:
    """A trained detector ready for inference."""

    def __init__(self, model, model_config: dict, names: list[str], device="cpu", shape_mode="hybrid",
                 test_size: int | tuple[int, ...] | None = None, stamp_vote=None, views: int = 1,
                 amp: bool = True, stroke_mode: str = "snap", rescorer=None):
        """``test_size``: the size images are resized to for the network (None: the training size, as
        in validation during training), or several sizes (a tuple): the views at every size are fused
        as one set of views. It is set on ``model.transform``, so it holds for every user of that model
        object; :meth:`load` gives each call its own model. ``stamp_vote``: a
        :class:`stamps.StampVote` or None. ``views``: how many views of each image the network sees
        (1 to 8, see :mod:`views`). ``amp``: run the network under autocast where the device has fast
        bf16 or fp16 (:func:`precision.autocast_dtype`: CUDA, and CPUs with AMX or AVX-512 BF16); False: fp32.
        ``stroke_mode``: ``snap`` (stroke boxes meet the ink) or ``model`` (as the network gives them).
        ``rescorer``: a :class:`rescore.Rescorer` or None; it is used only if it was trained for these
        views, test sizes and stroke mode (``self.rescorer`` is None otherwise)."""
        if shape_mode not in SHAPE_MODES:
            raise System1Error(f"unknown shape mode {shape_mode!r} (expected one of {', '.join(SHAPE_MODES)})")
        if stroke_mode not in STROKE_MODES:
            raise System1Error(f"unknown stroke mode {stroke_mode!r} (expected one of {', '.join(STROKE_MODES)})")
        if not 1 <= int(views) <= MAX_VIEWS:
            raise System1Error(f"views must be 1 to {MAX_VIEWS}, got {views!r}")
        self.views = int(views)
        lo, hi = TEST_SIZE_RANGE
        sizes = tuple(test_size) if isinstance(test_size, (tuple, list)) else (test_size,)
        if test_size is not None and not (1 <= len(sizes) <= MAX_TEST_SIZES and len(set(sizes)) == len(sizes)
                                          and all(lo <= int(s) <= hi for s in sizes)):
            raise System1Error(f"test size {test_size} is not 1 to {MAX_TEST_SIZES} distinct sizes of {lo} to {hi} px")
        self.test_sizes = tuple(int(s or model_config["image_size"]) for s in sizes)
        self.test_size = self.test_sizes[0]
        self._set_size(model, self.test_size)
        self.model = model.eval()
        self.config = model_config
        self.names = names
        self.device = device
        self.shape_mode = shape_mode
        self.stroke_mode = stroke_mode
        self.stamp_vote = stamp_vote
        self.device_type = str(device).split(":")[0]          # "cpu" or "cuda", as autocast wants it
        self.amp_dtype = autocast_dtype(self.device_type) if amp else None
        self.rescorer = rescorer if rescorer is not None and rescorer.matches(self) else None

    @staticmethod
    def _set_size(model, size):
        model.transform.min_size = (size,)
        model.transform.max_size = size

    @classmethod
    def load(cls, path, device="auto", shape_mode="hybrid", test_size: int | tuple[int, ...] | None = None,
             stamp_vote: bool = True, views: int | None = None, amp: bool = True,
             stroke_mode: str = "snap", rescore: bool = True) -> "System1":
        """A trained model ready for inference; ``test_size`` None means :func:`default_test_size`;
        ``stamp_vote``: use the stamp vote the checkpoint carries (if any); ``views`` None means
        ``settings.TEST_VIEWS``; ``rescore``: use the rescorer the checkpoint carries (if any, and
        if it was trained for these settings; its shape part only in the hybrid shape mode)."""
        from .train import load_checkpoint_model, resolve_device
        dev = resolve_device(device)
        path = resolve_model_path(path)
        model, ckpt = load_checkpoint_model(path)
        size = test_size if test_size is not None else default_test_size(ckpt["model_config"]["image_size"])
        vote = None
        if stamp_vote and ckpt.get("stamp_vote") is not None:
            from .stamps import StampVote
            try:
                vote = StampVote(ckpt["stamp_vote"]["state_dict"], dev)
            except (KeyError, RuntimeError, TypeError, AttributeError) as exc:
                raise System1Error(f"{path}: its stamp vote does not load ({str(exc).splitlines()[0]})")
        rescorer = None
        if rescore and ckpt.get("rescorer") is not None:
            from .rescore import Rescorer
            try:
                rescorer = Rescorer(ckpt["rescorer"])
            except (KeyError, RuntimeError, TypeError, AttributeError, ValueError) as exc:
                raise System1Error(f"{path}: its rescorer does not load ({str(exc).splitlines()[0]})")
        return cls(model.to(dev), ckpt["model_config"], list(ckpt["class_names"]), dev, shape_mode, size, vote,
                   TEST_VIEWS if views is None else views, amp, stroke_mode, rescorer)

    @property
    def precision(self) -> str:
        """The dtype the network runs in: "bfloat16", "float16" or "float32"."""
        return str(self.amp_dtype).replace("torch.", "") if self.amp_dtype is not None else "float32"

    def detect(self, image, score_threshold=0.05) -> list[Detection]:
        return self.detect_batch([image], score_threshold)[0]

    def parse(self, image, shape_threshold: float = PARSE_MIN_SCORE,
              stroke_threshold: float = PARSE_MIN_SCORE) -> ImageParse:
        """The image's shapes scored ``shape_threshold`` or more, each with the strokes (scored
        ``stroke_threshold`` or more, and lower-scored ones that fill its gaps) drawn in it, and the
        kept strokes no kept shape holds (:func:`grouping.parse_detections`)."""
        gray = as_gray(image)
        return parse_detections(gray, self.detect(gray), shape_threshold, stroke_threshold)

    def detect_batch(self, images, score_threshold=0.05) -> list[list[Detection]]:
        if not (isinstance(score_threshold, (int, float)) and 0.0 <= float(score_threshold) <= 1.0):
            raise System1Error(f"score_threshold: expected a number in [0, 1], got {score_threshold!r}")
        grays = [as_gray(im) for im in images]
        return [self.postprocess(g, o, score_threshold) for g, o in zip(grays, self.network_outputs(grays))]

    def network_outputs(self, grays) -> list[dict]:
        """The network's detections for gray images, every view's in the image's own pixels: a dict of
        ``boxes`` (xyxy), ``scores``, ``labels`` and ``views`` (the view each was seen in; with several
        test sizes, view ``v`` at the ``k``-th size is ``k * views + v``) per image."""
        import torch
        xs = [torch.from_numpy(v).float().div_(255.0)[None].to(self.device)
              for g in grays for v in view_images(g, self.views)]
        raws = []
        try:
            for size in self.test_sizes:
                self._set_size(self.model, size)
                with torch.inference_mode(), autocast(self.device_type, self.amp_dtype):
                    raws.append(self.model(xs))
        finally:
            self._set_size(self.model, self.test_size)
        outs = []
        for k, g in enumerate(grays):
            per_view = [o for raw in raws for o in raw[k * self.views:(k + 1) * self.views]]
            h, w = g.shape
            outs.append({"boxes": torch.cat([to_original(o["boxes"].float().cpu(), v % self.views, w, h)
                                             for v, o in enumerate(per_view)]),
                         "scores": torch.cat([o["scores"].float().cpu() for o in per_view]),
                         "labels": torch.cat([o["labels"].cpu() for o in per_view]),
                         "views": torch.cat([torch.full((len(o["scores"]),), v, dtype=torch.int64)
                                             for v, o in enumerate(per_view)])})
        return outs

    def postprocess(self, gray, out, score_threshold=0.05, stamp_vote=True, rescore=True) -> list[Detection]:
        """Detections from one image's :meth:`network_outputs`: the views fused and strokes merged across
        styles, the stamp vote (if the model has one and ``stamp_vote``), stroke and shape boxes made to
        meet the ink (as ``stroke_mode`` and ``shape_mode`` say), then the strokes rescored (if the model
        has a rescorer that matches how this system runs, and ``rescore``): the fused strokes scored
        ``rescore.RESCORE_MIN_SCORE`` (0.05) or more get new scores from 0.05 to 1 in the rescorer's
        order. Where the rescorer has shape nets (version 3 on) and the shape mode is ``hybrid``, the
        hybrid's shapes, made from the network's shapes scored 0.05 or more, get new scores from 0.05
        to 1 alike. ``score_threshold`` applies to the new scores (and to the hybrid's shape scores):
        every detection returned scores ``score_threshold`` or more."""
        import torch
        all_boxes, all_scores, all_labels = out["boxes"].float().cpu(), out["scores"].float().cpu(), out["labels"].cpu()
        # outputs without view indices (a plain torchvision model's) are one view
        all_views = out.get("views", torch.zeros(len(all_scores), dtype=torch.int64))
        n_views = self.n_views if "views" in out else 1
        rescorer = self.rescorer if rescore and self.rescorer is not None and "views" in out else None
        if rescorer is not None and not rescorer.matches(self):    # views or modes changed since loading
            rescorer = None
        rescore_shapes = rescorer is not None and rescorer.rescores_shapes(self)
        # the rescorer reads the network's strokes and shapes as it was trained to, whatever the threshold
        read_threshold = RESCORE_MIN_SCORE if rescorer is not None else score_threshold
        all_names = [self.names[int(l) - 1] for l in all_labels]
        group_of = {"shape": 0, "line": 1, "arc": 2}
        groups = torch.tensor([group_of[n.split("/")[0]] for n in all_names], dtype=torch.int64)
        boxes, scores, labels = fuse(all_boxes, all_scores, all_labels, all_views, groups, n_views, FUSE_IOU)
        # (read again in float64 below: the tensor compares in float32)
        keep = [i for i in torch.nonzero(scores >= read_threshold).flatten().tolist() if float(scores[i]) >= read_threshold]
        names = [self.names[int(l) - 1] for l in labels]
        cats = [n.split("/")[0] for n in names]
        dets, shapes = [], []
        for i in keep:
            b = boxes[i].tolist()
            style = names[i].split("/")[1] if "/" in names[i] else None
            d = Detection([b[0], b[1], b[2] - b[0], b[3] - b[1]], float(scores[i]), cats[i], style)
            (shapes if cats[i] == "shape" else dets).append(d)
        if stamp_vote and self.stamp_vote is not None and dets:
            strokes = [i for i in keep if cats[i] != "shape"]
            scores_at = self.style_scores(boxes[strokes], [cats[i] for i in strokes], all_boxes, all_scores, all_names,
                                          all_views.numpy(), n_views)
            self.stamp_vote.restyle(gray, dets, scores_at)
        network_shapes = shapes
        if rescore_shapes:      # the hybrid, from what the rescorer reads too: the snapped shapes, the components
            snapped, comps = refine_shapes(gray, shapes, "snap"), classical_shapes(gray)
            shapes = hybrid_shapes(gray, snapped, components=comps)
        else:
            shapes = refine_shapes(gray, shapes, self.shape_mode)
        strokes = refine_strokes(gray, dets, self.stroke_mode)
        if rescore_shapes and shapes:       # the strokes' fused scores are among its features: before theirs change
            new = rescorer.shape_scores(shape_features(gray, shapes, snapped, strokes, out, self.names, n_views,
                                                       components=comps))
            for d, sc in zip(shapes, new.tolist()):
                d.score = RESCORE_MIN_SCORE + (1.0 - RESCORE_MIN_SCORE) * float(sc)
            shapes.sort(key=lambda d: -d.score)
        if rescorer is not None and strokes:
            new = rescorer.scores(stroke_features(gray, strokes, network_shapes, out, self.names, n_views))
            for d, sc in zip(strokes, new.tolist()):     # from RESCORE_MIN_SCORE to 1, as the rescorer ranks them
                d.score = RESCORE_MIN_SCORE + (1.0 - RESCORE_MIN_SCORE) * float(sc)
            strokes = sorted((d for d in strokes if d.score >= score_threshold), key=lambda d: -d.score)
        # the hybrid gives shapes new scores (ink components 0.5 to 1): the threshold holds for those too
        return [d for d in shapes if d.score >= score_threshold] + strokes

    @property
    def n_views(self) -> int:
        """Views the network sees of each image, at every test size together."""
        return self.views * len(self.test_sizes)

    @staticmethod
    def style_scores(boxes, types, all_boxes, all_scores, all_names, all_views=None, n_views=1,
                     same=0.9) -> list[list[float]]:
        """For each stroke box (xyxy) of the given type (line or arc): the network's best score for each
        style of that type (``STYLES`` order) among all its candidates at (nearly) the same box
        (IoU >= ``same``), whatever the score threshold; with several views, the mean over the views
        of each view's best score."""
        from torchvision.ops import box_iou
        if not len(boxes) or not len(all_boxes):
            return [[0.0] * len(STYLES) for _ in range(len(boxes))]
        iou = box_iou(boxes, all_boxes).numpy()
        sc = all_scores.numpy()
        vw = np.zeros(len(sc), np.int64) if all_views is None else np.asarray(all_views)
        out = []
        for row, typ in zip(iou, types):
            near = np.flatnonzero(row >= same)
            out.append([sum(float(max((sc[j] for j in near if vw[j] == v and all_names[j] == f"{typ}/{st}"),
                                      default=0.0)) for v in range(n_views)) / n_views for st in STYLES])
        return out


def draw_overlay(gray, detections, path, min_score: float = OVERLAY_MIN_SCORE):
    """The image with a box and a label (category, style, score) for each detection scored
    ``min_score`` or more: shapes green, lines blue, arcs red."""
    img = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    colours = {"shape": (0, 160, 0), "line": (200, 80, 0), "arc": (0, 0, 220)}
    for d in detections:
        if d.score < min_score:
            continue
        x, y, w, h = [int(round(v)) for v in d.bbox]
        cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), colours[d.category], 1)
        label = d.category if d.style is None else f"{d.category}/{d.style}"
        cv2.putText(img, f"{label} {d.score:.2f}", (x, max(y - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.3,
                    colours[d.category], 1, cv2.LINE_AA)
    write_image(path, img)


def overlay_names(names: list[str]) -> list[str]:
    """One overlay file name per image name (a path relative to the images' folder): the path with
    its folders joined by ``__`` and ``_overlay.png`` for its extension, so that ``bd_x/pos_0.png``
    and ``ff_y/pos_0.png`` do not overwrite each other; where two names still meet (``a.png`` and
    ``a.jpg``), the extension stays in the name, and names that meet even so (``a/b.png`` and
    ``a__b.png``) get ``_2``, ``_3``, ...: every image has an overlay of its own."""
    def flat(name, keep_ext):
        name = name.replace("\\", "/").strip("/")
        stem = name if keep_ext else os.path.splitext(name)[0]
        return stem.replace("/", "__").replace(".", "_" if keep_ext else ".") + "_overlay.png"
    first = [flat(n, False) for n in names]
    counts = Counter(first)
    out = [flat(n, True) if counts[f] > 1 else f for n, f in zip(names, first)]
    seen, taken = Counter(), set(out)
    for i, f in enumerate(out):                # names that still meet get _2, _3, ... in the list's order
        seen[f] += 1
        if seen[f] > 1:
            k = seen[f]
            while f"{f[:-len('_overlay.png')]}_{k}_overlay.png" in taken:
                k += 1
            out[i] = f"{f[:-len('_overlay.png')]}_{k}_overlay.png"
            taken.add(out[i])
    return out


def _image_list(args):
    from .io_utils import IMAGE_SUFFIXES, coco_folder
    if args.coco:
        from .evaluate import load_coco
        from .data.coco import check_usable
        coco = load_coco(args.coco, annotations=False)     # predicting needs images and categories only
        check_usable(coco, args.coco, need_boxes=False)
        root = args.images_root or coco_folder(args.coco)
        cats = {c["name"]: c["id"] for c in coco["categories"]}
        return [(im["id"], im["file_name"], os.path.join(root, im["file_name"])) for im in coco["images"]], cats
    if not os.path.isdir(args.images):
        raise System1Error(f"--images {args.images} is not a folder")
    root = Path(args.images).resolve()
    skip = Path(args.overlay_dir).resolve() if args.overlay_dir else None     # our own overlays, from before,
    if skip is not None and root not in skip.parents:                         # when they lie in a subfolder
        skip = None
    files = sorted(p.relative_to(args.images).as_posix() for p in Path(args.images).rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not (skip is not None and skip in p.resolve().parents))
    if not files:
        raise System1Error(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {args.images} or its subfolders")
    return [(None, f, os.path.join(args.images, f)) for f in files], None


def _check_overlay_dir(args):
    """Not the ``--images`` folder itself: the next run would take the overlays for images."""
    if args.images is not None and Path(args.overlay_dir).resolve() == Path(args.images).resolve():
        raise System1Error(f"--overlay-dir {args.overlay_dir} is the --images folder: the overlays would "
                           f"be read as images next time; give a folder of their own (a subfolder is skipped)")


def _check_overlays_miss_the_inputs(args, items, overlays):
    """No overlay is written over an input image (possible where the overlay folder holds inputs)."""
    where = Path(args.overlay_dir).resolve()
    inputs = {Path(path).resolve() for _, _, path in items}
    for overlay in overlays:
        if (where / overlay).resolve() in inputs:
            raise System1Error(f"--overlay-dir {args.overlay_dir}: the overlay {overlay} would overwrite an "
                               f"input image; give a folder of their own")


def note_flags_the_baseline_ignores(args) -> None:
    """``--model baseline`` has no network: say which of the model's flags given do nothing."""
    if args.model != "baseline":
        return
    given = [flag for flag, on in (("--test-size", args.test_size is not None), ("--views", args.views is not None),
                                   ("--shape-mode", args.shape_mode != "hybrid"),
                                   ("--stroke-mode", args.stroke_mode != "snap"), ("--fp32", args.fp32),
                                   ("--no-stamp-vote", args.no_stamp_vote), ("--no-rescore", args.no_rescore),
                                   ("--device", args.device != "auto")) if on]
    if given:
        print(f"note: {', '.join(given)} {'does' if len(given) == 1 else 'do'} nothing with --model baseline "
              "(ink, dilation and components: no network)", file=sys.stderr)


def cli_predict(args):
    from tqdm import tqdm
    from .data.coco import warn_if_nothing_in_common
    from .io_utils import check_not_an_input, check_output_file, coco_folder, make_output_dir, write_json_atomic
    if args.images is not None and args.images_root is not None:
        raise System1Error("--images-root goes with --coco (the folder its file names are relative to); "
                           "with --images, give the folder there")
    note_flags_the_baseline_ignores(args)
    inputs = [args.coco, args.images, args.images_root or coco_folder(args.coco),
              None if args.model == "baseline" else args.model]
    check_output_file(args.out)
    check_not_an_input(args.out, inputs)
    if args.parse_out is not None:
        check_output_file(args.parse_out, "--parse-out")
        check_not_an_input(args.parse_out, inputs, "--parse-out")
        if Path(args.parse_out).resolve() == Path(args.out).resolve():
            raise System1Error(f"--parse-out {args.parse_out} is the --out file too; give each its own file")
    if args.overlay_dir is not None:
        _check_overlay_dir(args)
        make_output_dir(args.overlay_dir, "--overlay-dir")
    items, cats = _image_list(args)             # the images, every one read once, before the model loads
    check_image_files([path for _, _, path in items],
                      "check --images-root or the file's file_name fields" if args.coco else "remove or fix it")
    overlays = overlay_names([name for _, name, _ in items])
    if args.overlay_dir is not None:
        _check_overlays_miss_the_inputs(args, items, overlays)
    if args.model == "baseline":
        from .baseline import ClassicalBaseline
        detector = ClassicalBaseline()
    else:
        detector = System1.load(args.model, device=args.device, shape_mode=args.shape_mode,
                                test_size=args.test_size, stamp_vote=not args.no_stamp_vote,
                                views=args.views, amp=not args.fp32, stroke_mode=args.stroke_mode,
                                rescore=not args.no_rescore)
    if cats is not None:
        warn_if_nothing_in_common(detector, cats, args.model, args.coco, "no detection will be written to --out")
    if args.parse_out and getattr(detector, "rescorer", True) is None:
        print(f"note: the stroke scores are not rescored (no rescorer for these settings), so "
              f"--parse-min-score {args.parse_min_score:g} keeps other strokes than it was chosen for",
              file=sys.stderr)
    results, parses = [], []
    progress = not args.no_progress and sys.stderr.isatty()
    for (image_id, name, path), overlay in zip(tqdm(items, unit="img", desc="predict", disable=not progress), overlays):
        gray = as_gray(path)
        dets = detector.detect(gray)
        dets = [d if isinstance(d, Detection) else Detection(**d) for d in dets]
        if args.parse_out:
            p = parse_detections(gray, dets, args.parse_min_score, args.parse_min_score).to_dict()
            parses.append({"image_id": image_id, "file_name": name, **p} if image_id is not None
                          else {"file_name": name, **p})
        for d in dets:
            if d.score < args.score_threshold:
                continue
            r = {"bbox": [round(v, 2) for v in d.bbox], "score": round(d.score, 5), "category": d.category}
            if d.style:
                r["style"] = d.style
            if cats is not None:
                if d.category not in cats:
                    continue
                r["image_id"] = image_id
                r["category_id"] = cats[d.category]
            else:
                r["file_name"] = name
            results.append(r)
        if args.overlay_dir:
            draw_overlay(gray, dets, os.path.join(args.overlay_dir, overlay),
                         max(args.overlay_min_score, args.score_threshold))
    write_json_atomic(args.out, results, indent=None)
    print(f"wrote {counted(len(results), 'detection')} for {counted(len(items), 'image')} to {args.out}")
    if args.parse_out:
        write_json_atomic(args.parse_out, parses, indent=None)
        n_shapes = sum(len(p["shapes"]) for p in parses)
        n_strokes = sum(len(s["strokes"]) for p in parses for s in p["shapes"])
        print(f"wrote {n_shapes} shapes holding {n_strokes} strokes (scores >= {args.parse_min_score:g}, and "
              f"lower-scored strokes that fill gaps) to {args.parse_out}")
    return 0
