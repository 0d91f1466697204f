"""Renderer fidelity: re-render every shape (and stroke) of a real Bongard-LOGO COCO file from its
action program and placement, and compare boxes with the real ones.

    python benchmarks/fidelity.py [--real ../shared/real-bongard-logo/shapes_coco.json]

Goal: median shape-box IoU >= 0.95 and 10th percentile >= 0.85. Also reported: the ink of each stroke
style relative to plain lines, ours over real, at 416 and 512 px (1.0 = same; goal: 0.8-1.25), and, with
no goal, the holes inside stamps in 100 re-rendered real images at 512 px, ours over real (see the
README: a renderer that matched them made the detector worse).
"""

import argparse
import json
import os
import sys

from bongard_system1.logo.fidelity import fidelity_report, ink_report, stamp_hole_report

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "..", "shared", "real-bongard-logo", "shapes_coco.json")


def main():
    ap = argparse.ArgumentParser(description="renderer fidelity against real boxes")
    ap.add_argument("--real", default=DEFAULT)
    a = ap.parse_args()
    if not os.path.exists(a.real):
        print(f"error: real set not found: {a.real}", file=sys.stderr)
        return 2
    rep = fidelity_report(a.real)
    rep["ink"] = [ink_report(a.real, size) for size in (416, 512)]
    rep["stamp_holes"] = stamp_hole_report(a.real, max_images=100)
    print(json.dumps(rep, indent=1))
    ok = rep["shapes"]["median"] >= 0.95 and rep["shapes"]["p10"] >= 0.85
    print(f"shapes: median IoU {rep['shapes']['median']:.4f} (goal 0.95), p10 {rep['shapes']['p10']:.4f} (goal 0.85)"
          f" -> {'met' if ok else 'NOT met'}")
    for ink in rep["ink"]:
        within = all(r is not None and 0.8 <= r <= 1.25 for r in ink["ratio"].values())
        ok = ok and within
        print(f"ink relative to plain lines at {ink['size']} px, ours/real: "
              + ", ".join(f"{s} {r:.3f}" if r is not None else f"{s} (no fit)" for s, r in ink["ratio"].items()) + f" -> {'met' if within else 'NOT met'}")
    holes = rep["stamp_holes"]
    print(f"holes inside stamps in {holes['images']} re-rendered real images: ours {holes['ours']}, real {holes['real']}"
          f" (ratio {holes['ratio']:.3f}; no goal)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
