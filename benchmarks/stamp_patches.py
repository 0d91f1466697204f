"""Do our stamps look like real ones, and can the stamp vote tell real stamps apart? The stamp
vote's classifier is trained as the training stage trains it (synthetic images at 512 px, patches
around the white holes inside stamps) and scored on the real set's stamp patches, once on images
drawn with ring stamps (what the vote uses) and once with band stamps (the detector's data), side
by side.

    python benchmarks/stamp_patches.py [--real ../shared/real-bongard-logo] [--num-images 3000] [--epochs 3]
                                       [--width 16] [--out FILE.json]

Real patches come from every hole (``logo.fidelity.stamp_hole_centres``) that lies in the boxes of
stamped strokes of one style only, labelled with that style, or in boxes of plain strokes only
(``plain``; see ``stamps.labelled_patches``). The classifier never sees a real image before it is
scored. Goal: accuracy on real stamp patches >= 0.95 with ring stamps. About 5.5 minutes on 2 cores
(324 s on an AVX2-only AMD EPYC, 2026-12-01).
"""

import json
import os
import time

import cv2
import numpy as np

from _common import REAL_DEFAULT, check_out, parser, real_folder, run, write_out
from bongard_system1.argtypes import int_in, non_empty_path, positive_int, seed_int
from bongard_system1.logo.fidelity import STAMPED
from bongard_system1.settings import MIN_STAMP_IMAGES
from bongard_system1.stamps import CLASSES, WIDTH, labelled_patches, predict_proba, train_stamp_classifier

stamp_image_count = int_in(MIN_STAMP_IMAGES, 1_000_000,
                           f"an image count from {MIN_STAMP_IMAGES} (fewer lack patches of some style) to 1000000")


def real_patches(root):
    with open(os.path.join(root, "strokes_coco.json")) as f:
        coco = json.load(f)
    by = {}
    for a in coco["annotations"]:
        by.setdefault(a["image_id"], []).append((a["bbox"], a.get("style")))
    xs, ys = [], []
    for im in coco["images"]:
        gray = cv2.imread(os.path.join(root, im["file_name"]), cv2.IMREAD_GRAYSCALE)
        if gray is None or gray.shape != (512, 512):
            continue
        x, y = labelled_patches(gray, by.get(im["id"], []))
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def main():
    ap = parser(__doc__)
    ap.add_argument("--real", default=REAL_DEFAULT, type=non_empty_path,
                    help="real set folder (strokes_coco.json and images/)")
    ap.add_argument("--num-images", type=stamp_image_count, default=3000)
    ap.add_argument("--epochs", type=positive_int, default=3)
    ap.add_argument("--seed", type=seed_int, default=0)
    ap.add_argument("--width", type=positive_int, default=WIDTH, help="the classifier's width (channels of its first layers)")
    ap.add_argument("--out", default=None, type=non_empty_path, help="write the figures as JSON here")
    a = ap.parse_args()
    a.real = real_folder(a.real, needs=("strokes_coco.json",))
    check_out(a.out, [a.real])
    import torch                    # torch only now: --help and bad flags answer at once
    t0 = time.time()
    x_re, y_re = real_patches(a.real)
    print(f"real patches: {len(x_re)} ({', '.join(f'{s} {int((y_re == i).sum())}' for i, s in enumerate(CLASSES))})",
          flush=True)
    stamped = y_re < len(STAMPED)
    results = {}
    for stamps in ("ring", "band"):
        torch.manual_seed(a.seed)
        trained = train_stamp_classifier(a.num_images, a.epochs, a.seed, "cpu", progress=False, stamps=stamps,
                                         width=a.width)
        pred = predict_proba(trained["net"], x_re).argmax(1)
        conf = np.zeros((len(CLASSES), len(CLASSES)), int)
        np.add.at(conf, (y_re, pred), 1)
        m = trained["metrics"]
        results[stamps] = float((pred[stamped] == y_re[stamped]).mean())
        plain = float((pred[~stamped] == y_re[~stamped]).mean()) if (~stamped).any() else float("nan")
        print(f"{stamps} stamps: {m['train_patches']} synthetic patches, synthetic val {m['val_accuracy']:.3f}, "
              f"real stamp patches {results[stamps]:.3f}, real plain patches {plain:.3f} ({m['seconds']:.0f} s); "
              f"real rows true / columns predicted ({', '.join(CLASSES)}): {conf.tolist()}", flush=True)
    ok = results["ring"] >= 0.95
    print(f"stamp patch accuracy on real patches: ring {results['ring']:.3f} (goal 0.95) -> "
          f"{'met' if ok else 'NOT met'}; band {results['band']:.3f} ({time.time() - t0:.0f} s)")
    write_out(a.out, {"real_stamp_patch_accuracy": results, "goal": 0.95, "goal_met": ok,
                      "num_images": a.num_images, "epochs": a.epochs, "seed": a.seed, "width": a.width})
    return 0 if ok else 1


if __name__ == "__main__":
    run(main)
