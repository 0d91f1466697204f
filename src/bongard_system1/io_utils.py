"""Small file helpers: atomic writes (JSON, bytes, images), durable renames, output checks and SHA-256
digests of files."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def write_json_atomic(path, obj, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` so that readers see the old file or the new one, never half
    (:func:`write_bytes_atomic`). The parent folder is created if needed."""
    # json.dumps, not json.dump: only the one-shot form uses the C encoder (several times faster)
    write_bytes_atomic(path, (json.dumps(obj, indent=indent) + "\n").encode("utf-8"))


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: a temporary file in the same folder, flushed and
    fsynced, then :func:`os.replace` over ``path``; on any failure the temporary file is removed and
    ``path`` is left as it was. The parent folder is created if needed. An OSError (a full disk)
    names ``path`` when the system did not name a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:                          # it names a temporary file that never was
        raise naming(exc, path, force=True) from None
    umask = os.umask(0)
    os.umask(umask)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask)          # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise naming(exc, path, force=exc.filename == tmp) from None
        raise
    fsync_dir(path.parent)


def naming(exc: OSError, path, force: bool = False) -> OSError:
    """``exc`` itself if it names a file (and not ``force``), else the same error naming ``path``
    (what the one error line of :func:`errors.run_guarded` shows: ``No space left on device (path)``)."""
    if exc.errno is None or (exc.filename is not None and not force):
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def write_image(path, image) -> None:
    """Encode ``image`` (a numpy array, as OpenCV takes it) in the format of ``path``'s extension and
    write it with :func:`write_bytes_atomic`. ``cv2.imwrite`` is not used: it reports success after a
    write that a full disk cut short, leaving an empty or truncated file."""
    import cv2
    from .errors import System1Error
    ok, buf = cv2.imencode(Path(path).suffix or ".png", image)
    if not ok:
        raise System1Error(f"cannot encode {path} as {Path(path).suffix or '.png'}")
    write_bytes_atomic(path, buf.tobytes())


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
