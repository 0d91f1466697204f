"""Small file helpers: atomic JSON writes, durable renames and SHA-256 digests of files."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def write_json_atomic(path, obj, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` so that readers see the old file or the new one, never half.

    The text goes to a temporary file in the same folder, is flushed and fsynced, and then replaces
    ``path`` with :func:`os.replace`. The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)          # mkstemp makes 0600; give the usual permissions
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            # json.dumps, not json.dump: only the one-shot form uses the C encoder (several times faster)
            f.write(json.dumps(obj, indent=indent))
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def fsync_dir(folder) -> None:
    """Make renames inside ``folder`` durable (fsync the folder itself); not possible everywhere."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def check_output_file(path, flag: str = "--out") -> None:
    """Raise a one-line error now, before any work, when ``path`` cannot be written as a file."""
    from .errors import System1Error
    if not str(path).strip():
        raise System1Error(f"{flag} is empty; give a file name")
    path = Path(path)
    if path.is_dir():
        raise System1Error(f"{flag} {path} is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise System1Error(f"{flag} {path} is not a regular file (a device or a pipe); give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent      # the nearest existing folder: the write creates the ones below it
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise System1Error(f"{flag} {path}: cannot write in {parent}")
    try:        # os.access says yes to root everywhere: a read-only or virtual file system says no only here
        import tempfile
        fd, probe = tempfile.mkstemp(prefix=".system1_probe_", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise System1Error(f"{flag} {path}: cannot write in {parent} ({exc.strerror or exc})") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise System1Error(f"{flag} {path}: the file is not writable")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def check_output_image(path, flag: str = "--out") -> None:
    """As :func:`check_output_file`, and the name must end in an image format OpenCV writes."""
    from .errors import System1Error
    check_output_file(path, flag)
    if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        raise System1Error(f"{flag} {path}: give an image file name ({', '.join(IMAGE_SUFFIXES)})")


INPUT_NAMES = ("shapes_coco.json", "strokes_coco.json", "dataset.json")


def coco_folder(coco) -> str | None:
    """The folder a COCO file's image paths are read from when no images root is given: its own."""
    return os.path.dirname(os.path.abspath(coco)) if coco else None


def check_not_an_input(path, inputs, flag: str = "--out") -> None:
    """Refuse an output that would overwrite an input: one of the ``inputs`` files, or, inside one of
    the ``inputs`` folders, an image, a model (``.pt``) or a dataset's COCO file or manifest (a file
    of one's own there, such as an earlier ``preds.json``, may be written again)."""
    from .errors import System1Error
    out = Path(path).resolve()
    kept = out.suffix.lower() in IMAGE_SUFFIXES + (".pt",) or out.name in INPUT_NAMES
    for item in inputs:
        if not item:
            continue
        item = Path(item).resolve()
        if out == item or (kept and item.is_dir() and out.exists() and item in out.parents):
            raise System1Error(f"{flag} {path} would overwrite an input ({item}); give another file")


def make_output_dir(path, flag: str) -> None:
    """Create the folder ``path`` (and its parents), or raise a one-line error."""
    from .errors import System1Error
    if not str(path).strip():
        raise System1Error(f"{flag} is empty; give a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise System1Error(f"{flag} {path}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise System1Error(f"{flag} {path}: cannot write in the folder")


def sha256_file(path, *, chunk_size: int = 1 << 20) -> str:
    """The hex SHA-256 digest of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()
