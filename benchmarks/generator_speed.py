"""Generator speed: images/s of `system1 generate` (sampling, rendering, boxes, PNG encoding, COCO files).

    python benchmarks/generator_speed.py [--num-images 6000] [--image-size 416] [--workers 2]

The original turtle + Tk generator was quoted at 0.082 s an image (about 12 images/s) on this kind of
2-core machine; the goal is at least 50x that (600 images/s at 416 px with 2 workers). The script
also times one worker in the same run, so the ratio between the two is measured side by side.
"""

import json
import os
import shutil
import tempfile
import time

from _common import check_out, parser, run, write_out
from bongard_system1.argtypes import image_count, image_px, non_empty_path, positive_int
from bongard_system1.data.generate import generate_dataset

ORIGINAL_SECONDS_PER_IMAGE = 0.082


def timed(n, size, workers, tmp):
    out = os.path.join(tmp, f"w{workers}")
    t = time.perf_counter()
    generate_dataset(out, n, size, seed=0, workers=workers, progress=False, quiet=True)
    dt = time.perf_counter() - t
    shutil.rmtree(out)
    return n / dt


def main():
    ap = parser(__doc__)
    ap.add_argument("--num-images", type=image_count, default=6000, help="images drawn with --workers (half as many with one)")
    ap.add_argument("--image-size", type=image_px, default=416)
    ap.add_argument("--workers", type=positive_int, default=2)
    ap.add_argument("--out", default=None, type=non_empty_path, help="write the figures as JSON here")
    a = ap.parse_args()
    check_out(a.out)
    with tempfile.TemporaryDirectory() as tmp:
        multi = timed(a.num_images, a.image_size, a.workers, tmp)
        single = timed(max(1, a.num_images // 2), a.image_size, 1, tmp)
    res = {"image_size": a.image_size, "num_images": a.num_images, "workers": a.workers,
           "images_per_s": round(multi, 1), "images_per_s_1_worker": round(single, 1),
           "speedup_vs_original_0.082s": round(multi * ORIGINAL_SECONDS_PER_IMAGE, 1),
           "goal_images_per_s": 600, "goal_met": multi >= 600, "cpus": os.cpu_count()}
    print(json.dumps(res, indent=1))
    write_out(a.out, res)
    return 0 if res["goal_met"] else 1


if __name__ == "__main__":
    run(main)
