"""Per-stage JSON records under ``WORKDIR/checkpoints/``: writing, reading, hashing and validation.

:class:`CheckpointManager` owns ``data_generation.json``, ``training.json`` and ``evaluation.json``
(each written atomically). A record holds the stage's status (``running``, ``complete``,
``failed``), timestamps, its config and the config's hash, the hash of its upstream's outputs,
its outputs with sizes and sha256, validation counts, metrics and library versions.

:meth:`CheckpointManager.decide` says whether a stage must run and why, in words: ``forced``,
``no record``, ``config changed: epochs 25 -> 50``, ``upstream changed``, ``output missing``,
``output changed`` (an annotation file edited since), ``checkpoint corrupt``, ``previous run interrupted``, ``previous run failed``. Checks come in two
depths: *cheap* ones (file exists, size and modification time as recorded, image counts) answer
``--status`` in well under a second; *deep* ones (sha256 of every output, the annotation files
parse, the checkpoint loads into a freshly built model) run before a stage is skipped.

Paths inside records are relative to the work directory, so a work directory can be moved.
Standard library only at import time: the deep model check imports the trainer lazily.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..configs import config_diff, config_hash
from ..errors import System1Error
from ..io_utils import sha256_file, write_json_atomic

STAGES = ("data", "training", "evaluation")
RECORD_FILES = {"data": "data_generation.json", "training": "training.json", "evaluation": "evaluation.json"}
RECORD_VERSION = 1
VERSIONED_PACKAGES = ("bongard-system1", "torch", "torchvision", "numpy", "opencv-python-headless",
                      "faster-coco-eval", "filelock")


# ---------------------------------------------------------------------------------------------
# small helpers


def now_text() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def library_versions() -> dict:
    """Versions of the libraries that shape the results (read from metadata; imports nothing)."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def file_facts(path: Path, root: Path, with_sha: bool = True) -> dict:
    """``{"path", "size", "mtime_ns", "sha256"}`` of a file, its path relative to ``root``."""
    st = path.stat()
    facts = {"path": rel(path, root), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if with_sha:
        facts["sha256"] = sha256_file(path)
    return facts


def rel(path, root) -> str:
    path, root = Path(path).resolve(), Path(root).resolve()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def count_pngs(folder: Path) -> int:
    """The generator's images in ``folder`` (``000123.png``: a PNG of one's own there is not one), or
    -1 when there is no such folder."""
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if e.name.endswith(".png") and e.name[:-4].isdigit() and e.name[:-4].isascii()
                       and e.is_file())
    except FileNotFoundError:
        return -1


# ---------------------------------------------------------------------------------------------
# the manager


@dataclass
class Decision:
    """Whether a stage runs, and why (or, when it is skipped, a short ``valid`` note)."""

    run: bool
    reason: str
    record: dict | None = None
    warning: str | None = None     # e.g. a record that was not valid JSON


# (dotted key, the type its value must have when present, whether a complete record must have it):
# what ``--status``, the skipped-stage lines and the results file read from a record
_FIELDS = {
    None: [("started", str, False), ("finished", str, True), ("config_hash", str, True), ("error", str, False),
           ("staging_dir", str, False), ("upstream_hash", str, False), ("dataset_hash", str, False),
           ("run_settings", dict, False), ("run_settings.profile", str, False), ("run_settings.overrides", dict, False),
           ("run_settings.real_data", str, False), ("replaces", dict, False)],
    "data": [("validation.num_images", int, True), ("config.image_size", int, True)],
    "training": [("config.backbone", str, True), ("metrics.history", list, False),
                 ("metrics.best_metric", (int, float), False)],
    "evaluation": [("metrics.summary", dict, False), ("outputs.model", dict, True)],
}


_TYPE_NAMES = {str: "a string", dict: "an object", list: "a list", int: "an integer"}


def _field(rec: dict, dotted: str):
    value = rec
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _record_problem(rec: dict) -> str | None:
    """What is wrong with the layout of a record that parses, or None (hand-edited or damaged ones
    are then treated as no record, not as a traceback)."""
    for key in ("outputs", "validation", "metrics", "config"):
        if rec.get(key) is not None and not isinstance(rec[key], dict):
            return f"{key!r} is not an object"
    complete = rec.get("status") == "complete"
    for dotted, kind, required in _FIELDS[None] + _FIELDS.get(rec.get("stage"), []):
        value = _field(rec, dotted)
        if value is None:
            if required and complete:
                return f"a complete record without {dotted}"
        elif not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            return f"{dotted} is not {_TYPE_NAMES.get(kind, 'a number')}"
    history = _field(rec, "metrics.history") or []
    if not all(isinstance(row, dict) for row in history):
        return "metrics.history holds a row that is not an object"
    if rec.get("stage") == "evaluation" and not all(isinstance(v, dict) for v in (rec.get("validation") or {}).values()):
        return "validation holds a set that is not an object"
    for key, facts in (rec.get("outputs") or {}).items():
        if isinstance(facts, dict):
            if not isinstance(facts.get("path"), str):
                return f"outputs.{key} has no path"
        elif not isinstance(facts, (str, type(None))):
            return f"outputs.{key} is neither a path nor a file record"
    if rec.get("status") == "complete" and rec.get("stage") in ("data", "training"):
        need = {"data": ("dir", "shapes_coco", "strokes_coco", "manifest"),
                "training": ("run_dir", "best_checkpoint")}[rec["stage"]]
        outputs = rec.get("outputs") or {}
        missing = [k for k in need if k not in outputs]
        if missing:
            return f"outputs without {', '.join(missing)}"
        files = [k for k in need if k not in ("dir", "run_dir")]
        if any(not isinstance(outputs[k], dict) for k in files):
            return "an output file without its size and sha256"
    return None


class CheckpointManager:
    """Reads, writes and validates the per-stage records of one work directory."""

    def __init__(self, workdir, enabled: bool = True):
        self.workdir = Path(workdir).resolve()
        self.dir = self.workdir / "checkpoints"
        self.enabled = enabled
        self._sha_cache: dict[tuple, str] = {}

    def sha256(self, path: Path) -> str:
        """sha256 of a file, computed once per (path, size, mtime) in this process."""
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._sha_cache:
            self._sha_cache[key] = sha256_file(path)
        return self._sha_cache[key]

    # -- files ----------------------------------------------------------------------------------
    def path(self, stage: str) -> Path:
        return self.dir / RECORD_FILES[stage]

    def abs(self, relpath: str) -> Path:
        p = Path(relpath)
        return p if p.is_absolute() else self.workdir / p

    def read(self, stage: str) -> tuple[dict | None, str | None]:
        """``(record, problem)``: the record, or None with a one-line problem when it is unreadable."""
        path = self.path(stage)
        if not path.exists():
            return None, None
        try:
            with open(path, encoding="utf-8") as fh:
                rec = json.load(fh)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return None, f"{rel(path, self.workdir)} is not valid JSON ({exc}); treating it as no record"
        if not isinstance(rec, dict) or rec.get("stage") != stage:
            return None, f"{rel(path, self.workdir)} is not a {stage} record; treating it as no record"
        problem = _record_problem(rec)
        if problem:
            return None, f"{rel(path, self.workdir)} is damaged ({problem}); treating it as no record"
        return rec, None

    def write(self, stage: str, record: dict) -> None:
        if not self.enabled:
            return
        record = dict(record)
        record["stage"] = stage
        record["record_version"] = RECORD_VERSION
        record["updated"] = now_text()
        write_json_atomic(self.path(stage), record)

    def start(self, stage: str, config: dict, upstream: str | None, reason: str, extra: dict | None = None) -> dict:
        """Write a ``running`` record and return it (the caller fills it in and calls :meth:`finish`)."""
        rec = {"stage": stage, "status": "running", "started": now_text(), "finished": None,
               "pid": os.getpid(), "reason": reason, "config": config, "config_hash": config_hash(config),
               "upstream_hash": upstream, "outputs": {}, "validation": {}, "metrics": {},
               "versions": library_versions()}
        rec.update(extra or {})
        self.write(stage, rec)
        return rec

    def finish(self, stage: str, rec: dict, seconds: float) -> dict:
        rec["status"] = "complete"
        rec["finished"] = now_text()
        rec["seconds"] = round(seconds, 2)
        rec.pop("error", None)
        rec.pop("replaces", None)       # its outputs are now the ones this run replaced
        self.write(stage, rec)
        return rec

    def fail(self, stage: str, rec: dict, error: str, seconds: float) -> None:
        rec["status"] = "failed"
        rec["finished"] = now_text()
        rec["seconds"] = round(seconds, 2)
        rec["error"] = error
        try:
            self.write(stage, rec)
        except OSError:     # a full disk: the stage's own error is what the user must see; the record
            pass            # stays "running", which status reports as an interrupted run

    def delete(self, stage: str) -> Path | None:
        path = self.path(stage)
        if path.exists():
            path.unlink()
            return path
        return None

    # -- validation -----------------------------------------------------------------------------
    def decide(self, stage: str, config: dict | None, upstream: str | None, *, force: bool = False,
               upstream_ran: bool = False, deep: bool = True, defaults: dict | None = None) -> Decision:
        """Whether ``stage`` must run for ``config`` on top of ``upstream`` (a hash), and why.

        ``config=None`` skips the config comparison (``--status`` of the last run's own settings);
        ``upstream=None`` likewise skips the upstream comparison. ``defaults``: the values of keys a
        config leaves out, for the message that says which keys changed.
        """
        if not self.enabled:
            return Decision(True, "checkpointing off")
        rec, problem = self.read(stage)
        if force:
            return Decision(True, "forced", rec, problem)
        if rec is None:
            return Decision(True, "no record", None, problem)
        if rec.get("status") not in ("running", "failed", "complete"):
            return Decision(True, "no record", None, f"{stage} record has unknown status {rec.get('status')!r}")
        old = self._replaced_and_still_valid(stage, rec, config, upstream, upstream_ran, deep)
        if old is not None:
            return Decision(False, "complete and valid (a run with other settings that was to replace it "
                                   "did not finish)", old)
        if config is not None and rec.get("config_hash") != config_hash(config):
            return Decision(True, f"config changed: {config_diff(rec.get('config'), config, defaults) or 'hash differs'}", rec)
        if upstream_ran:
            return Decision(True, "upstream changed", rec)
        if upstream is not None and rec.get("upstream_hash") != upstream:
            return Decision(True, "upstream changed", rec)
        if rec.get("status") == "running":
            return Decision(True, "previous run interrupted", rec)
        if rec.get("status") == "failed":
            return Decision(True, f"previous run failed: {rec.get('error', 'unknown error')}", rec)
        problem = self.validate(stage, rec, deep=deep)
        if problem:
            return Decision(True, problem, rec)
        return Decision(False, "complete and valid", rec)

    def _replaced_and_still_valid(self, stage, rec, config, upstream, upstream_ran, deep) -> dict | None:
        """The complete record an unfinished run with other settings was to replace (kept in its
        ``replaces``), when ``config`` asks for that record's settings and its outputs are still as
        recorded (the new run built beside them), else None."""
        old = rec.get("replaces")
        if rec.get("status") == "complete" or not isinstance(old, dict) or config is None or upstream_ran:
            return None
        wanted = config_hash(config)
        if rec.get("config_hash") == wanted or old.get("config_hash") != wanted:
            return None          # the unfinished run's own settings: it resumes
        if old.get("status") != "complete" or old.get("stage") != stage or _record_problem(old) is not None:
            return None
        if upstream is not None and old.get("upstream_hash") != upstream:
            return None
        return old if self.validate(stage, old, deep=deep) is None else None

    def validate(self, stage: str, rec: dict, deep: bool = True) -> str | None:
        """None when the stage's outputs are as recorded, else ``output missing`` / ``... corrupt``."""
        return {"data": self._validate_data, "training": self._validate_training,
                "evaluation": self._validate_evaluation}[stage](rec, deep)

    def _file_matches(self, facts: dict, deep: bool) -> str | None:
        """None, "missing" or "changed" for one recorded file (cheap: size + mtime; deep: sha256)."""
        path = self.abs(facts["path"])
        try:
            st = path.stat()
        except FileNotFoundError:
            return "missing"
        if st.st_size != facts.get("size"):
            return "changed"
        if deep or st.st_mtime_ns != facts.get("mtime_ns"):
            if facts.get("sha256") and self.sha256(path) != facts["sha256"]:
                return "changed"
        return None

    def _validate_data(self, rec: dict, deep: bool) -> str | None:
        out = rec.get("outputs", {})
        folder = out.get("dir")
        if not folder or not self.abs(folder).is_dir():
            return "output missing"
        for key in ("shapes_coco", "strokes_coco", "manifest"):
            facts = out.get(key)
            if not facts:
                return "output missing"
            state = self._file_matches(facts, deep=deep)
            if state == "missing":
                return f"output missing: {facts['path']}"
            if state == "changed":
                # Not the file the stage wrote (its sha256 differs): corrupt when it no longer parses or
                # its counts differ, else edited; either way the stage's outputs are not what it recorded.
                problem = self._check_coco_counts(self.abs(facts["path"]), key, rec)
                return problem or f"output changed: {facts['path']} is not the file this stage wrote"
        images = count_pngs(self.abs(folder) / "images")
        want = rec.get("validation", {}).get("num_images")
        if images < 0:
            return "output missing: images/"
        if want is not None and images > want:
            return f"output changed: {images} images on disk, {want} recorded"
        return None      # fewer: the next run draws them again in place (see missing_images)

    def missing_images(self, rec: dict) -> str | None:
        """``--status``'s note when a complete data record's folder holds fewer images than it
        records: the run draws them again in place (each from its own seed, the bytes recorded), so
        the stage and those after it stay done. Damaged images are found only by that run (it reads
        every one)."""
        folder = rec.get("outputs", {}).get("dir")
        want = rec.get("validation", {}).get("num_images")
        have = count_pngs(self.abs(folder) / "images") if folder else -1
        if want is None or have < 0 or have >= want:
            return None
        return f"{want - have} of {want} images missing: the next run draws them again, or remakes the stage if it cannot"

    def _check_coco_counts(self, path: Path, key: str, rec: dict) -> str | None:
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, ValueError) as exc:
            return f"output corrupt: {rel(path, self.workdir)} does not parse ({exc.__class__.__name__})"
        val = rec.get("validation", {})
        if key == "manifest":
            if doc.get("num_images") != val.get("num_images"):
                return f"output corrupt: {rel(path, self.workdir)} counts differ from the record"
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            return f"output corrupt: {rel(path, self.workdir)} is not a COCO file"
        want_images = val.get("num_images")
        want_anns = val.get(f"{key.split('_')[0]}_annotations")
        if want_images is not None and len(doc["images"]) != want_images:
            return f"output corrupt: {rel(path, self.workdir)} has {len(doc['images'])} images, {want_images} recorded"
        if want_anns is not None and len(doc.get("annotations", [])) != want_anns:
            return f"output corrupt: {rel(path, self.workdir)} annotation count differs from the record"
        return None

    def _validate_training(self, rec: dict, deep: bool) -> str | None:
        facts = rec.get("outputs", {}).get("best_checkpoint")
        if not facts:
            return "output missing"
        state = self._file_matches(facts, deep=deep)
        if state == "missing":
            return "output missing"
        if state == "changed":
            return "checkpoint corrupt"
        if deep:
            from ..train import load_checkpoint_model   # lazy: imports torch

            try:
                load_checkpoint_model(str(self.abs(facts["path"])))
            except System1Error:
                return "checkpoint corrupt"
            except Exception as exc:  # noqa: BLE001 - any failure to load means the file is unusable
                return f"checkpoint corrupt ({exc.__class__.__name__})"
        return None

    def _validate_evaluation(self, rec: dict, deep: bool) -> str | None:
        facts = rec.get("outputs", {}).get("model")
        if not facts:
            return "output missing"
        state = self._file_matches(facts, deep=deep)
        if state == "missing":
            return "model missing"
        if state == "changed":
            return "upstream changed"
        return None
