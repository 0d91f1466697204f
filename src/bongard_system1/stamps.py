"""The stamp vote: a second stage that re-reads which stamp a stroke is drawn with.

At the sizes the detector works at (416 to 480 px) a stamp is a few pixels across, and nearly all of
the detector's style errors on real images are between the three stamp styles, circle, square and
triangle. At 512 px, the size of real Bongard-LOGO images, every stamp still shows a small white
hole inside its outline (white specks of up to ``settings.STAMP_HOLE_MAX_AREA`` pixels enclosed by
ink: stamps grow with a shape's scale, and the large ones of basic shapes hold holes of 60 to 150
px), and the hole's shape tells the three apart. A small CNN
(:func:`build_stamp_net`) classifies 24x24 patches centred on those holes (:func:`hole_centres`)
as circle, square, triangle or ``plain`` (a white pocket where plain strokes meet or cross, not a
stamp). It is trained on synthetic images drawn at 512 px with ring stamps (:mod:`logo.stamp_rings`,
the original raster's look), each hole labelled by the strokes whose boxes hold it (see
:func:`labelled_patches`); it never sees a real image.

The vote: for each stroke the detector calls circle, square or triangle, the classifier's
probabilities of the three stamps are averaged over the holes inside the stroke's box (a hole
taken for ``plain`` votes for none) and added to the detector's own
scores for the three stamp styles at that box (normalised to sum to 1, weighted by
``settings.STAMP_VOTE_DETECTOR_WEIGHT``); the largest sum gives the style. Strokes without a hole
keep the detector's style. Every hole inside a stroke's box counts, its neighbours' included
(counting each hole only for the smallest box holding it was worse in an offline test: real style
90.8% against 92.1% without the detector's scores), except for a line with at least
``settings.STAMP_VOTE_LINE_HOLES`` holes along it (as below): then only those count (on 400
synthetic ring-stamp images, style 90.18% -> 90.41%; within 8 px or from 1 hole: 90.27-90.38%; then
checked on the real set: 93.32% -> 93.64%, one model's dumped outputs).

Lines the detector calls normal or zigzag are re-read too when stamp holes lie along them: a line
runs corner to corner in its box, so the holes within ``settings.STAMP_VOTE_LINE_DISTANCE`` pixels
(at 512 px) of the box diagonal that holds more of them are the line's own; with at least
``settings.STAMP_VOTE_LINE_HOLES`` of them, the detector's normalised scores for its own style and
the three stamp styles are added to the classifier's mean probabilities (``plain`` counting for
its own style), and the largest sum wins. Holes bunched at
one end of the line (spread over less than ``settings.STAMP_VOTE_LINE_SPAN`` of it) belong to a
neighbour that meets it there: no re-read. Arcs called normal or zigzag have no simple line to
measure holes against: they are re-read the same way when at least ``settings.STAMP_VOTE_ARC_HOLES``
holes lie anywhere in their box. Those settings were chosen on synthetic images (400 drawn at 512 px
with ring stamps from a random stream the classifier never saw), not on real ones. A vote saved
before the plain class (three outputs) still loads and votes as it did.
"""

from __future__ import annotations

import sys
import time

import cv2
import numpy as np

from . import STYLES
from .logo.fidelity import STAMPED, stamp_hole_centres
from .settings import (STAMP_HOLE_MAX_AREA, STAMP_VOTE_ARC_HOLES, STAMP_VOTE_DETECTOR_WEIGHT,
                       STAMP_VOTE_LINE_DISTANCE, STAMP_VOTE_LINE_HOLES, STAMP_VOTE_LINE_SPAN)

CLASSES = tuple(STAMPED) + ("plain",)   # the classifier's classes: the three stamps, and holes of no stamp
STAMP_IMAGE_SIZE = 512     # holes are found and classified at the real images' size
PATCH = 24
# the classifier's width (channels of its first layers; 16 to 64 through the net). Against 32, two seeds
# each: real stamp patches 99.05 / 98.46% against 99.09 / 99.23%, the vote on the real set's stroke
# boxes within the seeds' spread, 2.4x less training time and 3x less inference time (8: 95.2%;
# docs/measurements.md, "The stamp classifier at half the width")
WIDTH = 16
_NORM = (0.8, 0.3)         # patch pixels: (x / 255 - 0.8) / 0.3


def hole_centres(gray: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """White holes inside stamps, found at 512 px: ``(centres in the image's pixels, scale, the
    image at 512 px)``, where ``scale`` maps the image's pixels to that 512 px frame."""
    scale = STAMP_IMAGE_SIZE / float(gray.shape[1])
    if gray.shape[1] != STAMP_IMAGE_SIZE:
        size = (STAMP_IMAGE_SIZE, max(1, int(round(gray.shape[0] * scale))))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return stamp_hole_centres(gray, STAMP_HOLE_MAX_AREA) / scale, scale, gray


def patches_at(gray512: np.ndarray, centres512: np.ndarray) -> np.ndarray:
    """``(n, PATCH, PATCH)`` uint8 patches of a 512 px frame centred on the given points."""
    pad = np.pad(gray512, PATCH, constant_values=255)
    out = np.empty((len(centres512), PATCH, PATCH), np.uint8)
    for i, (cx, cy) in enumerate(centres512):
        x0, y0 = int(round(cx)) + PATCH - PATCH // 2, int(round(cy)) + PATCH - PATCH // 2
        out[i] = pad[y0:y0 + PATCH, x0:x0 + PATCH]
    return out


def labelled_patches(gray512: np.ndarray, strokes) -> tuple[np.ndarray, np.ndarray]:
    """Patches around the holes of one 512 px image with their labels (index into ``CLASSES``): a
    stamp style where the strokes whose boxes hold the hole are stamped in that style only; ``plain``
    where they are all normal or zigzag (white pockets where strokes cross or meet, which the
    classifier must learn to tell from stamps); holes in no stroke's box, or in boxes of a stamp and
    a plain style or of two stamps, are left out. ``strokes``: ``(bbox [x, y, w, h], style)`` pairs."""
    centres = stamp_hole_centres(gray512, STAMP_HOLE_MAX_AREA)
    if not len(centres) or not strokes:
        return np.zeros((0, PATCH, PATCH), np.uint8), np.zeros(0, np.int64)
    boxes = np.array([b for b, _ in strokes], np.float64).reshape(-1, 4)
    styles = np.array([s for _, s in strokes])
    inside = ((centres[:, None, 0] >= boxes[None, :, 0]) & (centres[:, None, 0] <= boxes[None, :, 0] + boxes[None, :, 2])
              & (centres[:, None, 1] >= boxes[None, :, 1]) & (centres[:, None, 1] <= boxes[None, :, 1] + boxes[None, :, 3]))
    keep, labels = [], []
    for i, row in enumerate(inside):
        found = set(styles[row].tolist())
        stamps = found & set(STAMPED)
        if len(found) == 1 and stamps:
            keep.append(i)
            labels.append(CLASSES.index(next(iter(found))))
        elif found and not stamps:
            keep.append(i)
            labels.append(CLASSES.index("plain"))
    return patches_at(gray512, centres[keep]), np.array(labels, np.int64)


def build_stamp_net(num_classes: int = len(CLASSES), width: int = WIDTH):
    """Six 3x3 conv layers (``width`` to 4 x ``width`` channels, two stride-2), global pooling,
    ``num_classes`` classes."""
    from torch import nn

    def block(i, o, stride=1):
        return [nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
    w = int(width)
    return nn.Sequential(*block(1, w), *block(w, w), *block(w, 2 * w, 2), *block(2 * w, 2 * w),
                         *block(2 * w, 4 * w, 2), *block(4 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4 * w, num_classes))


def as_tensor(patches: np.ndarray):
    import torch
    return torch.from_numpy(patches).float().div_(255.0).sub_(_NORM[0]).div_(_NORM[1])[:, None]


def synthetic_stamp_patches(num_images: int, seed: int, progress: bool = False, stamps: str = "ring"):
    """Labelled hole patches of ``num_images`` synthetic images drawn at 512 px with ``stamps``
    (ring or band; in memory; image ``i`` comes from the random stream ``(seed, 0x57A3, i)``)."""
    from tqdm import tqdm
    from .logo.render import render
    from .logo.sample import sample_image
    xs, ys = [], []
    for i in tqdm(range(num_images), desc="stamp patches", unit="img", disable=not progress, file=sys.stderr,
                  leave=False):
        shapes, pen = sample_image(np.random.default_rng([int(seed), 0x57A3, i]))
        r = render(shapes, STAMP_IMAGE_SIZE, pen_width=pen, stamps=stamps)
        strokes = [(b, a.style) for shape, boxes in zip(shapes, r.stroke_boxes) if boxes
                   for a, b in zip(shape.actions, boxes) if b is not None]
        x, y = labelled_patches(r.image, strokes)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _augmented(patches: np.ndarray, rng) -> np.ndarray:
    """Random 90-degree rotations and flips: a stamp's look does not depend on the stroke's direction."""
    out = np.empty_like(patches)
    for i, (p, k, f) in enumerate(zip(patches, rng.integers(4, size=len(patches)), rng.random(len(patches)) < 0.5)):
        p = np.rot90(p, k)
        out[i] = p[:, ::-1] if f else p
    return out


def predict_proba(net, patches: np.ndarray, device="cpu") -> np.ndarray:
    import torch
    net.eval()
    with torch.inference_mode():
        out = [torch.softmax(net(as_tensor(patches[i:i + 1024]).to(device)), 1).float().cpu()
               for i in range(0, len(patches), 1024)]
    return torch.cat(out).numpy() if out else np.zeros((0, net[-1].out_features), np.float32)


def train_stamp_classifier(num_images: int = 3000, epochs: int = 3, seed: int = 0, device: str = "cpu",
                           progress: bool = True, stamps: str = "ring", width: int = WIDTH) -> dict:
    """Train the stamp classifier on synthetic hole patches (images drawn with ``stamps``); returns
    ``{"state_dict", "metrics", "net"}`` where the metrics hold the patch counts, the accuracy on
    held-out synthetic patches (a tenth as many images, another random stream) and the seconds taken."""
    import torch
    from torch import nn
    t0 = time.time()
    x, y = synthetic_stamp_patches(num_images, seed, progress, stamps)
    x_va, y_va = synthetic_stamp_patches(max(1, num_images // 10), seed + 7919, False, stamps)
    if len(x) < 16 or not set(range(len(STAMPED))) <= set(y.tolist()) or not len(x_va):
        raise ValueError(f"{num_images} images gave too few stamp patches ({len(x)}, {len(x_va)} to check it) "
                         "to train the stamp vote: give it more images")
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 0x57A4])
    net = build_stamp_net(width=width).to(device)
    batch = min(256, len(x))
    steps_per_epoch = max(1, len(x) // batch)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 4e-3, total_steps=epochs * steps_per_epoch)
    for _ in range(epochs):
        net.train()
        order = rng.permutation(len(x))
        for b in range(steps_per_epoch):
            idx = order[b * batch:(b + 1) * batch]
            logits = net(as_tensor(_augmented(x[idx], rng)).to(device))
            loss = nn.functional.cross_entropy(logits, torch.from_numpy(y[idx]).to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    acc = float((predict_proba(net, x_va, device).argmax(1) == y_va).mean())
    metrics = {"train_patches": int(len(x)), "val_patches": int(len(x_va)), "val_accuracy": acc,
               "images": int(num_images), "epochs": int(epochs), "seconds": round(time.time() - t0, 1)}
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return {"state_dict": state, "metrics": metrics, "net": net.eval()}


class StampVote:
    """The trained stamp classifier, applied to a detector's stroke detections."""

    def __init__(self, state_dict, device="cpu", detector_weight: float = STAMP_VOTE_DETECTOR_WEIGHT):
        # a vote saved before the plain class (STAMP_VOTE_VERSION 1) has three outputs
        # the last layer's bias gives the classes, the first layer's weight the width
        self.net = build_stamp_net(int(next(reversed(state_dict.values())).shape[0]),
                                   int(next(iter(state_dict.values())).shape[0]))
        self.net.load_state_dict(state_dict)
        self.net.to(device).eval()
        self.device = device
        self.detector_weight = float(detector_weight)

    def restyle(self, gray: np.ndarray, strokes: list, style_scores: list) -> int:
        """Re-decide in place the style of stroke detections (``.bbox``, ``.category``, ``.style``):
        those called circle, square or triangle, lines called normal or zigzag with stamp holes
        along them, and arcs so called with enough holes in their box. ``style_scores[i]``: the
        detector's scores of the five styles (``STYLES`` order) at stroke ``i``'s box. Returns how
        many styles changed."""
        if not strokes:
            return 0
        centres, scale, gray512 = hole_centres(gray)
        if not len(centres):
            return 0
        prob = predict_proba(self.net, patches_at(gray512, centres * scale), self.device)
        changed = 0
        for d, det_scores in zip(strokes, style_scores):
            x, y, w, h = d.bbox
            inside = (centres[:, 0] >= x) & (centres[:, 0] <= x + w) & (centres[:, 1] >= y) & (centres[:, 1] <= y + h)
            if not inside.any():
                continue
            scores = dict(zip(STYLES, np.asarray(det_scores, np.float64)))
            holes = np.flatnonzero(inside)
            near = along = None
            if d.category == "line":         # the holes along the line are its own, not its neighbours'
                near, along = _along_line(centres[holes], d.bbox, STAMP_VOTE_LINE_DISTANCE / scale)
            if d.style in STAMPED:
                choices = STAMPED
                if near is not None and near.sum() >= STAMP_VOTE_LINE_HOLES:
                    holes = holes[near]
            else:       # a plain stroke: its own style stays one of the choices, voted for by "plain" holes
                if near is not None:
                    if near.any() and np.ptp(along[near]) < STAMP_VOTE_LINE_SPAN:
                        continue            # holes bunched at one end: a neighbour's stamps, not its own
                    holes = holes[near]
                if len(holes) < (STAMP_VOTE_LINE_HOLES if d.category == "line" else STAMP_VOTE_ARC_HOLES):
                    continue
                choices = (d.style,) + tuple(STAMPED)
            det = np.array([scores[c] for c in choices])
            votes = prob[holes].mean(axis=0)          # circle, square, triangle[, plain]
            plain = votes[len(STAMPED)] if len(votes) > len(STAMPED) else 0.0
            votes = votes[:len(STAMPED)] if choices == STAMPED else np.concatenate([[plain], votes[:len(STAMPED)]])
            style = choices[int((votes + self.detector_weight * det / max(det.sum(), 1e-9)).argmax())]
            changed += style != d.style
            d.style = style
        return changed


def _along_line(points: np.ndarray, bbox, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Which ``points`` lie within ``distance`` of the line a line stroke's box implies (of its two
    diagonals, the one with more points that close), and where each point falls along that line
    (0 at one end, 1 at the other)."""
    x, y, w, h = bbox
    near, along = [], []
    for a, b in (((x, y), (x + w, y + h)), ((x + w, y), (x, y + h))):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
        near.append(np.linalg.norm(points - (a + t[:, None] * ab), axis=1) <= distance)
        along.append(t)
    k = 0 if near[0].sum() >= near[1].sum() else 1
    return near[k], along[k]
