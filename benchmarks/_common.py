"""What the benchmark scripts share, so that they treat a user as the ``system1`` commands do: a
parser whose errors are one ``error: ...`` line (exit status 2), an ``--out`` checked before any work
and written atomically at the end, real-set paths that may be a folder or one of its COCO files, and
every System1Error or OSError as one line and exit status 2 (``errors.run_guarded``)."""

from __future__ import annotations

import os
import sys

from bongard_system1.argtypes import OneLineParser
from bongard_system1.errors import System1Error, run_guarded
from bongard_system1.io_utils import check_output_file, write_json_atomic

HERE = os.path.dirname(os.path.abspath(__file__))
REAL_DEFAULT = os.path.join(HERE, "..", "..", "shared", "real-bongard-logo")


def parser(doc: str) -> OneLineParser:
    """The script's parser; its description is the docstring's first paragraph."""
    first = doc.strip().split("\n\n")[0]
    return OneLineParser(description=" ".join(first.split()))


def check_out(path) -> None:
    """``--out``, when given, must be writable: checked before minutes of measuring, not after."""
    if path is not None:
        check_output_file(path)


def write_out(path, obj) -> None:
    if path is not None:
        write_json_atomic(path, obj, indent=1)


def real_folder(path, needs=("shapes_coco.json", "strokes_coco.json")) -> str:
    """The real set's folder from ``--real``: the folder, or one of its COCO files; it must hold ``needs``."""
    folder = os.path.dirname(path) if os.path.isfile(path) else path
    if not os.path.isdir(folder):
        raise System1Error(f"--real {path}: no such folder or file (give the real set's folder)")
    missing = [n for n in needs if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise System1Error(f"--real {path}: {', '.join(missing)} not found there (give the real set's folder)")
    return folder


def existing(path, flag: str, kind: str = "folder") -> None:
    ok = os.path.isdir(path) if kind == "folder" else os.path.exists(path)
    if not ok:
        raise System1Error(f"{flag} {path}: no such {kind}")


def run(main) -> None:
    """Run ``main()`` and exit with its status; a System1Error or OSError is one line and status 2."""
    sys.exit(run_guarded(main))
