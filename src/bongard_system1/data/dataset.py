"""The training dataset: COCO shape and stroke boxes as torchvision detection targets, with augmentations.

Boxes are kept in continuous pixel coordinates ``[x0, y0, x1, y1]`` with ``x1 = x + w`` (a box
covers whole pixels). Augmentations move boxes with the pixels exactly: 90-degree rotations,
flips, a scale and translation jitter that keeps all ink inside the image, and a light blur.
Every random draw comes from ``default_rng([seed, epoch, index])``, so a sample does not depend
on the loader's worker count or on an interrupted run.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch

from .. import STYLES
from ..errors import System1Error
from ..model import class_names
from .coco import read_coco


def _load(path):
    """A dataset's COCO file, checked (:func:`coco.read_coco`), with the fields training needs."""
    doc = read_coco(path, sized=True)
    if "strokes" in os.path.basename(str(path)):
        for i, a in enumerate(doc["annotations"]):
            if not isinstance(a.get("style"), str):
                raise System1Error(f"{path}: stroke annotation {i} has no 'style'")
    return doc


def coco_to_targets(data_dir, categories="all", split=None):
    """Per image: file path, size and [(xyxy, class name)] from a dataset folder's COCO files."""
    shapes = _load(os.path.join(data_dir, "shapes_coco.json"))
    strokes_path = os.path.join(data_dir, "strokes_coco.json")
    strokes = _load(strokes_path) if categories != "shapes" else None
    images = [im for im in shapes["images"] if split is None or im.get("split", "train") == split]
    per_image = {im["id"]: [] for im in images}
    if categories in ("shapes", "all"):
        for a in shapes["annotations"]:
            if a["image_id"] in per_image:
                per_image[a["image_id"]].append((a["bbox"], "shape"))
    if strokes is not None:
        cat = {c["id"]: c["name"] for c in strokes["categories"]}
        for a in strokes["annotations"]:
            if a["image_id"] in per_image:
                per_image[a["image_id"]].append((a["bbox"], f"{cat[a['category_id']]}/{a['style']}"))
    known = set(class_names(categories))
    unknown = sorted({n for boxes in per_image.values() for _, n in boxes if n not in known})
    if unknown:
        raise System1Error(f"{data_dir}: classes this model does not know: {', '.join(unknown[:5])} "
                           f"(it knows shape and line or arc with a style of {', '.join(STYLES)})")
    out = []
    for im in images:
        boxes = [[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b, _ in per_image[im["id"]]]
        out.append({"id": im["id"], "path": os.path.join(data_dir, im["file_name"]),
                    "width": im["width"], "height": im["height"], "boxes": boxes,
                    "names": [n for _, n in per_image[im["id"]]]})
    return out


def unreadable_images(records) -> list[str]:
    """Paths of the records' images that are missing, unreadable or not the size their record says."""
    from .generate import image_is_whole
    return [rec["path"] for rec in records if not image_is_whole(rec["path"], rec["height"], rec["width"])]


def read_gray(path):
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE) if os.path.isfile(path) else None
    if img is None:
        raise System1Error(f"image {path} is missing or unreadable")
    return img


def _rot90(img, boxes, k):
    """Rotate counter-clockwise by k*90 degrees (np.rot90) and move the boxes along."""
    for _ in range(k % 4):
        w = img.shape[1]
        img = np.rot90(img)
        # (x, y) -> (y, w - x)
        boxes = np.stack([boxes[:, 1], w - boxes[:, 2], boxes[:, 3], w - boxes[:, 0]], axis=1)
    return np.ascontiguousarray(img), boxes


class DetectionDataset(torch.utils.data.Dataset):
    def __init__(self, data_dir, image_size, categories="all", split="train", augment=True, seed=0):
        self.records = coco_to_targets(data_dir, categories, split)
        self.names = class_names(categories)
        self.label_of = {n: i + 1 for i, n in enumerate(self.names)}
        self.size = int(image_size)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch, size=None):
        """Seed the next epoch's augmentations; ``size``: its image size (progressive resizing)."""
        self.epoch = int(epoch)
        if size is not None:
            self.size = int(size)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, idx):
        rec = self.records[idx]
        img = read_gray(rec["path"])
        boxes = np.asarray(rec["boxes"], np.float64).reshape(-1, 4)
        labels = np.asarray([self.label_of[n] for n in rec["names"]], np.int64)
        h, w = img.shape
        if (h, w) != (self.size, self.size):
            sx, sy = self.size / w, self.size / h
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
            boxes = boxes * np.array([sx, sy, sx, sy])
        if self.augment:
            img, boxes = self._augment(img, boxes, np.random.default_rng([self.seed, self.epoch, idx]))
        x = torch.from_numpy(img).float().div_(255.0)[None]
        target = {"boxes": torch.from_numpy(boxes.astype(np.float32)).reshape(-1, 4),
                  "labels": torch.from_numpy(labels)}
        return x, target

    def _augment(self, img, boxes, rng):
        s = self.size
        img, boxes = _rot90(img, boxes, int(rng.integers(4)))
        if rng.random() < 0.5:
            img = np.ascontiguousarray(img[:, ::-1])
            boxes = np.stack([s - boxes[:, 2], boxes[:, 1], s - boxes[:, 0], boxes[:, 3]], axis=1)
        if len(boxes) and rng.random() < 0.8:
            lo, hi = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)
            extent = float(max(hi[0] - lo[0], hi[1] - lo[1], 1.0))
            scale = float(rng.uniform(0.75, 1.2))
            scale = min(scale, (s - 4) / extent)
            # translation range that keeps the ink inside the image
            tx_lo, tx_hi = 2 - lo[0] * scale, s - 2 - hi[0] * scale
            ty_lo, ty_hi = 2 - lo[1] * scale, s - 2 - hi[1] * scale
            tx = float(rng.uniform(tx_lo, tx_hi)) if tx_hi > tx_lo else (tx_lo + tx_hi) / 2
            ty = float(rng.uniform(ty_lo, ty_hi)) if ty_hi > ty_lo else (ty_lo + ty_hi) / 2
            m = np.array([[scale, 0, tx], [0, scale, ty]])
            img = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderValue=255)
            # warpAffine maps pixel centres; box edges lie half a pixel outside them
            shift = 0.5 * (1.0 - scale)
            boxes = boxes * scale + np.array([tx, ty, tx, ty]) + shift
        if rng.random() < 0.25:
            img = cv2.GaussianBlur(img, (3, 3), float(rng.uniform(0.3, 0.8)))
        boxes = np.clip(boxes, 0, s)
        return img, boxes


def collate(batch):
    return [b[0] for b in batch], [b[1] for b in batch]
