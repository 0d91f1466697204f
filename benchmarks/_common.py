"""What the benchmark scripts share, so that they treat a user as the ``system1`` commands do: a
parser whose errors are one ``error: ...`` line (exit status 2), an ``--out`` checked before any work
and written atomically at the end, real-set paths that may be a folder or one of its COCO files, and
every System1Error or OSError as one line and exit status 2 (``errors.run_guarded``)."""

from __future__ import annotations

import os
import sys

from bongard_system1.argtypes import OneLineParser
from bongard_system1.errors import System1Error, run_guarded
from bongard_system1.io_utils import check_not_an_input, check_output_file, write_json_atomic

HERE = os.path.dirname(os.path.abspath(__file__))
REAL_DEFAULT = os.path.join(HERE, "..", "..", "shared", "real-bongard-logo")
REAL_NAMES = ("shapes_coco.json", "strokes_coco.json")


def parser(doc: str) -> OneLineParser:
    """The script's parser; its description is the docstring's first paragraph."""
    first = doc.strip().split("\n\n")[0]
    return OneLineParser(description=" ".join(first.split()))


def check_out(path, inputs=()) -> None:
    """``--out``, when given, must be writable and none of the ``inputs`` (files, or images and COCO
    files inside input folders): checked before minutes of measuring, not after."""
    if path is not None:
        check_output_file(path)
        check_not_an_input(path, list(inputs))


def write_out(path, obj) -> None:
    if path is not None:
        write_json_atomic(path, obj, indent=1)


def is_none(value) -> bool:
    return value is not None and value.strip().lower() in ("none", "off")


def real_folder(path, needs=REAL_NAMES) -> str:
    """The real set's folder from ``--real``: the folder, or its shapes_coco.json or strokes_coco.json
    (another file is refused: these scripts read the set's own files); it must hold ``needs``."""
    if os.path.isfile(path) and os.path.basename(path) not in REAL_NAMES:
        raise System1Error(f"--real {path}: give the real set's folder (or its shapes_coco.json or "
                           f"strokes_coco.json); this script reads {' and '.join(needs)} there")
    folder = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else path
    if not os.path.isdir(folder):
        raise System1Error(f"--real {path}: no such folder or file (give the real set's folder)")
    missing = [n for n in needs if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise System1Error(f"--real {path}: {', '.join(missing)} not found there (give the real set's folder)")
    return folder


def existing(path, flag: str) -> None:
    """``path`` must be a folder (``--data``, ``--workdir``)."""
    if not os.path.isdir(path):
        raise System1Error(f"{flag} {path}: no such folder")


def run(main) -> None:
    """Run ``main()`` and exit with its status; a System1Error or OSError is one line and status 2."""
    sys.exit(run_guarded(main))
