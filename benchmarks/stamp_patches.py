"""Do our stamps look like real ones? A small CNN learns circle / square / triangle stamps from
patches of synthetic images and is then scored on patches of real images.

    python benchmarks/stamp_patches.py [--real ../shared/real-bongard-logo] [--num-images 3000] [--epochs 3]

Patches are 24x24 px at 512 px image size, centred on the white holes inside stamps
(``logo.fidelity.stamp_holes``); a hole is labelled with the style of the one stamped stroke whose
box holds it (holes inside boxes of strokes of different styles are left out). The network never
sees a real image before it is scored. Accuracy on synthetic validation patches says the task is
learnable; accuracy on real patches says whether what it learned carries over, i.e. whether the
renderer's stamps look like the original's at the pixel level. Goal: real patch accuracy >= 0.95.
The run takes about 3 minutes on 2 cores.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import cv2
import numpy as np
import torch
from torch import nn

from bongard_system1.data.generate import generate_dataset
from bongard_system1.logo.fidelity import STAMPED, stamp_hole_centres

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "..", "shared", "real-bongard-logo")
PATCH = 24


def labelled_patches(root, images, strokes_by_image):
    """Patches around the holes of each image that lie in stamped strokes of one style, with labels."""
    xs, ys = [], []
    for im in images:
        gray = cv2.imread(os.path.join(root, im["file_name"]), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            continue
        if gray.shape != (512, 512):
            gray = cv2.resize(gray, (512, 512), interpolation=cv2.INTER_AREA)
        scale = 512 / im["width"]
        anns = strokes_by_image.get(im["id"], [])
        pad = np.pad(gray, PATCH, constant_values=255)
        for cx, cy in stamp_hole_centres(gray):
            styles = {a["style"] for a in anns
                      if a["bbox"][0] * scale <= cx <= (a["bbox"][0] + a["bbox"][2]) * scale
                      and a["bbox"][1] * scale <= cy <= (a["bbox"][1] + a["bbox"][3]) * scale}
            if len(styles) != 1 or next(iter(styles)) not in STAMPED:
                continue
            x0, y0 = int(round(cx)) + PATCH - PATCH // 2, int(round(cy)) + PATCH - PATCH // 2
            xs.append(pad[y0:y0 + PATCH, x0:x0 + PATCH])
            ys.append(STAMPED.index(next(iter(styles))))
    return np.array(xs, np.uint8).reshape(-1, PATCH, PATCH), np.array(ys, np.int64)


def read_strokes(root):
    with open(os.path.join(root, "strokes_coco.json")) as f:
        coco = json.load(f)
    by = {}
    for a in coco["annotations"]:
        by.setdefault(a["image_id"], []).append(a)
    return coco["images"], by


def small_cnn():
    def block(i, o, stride=1):
        return [nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
    return nn.Sequential(*block(1, 32), *block(32, 32), *block(32, 64, 2), *block(64, 64), *block(64, 128, 2),
                         *block(128, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 3))


def as_tensor(x):
    return torch.from_numpy(x).float().div_(255.0).sub_(0.8).div_(0.3)[:, None]


def accuracy(net, x, y):
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(as_tensor(x[i:i + 1024])).argmax(1) for i in range(0, len(x), 1024)])
    conf = np.zeros((3, 3), int)
    np.add.at(conf, (y, pred.numpy()), 1)
    return float((pred.numpy() == y).mean()), conf


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", default=DEFAULT, help="real set folder (strokes_coco.json and images/)")
    ap.add_argument("--num-images", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.real, "strokes_coco.json")):
        print(f"error: real set not found: {a.real}", file=sys.stderr)
        return 2
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        syn = os.path.join(tmp, "syn")
        generate_dataset(syn, a.num_images, 512, seed=a.seed, progress=False, quiet=True)
        images, by = read_strokes(syn)
        x_tr, y_tr = labelled_patches(syn, [im for im in images if im.get("split") == "train"], by)
        x_va, y_va = labelled_patches(syn, [im for im in images if im.get("split") == "val"], by)
    images, by = read_strokes(a.real)
    x_re, y_re = labelled_patches(a.real, images, by)
    print(f"patches: {len(x_tr)} synthetic train, {len(x_va)} synthetic val, {len(x_re)} real "
          f"({time.time() - t0:.0f} s)", flush=True)

    net = small_cnn()
    batch = 256
    steps = a.epochs * (len(x_tr) // batch)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 4e-3, total_steps=steps)
    for epoch in range(a.epochs):
        net.train()
        order = rng.permutation(len(x_tr))
        for b in range(len(x_tr) // batch):
            idx = order[b * batch:(b + 1) * batch]
            # rotations and flips: a stamp's look does not depend on the stroke's direction
            x = np.stack([np.rot90(p, k)[:, ::-1] if f else np.rot90(p, k)
                          for p, k, f in zip(x_tr[idx], rng.integers(4, size=len(idx)), rng.random(len(idx)) < 0.5)])
            loss = nn.functional.cross_entropy(net(as_tensor(np.ascontiguousarray(x))), torch.from_numpy(y_tr[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}: synthetic val {accuracy(net, x_va, y_va)[0]:.3f}, "
              f"real {accuracy(net, x_re, y_re)[0]:.3f}", flush=True)
    val, _ = accuracy(net, x_va, y_va)
    real, conf = accuracy(net, x_re, y_re)
    print("real patches, rows true / columns predicted (circle, square, triangle):")
    for name, row in zip(STAMPED, conf):
        print(f"  {name:9s} {row.tolist()}")
    ok = real >= 0.95
    print(f"stamp patch accuracy: synthetic val {val:.3f}, real {real:.3f} (goal 0.95) -> {'met' if ok else 'NOT met'}"
          f" ({time.time() - t0:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
