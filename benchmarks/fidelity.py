"""Renderer fidelity: re-render every shape (and stroke) of a real Bongard-LOGO COCO file from its
action program and placement, and compare boxes with the real ones.

    python benchmarks/fidelity.py [--real ../shared/real-bongard-logo/shapes_coco.json]

Goal: median shape-box IoU >= 0.95 and 10th percentile >= 0.85.
"""

import argparse
import json
import os
import sys

from bongard_system1.logo.fidelity import fidelity_report

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
    print(json.dumps(rep, indent=1))
    ok = rep["shapes"]["median"] >= 0.95 and rep["shapes"]["p10"] >= 0.85
    print(f"shapes: median IoU {rep['shapes']['median']:.4f} (goal 0.95), p10 {rep['shapes']['p10']:.4f} (goal 0.85)"
          f" -> {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
