"""Shared fixtures: where the real Bongard-LOGO set lives, and a small generated dataset."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("BONGARD_REAL_DIR", REPO.parent / "shared" / "real-bongard-logo"))


@pytest.fixture(scope="session")
def real_dir():
    if not (REAL / "shapes_coco.json").exists():
        pytest.skip(f"real Bongard-LOGO set not found at {REAL}")
    return REAL


def run_cli(*args, check=False, timeout=600, cwd=None):
    """Run the system1 command line in a subprocess (as a user would)."""
    proc = subprocess.run([sys.executable, "-m", "bongard_system1", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"system1 {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
