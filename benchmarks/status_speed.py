"""How fast the commands that must not import torch answer: ``--status``, ``--help``, ``system1 --help``.

    python benchmarks/status_speed.py [--workdir WD] [--repeats 10] [--out results/status_speed.json]

``--status`` is timed on a work directory holding a finished pipeline run: ``--workdir`` (one made by
the main command), or else a ``smoke`` run made first in a temporary folder (about a minute). Each
command runs ``--repeats`` times in a fresh interpreter, interleaved with a bare ``python -c pass``,
so the start-up of Python itself is measured side by side; the goal is ``--status`` in well under a
second. It also says whether any of them imported torch (``python -X importtime``).
"""

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import check_out, existing, parser, run, write_out
from bongard_system1.argtypes import int_in, non_empty_path
from bongard_system1.errors import System1Error

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "train_system1_checkpointed.py")
HEAVY = {"torch", "torchvision", "cv2", "matplotlib"}


def timed(argv, timeout=120):
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise System1Error(f"{' '.join(argv)} did not finish in {timeout} s") from None
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise System1Error(f"{' '.join(argv)} failed: {last}")
    return seconds


def heavy_imports(argv):
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    names = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    return sorted(names & HEAVY)


def measure(workdir, repeats):
    commands = {"python -c pass": ["-c", "pass"],
                "--status": [SCRIPT, "--status", "--workdir", str(workdir)],
                "--help": [SCRIPT, "--help"],
                "system1 --help": ["-m", "bongard_system1", "--help"]}
    times = {name: [] for name in commands}
    for _ in range(repeats):
        for name, argv in commands.items():
            times[name].append(timed(argv))
    base = statistics.median(times["python -c pass"])
    rows = []
    for name, argv in commands.items():
        med = statistics.median(times[name])
        rows.append({"command": name, "median_s": round(med, 3), "max_s": round(max(times[name]), 3),
                     "vs_bare_python": round(med / base, 2),
                     "heavy_imports": heavy_imports(argv) if name != "python -c pass" else []})
    return rows


def main():
    ap = parser(__doc__)
    ap.add_argument("--workdir", default=None, type=non_empty_path,
                    help="a work directory with a finished run (default: make a smoke one)")
    ap.add_argument("--repeats", type=int_in(1, 1000), default=10, help="runs of each command, interleaved")
    ap.add_argument("--out", default=None, type=non_empty_path, help="write the figures as JSON here")
    a = ap.parse_args()
    if a.workdir is not None:
        existing(a.workdir, "--workdir")
    check_out(a.out, [a.workdir])
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(a.workdir) if a.workdir else Path(tmp) / "wd"
        if a.workdir is None:
            print("making a smoke run to time --status on ...", file=sys.stderr)
            timed([SCRIPT, "--profile", "smoke", "--workdir", str(workdir), "--no-progress", "--real-data", "none"],
                  timeout=900)
        rows = measure(workdir, a.repeats)
    for r in rows:
        heavy = ", ".join(r["heavy_imports"]) or "none"
        print(f"{r['command']:16s} median {r['median_s']:.3f} s  max {r['max_s']:.3f} s  "
              f"{r['vs_bare_python']:.1f}x bare python  heavy imports: {heavy}")
    status = next(r for r in rows if r["command"] == "--status")
    ok = status["median_s"] < 1.0 and not any(r["heavy_imports"] for r in rows)
    print(f"goal (--status under a second, no torch imported): {'met' if ok else 'NOT met'}")
    write_out(a.out, {"rows": rows, "goal_met": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    run(main)
