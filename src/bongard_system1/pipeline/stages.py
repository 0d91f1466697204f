"""The three pipeline stages (data, training, evaluation) and the helpers they share.

The run that chains them is in :mod:`.run`; status and reset are in :mod:`.status`.

Layout of a work directory::

    checkpoints/   data_generation.json, training.json, evaluation.json, .pipeline.lock
    processed_data/<profile>_synthetic/   the generated dataset (images/, shapes_coco.json, ...)
    processed_data/real_subset/            the real images a profile evaluates on, when it caps them
    runs/<profile>/                        the trainer's run folder (last.pt, best.pt, ...)
    results/   system1_training_results.json, or professional_training_results_<time>.json
    logs/      <profile>_training.log (professional_training.log), validate_phase1.log
    (--no-checkpoint: *_unrecorded folders, results and log, beside the recorded run's)

Each stage asks :class:`CheckpointManager` whether it must run. A stage that runs again makes every
stage downstream run again. Forced runs, config changes and invalid outputs build into a staging
sibling (``<name>.new``) that replaces the old folder only once complete, so the old outputs stay
until the new ones exist; an interrupted run resumes where it stopped (the generator and the
trainer are both resumable), in the folder its record names.

Target rule: the synthetic targets (AP@[.5:.95] >= 0.85, AP50 >= 0.95) use the mean over the
synthetic validation sets evaluated (shapes and strokes, each reported too); the real target
(AP50 >= 0.70) likewise uses the mean over the real sets (the real ``shapes_coco.json`` and, when
it sits beside it, ``strokes_coco.json``). A real set that is missing counts as not met.

Module level imports the standard library only; torch and the package's heavy modules are
imported inside the functions that run a stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetDamaged, System1Error
from . import profiles
from ..io_utils import naming, sha256_file, write_json_atomic
from ..wording import counted
from .records import STAGES, CheckpointManager, Decision, count_pngs, file_facts, now_text, rel

DEFAULT_REAL_DATA = "../shared/real-bongard-logo/shapes_coco.json"
RESUME_PREFIXES = ("previous run interrupted", "previous run failed")


# ---------------------------------------------------------------------------------------------
# options, logging, helpers


@dataclass
class RunOptions:
    """Everything one pipeline run needs; built by the CLI or by tests."""

    workdir: Path
    settings: dict
    real_data: str | None = None          # absolute path of the real shapes COCO file, or None
    force_from: str | None = None         # "data", "training" or "evaluation": redo from there on
    checkpoint: bool = True               # False: --no-checkpoint
    progress: bool = True
    overrides: dict = field(default_factory=dict)   # the flags given, for the records
    log_name: str | None = None


class Reporter:
    """Prints a line and appends it, timestamped, to the run's log file."""

    def __init__(self, log_path: Path | None):
        self.log_path = log_path
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, text: str = "", err: bool = False) -> None:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)
        if self.log_path is not None:
            try:
                with open(self.log_path, "a", encoding="utf-8") as fh:
                    fh.write(f"{now_text()}  {text}\n")
            except OSError as exc:          # a full disk: the buffered write names no file
                raise naming(exc, self.log_path) from None


def resolve_real_data(value: str | None) -> str | None:
    """The real set's shapes COCO file: ``value`` (the file or its folder), or the default when it
    exists; ``none`` disables."""
    if value is not None:
        if value.lower() in ("none", "off"):
            return None
        if not value.strip():
            raise System1Error("--real-data is empty: give a COCO file, its folder, or none")
        path = Path(value).expanduser()
        if not path.exists():
            raise System1Error(f"real data {value}: no such file or folder (give the real set's folder, "
                               "its shapes_coco.json, or none)")
        if path.is_dir():
            path = path / "shapes_coco.json"
        elif path.name == "strokes_coco.json" and path.with_name("shapes_coco.json").is_file():
            path = path.with_name("shapes_coco.json")     # the set is named by its shapes file either way
        if not path.is_file():
            raise System1Error(f"real data file not found: {path} (give the real set's folder, holding "
                               "shapes_coco.json, or a COCO file)")
        return str(path.resolve())
    path = Path(DEFAULT_REAL_DATA)
    return str(path.resolve()) if path.is_file() else None


def real_data_sha(real_data: str | None) -> str | None:
    """sha256 over the real shapes file and the strokes file beside it (if any)."""
    if not real_data:
        return None
    h = hashlib.sha256()
    for path in real_files(real_data).values():
        h.update(sha256_file(path).encode())
    return h.hexdigest()


def check_real_data(real_data: str | None) -> None:
    """Read the real set's COCO files and look for their images now, before any stage runs, so that a
    bad ``--real-data`` is one error line at once rather than a failed evaluation after training."""
    if not real_data:
        return
    from ..data.coco import check_usable, read_coco      # standard library only
    for path in real_files(real_data).values():
        doc = read_coco(path)
        check_usable(doc, f"real data {path}")
        root = Path(path).parent
        missing = [im["file_name"] for im in doc["images"] if not _looks_like_an_image(root / im["file_name"])]
        if missing:
            raise System1Error(f"real data {path}: {len(missing)} of its {len(doc['images'])} images are missing or "
                               f"not PNG or JPEG files (first: {root / missing[0]})")


def _looks_like_an_image(path: Path) -> bool:
    """The file is there and starts as a PNG or a JPEG does (read in full later, by OpenCV)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff")


def real_files(real_data: str) -> dict:
    """``{"real_shapes": path, "real_strokes": path}`` (strokes only when beside the shapes file)."""
    shapes = Path(real_data)
    out = {"real_shapes": shapes}
    strokes = shapes.with_name("strokes_coco.json")
    if strokes.is_file() and strokes.resolve() != shapes.resolve():
        out["real_strokes"] = strokes
    return out


UNRECORDED = "_unrecorded"


def unrecorded(checkpoint: bool) -> str:
    """The suffix of what a --no-checkpoint run writes, beside the recorded run's outputs."""
    return "" if checkpoint else UNRECORDED


def data_dir(workdir: Path, profile: str, checkpoint: bool = True) -> Path:
    return workdir / "processed_data" / f"{profile}_synthetic{unrecorded(checkpoint)}"


def run_dir(workdir: Path, profile: str, checkpoint: bool = True) -> Path:
    return workdir / "runs" / f"{profile}{unrecorded(checkpoint)}"


def _staging(target: Path) -> Path:
    return target.with_name(target.name + ".new")


def folder_bytes(path: Path) -> int:
    """The disk space the files under ``path`` take (blocks where the system counts them, links not
    followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


def _warn_if_short_of_space(ctx: "Context", stage: str, build: Path, target: Path) -> None:
    """A staging folder is built beside the folder it replaces, which stays until the new one is
    complete: say so up front when the disk has less room free than the old folder takes (about what
    the new one needs, less what a resumed staging folder holds already), rather than let a full
    disk stop the run hours in."""
    if build == target or not target.is_dir():
        return
    try:
        free = shutil.disk_usage(build.parent).free
    except OSError:
        return
    old = folder_bytes(target)
    need = old - (folder_bytes(build) if build.is_dir() else 0)
    if need > free:
        drop = ("--reset training (which drops the evaluation too)" if stage == "training" else
                "--reset data (which drops the trained run and the evaluation too)")
        ctx.log(f"[{stage}] warning: {rel(build, ctx.workdir)} is built beside {rel(target, ctx.workdir)}, which "
                f"stays until it is complete; the old one takes {old / 2**20:,.0f} MiB, about what the "
                f"new one needs, and {free / 2**20:,.0f} MiB is free, so the disk may fill (nothing done is lost: "
                f"free space and run again to resume, or {drop} to delete the old one first)", err=True)


def rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by the complete ``staging`` folder (old one removed only afterwards)."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    if old.exists():
        rmtree(old)


def check_writable(workdir: Path, results_file: Path | None = None) -> None:
    """The work directory and the folders every run writes in can be written, and ``results_file``
    (written at the end) is not a folder, or one error line now, before any stage runs."""
    if workdir.exists() and not workdir.is_dir():
        raise System1Error(f"work directory {workdir} is a file; give a folder (new or made by the pipeline)")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".system1_write_probe_{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise System1Error(f"cannot write to work directory {workdir}: {exc.strerror or exc}") from None
    for name in ("checkpoints", "logs", "results", "runs", "processed_data"):
        if (workdir / name).exists() and not (workdir / name).is_dir():
            raise System1Error(f"{workdir / name} is a file, where the pipeline keeps its {name}/ folder; "
                               "move it away or use another --workdir")
    if results_file is not None and results_file.is_dir():
        raise System1Error(f"{results_file} is a folder, where the pipeline writes its results file; "
                           "move it away or use another --workdir")


def _replaced(decision: Decision, beside: bool) -> dict | None:
    """The complete record a run that builds ``beside`` the old outputs replaces (or the one an
    interrupted such run was replacing), kept in the new run's record until it completes, so that
    going back to the old settings after a kill finds the old outputs done (see ``decide``)."""
    rec = decision.record or {}
    if not beside:
        return None
    if rec.get("status") == "complete":
        return {k: v for k, v in rec.items() if k != "replaces"}
    return rec.get("replaces") if isinstance(rec.get("replaces"), dict) else None


def _choose_build_dir(decision: Decision, target: Path, workdir: Path) -> tuple[Path, bool]:
    """``(folder to build in, fresh)``: resume in place or in the recorded staging folder after an
    interruption; build fresh in a staging sibling when forced, when the config or the upstream
    changed, or when outputs are bad (old outputs stay until the new ones are complete)."""
    rec = decision.record or {}
    if decision.reason.startswith(RESUME_PREFIXES):
        staged = rec.get("staging_dir")
        if staged and (workdir / staged).is_dir():
            return workdir / staged, False
        return target, False
    if decision.reason == "no record" and not target.exists():
        return target, True
    return _staging(target), True


# training settings of the stages trained after the detector: a change retrains only them
SECOND_STAGE_KEYS = {"stamp_images", "stamp_vote_version", "rescore_images", "rescorer_version"}


def _only_second_stages_changed(decision: Decision, cfg: dict, target: Path) -> bool:
    """True when a complete training differs from ``cfg`` only in the settings of the stamp vote or
    the rescorer (they live outside the detector's own config, see ``train.add_stamp_vote``
    and ``train.add_rescorer``)."""
    rec = decision.record or {}
    old = rec.get("config") or {}
    if not decision.reason.startswith("config changed") or rec.get("status") != "complete":
        return False
    differs = {k for k in set(old) | set(cfg) if old.get(k) != cfg.get(k)}
    return (bool(differs) and differs <= SECOND_STAGE_KEYS and (target / "best.pt").is_file()
            and (target / "last.pt").is_file())


# ---------------------------------------------------------------------------------------------
# the stages


class Context:
    def __init__(self, opts: RunOptions, log: Reporter):
        self.opts = opts
        self.workdir = Path(opts.workdir).resolve()
        self.settings = opts.settings
        self.profile = opts.settings["profile"]
        self.mgr = CheckpointManager(self.workdir, enabled=opts.checkpoint)
        self.log = log
        self.stage_seconds: dict[str, float] = {}
        self.actions: dict[str, dict] = {}
        self.run_settings = {"profile": self.profile, "overrides": opts.overrides, "real_data": opts.real_data}

    def forced(self, stage: str) -> bool:
        f = self.opts.force_from
        return f is not None and STAGES.index(stage) >= STAGES.index(f)

    def announce(self, stage: str, decision: Decision) -> None:
        if decision.warning:
            self.log(f"warning: {decision.warning}", err=True)
        if decision.run:
            self.log(f"[{stage}] running: {decision.reason}")
        elif decision.reason != "complete and valid":
            self.log(f"[{stage}] {decision.reason}")
        self.actions[stage] = {"ran": decision.run, "reason": decision.reason}


def stage_data(ctx: Context) -> tuple[dict, bool]:
    """Generate the synthetic dataset unless a valid record for the same config exists."""
    s = ctx.settings
    cfg = profiles.data_config(s)
    decision = ctx.mgr.decide("data", cfg, None, force=ctx.forced("data"))
    redrawn = 0
    if not decision.run and ctx.opts.checkpoint:
        decision, redrawn = _check_images(ctx, decision)
    ctx.announce("data", decision)
    if not decision.run:
        rec = decision.record
        fixed = f"; {redrawn} missing or damaged image(s) drawn again" if redrawn else ""
        ctx.log(f"[data] skipped: {counted(rec['validation']['num_images'], 'image')} at {rec['config']['image_size']} px, "
                f"complete since {rec['finished']} ({rel(ctx.mgr.abs(rec['outputs']['dir']), ctx.workdir)}){fixed}")
        ctx.stage_seconds["data"] = 0.0
        return rec, False

    target = data_dir(ctx.workdir, ctx.profile, ctx.opts.checkpoint)
    if ctx.opts.checkpoint:
        build, fresh = _choose_build_dir(decision, target, ctx.workdir)
    else:   # --no-checkpoint: nothing is trusted, everything is redone
        build, fresh = target, True
        if target.exists():
            rmtree(target)
    if fresh and build != target and build.exists():
        rmtree(build)
    _warn_if_short_of_space(ctx, "data", build, target)
    rec = ctx.mgr.start("data", cfg, None, decision.reason, {
        "profile": ctx.profile, "run_settings": ctx.run_settings, "replaces": _replaced(decision, build != target),
        "staging_dir": rel(build, ctx.workdir) if build != target else None,
        "outputs": {"dir": rel(target, ctx.workdir)}})
    t0 = time.time()
    try:
        from ..data.generate import generate_dataset   # lazy: numpy, cv2

        manifest = generate_dataset(str(build), num_images=s["dataset_size"], image_size=s["image_size"],
                                    seed=s["seed"], workers=_drawing_workers(ctx),
                                    val_fraction=s["val_fraction"], max_shapes=s["max_shapes"],
                                    progress=ctx.opts.progress)
        counts = _dataset_counts(build, manifest, s["dataset_size"])
        if build != target:
            swap_in(build, target)
        outputs = {"dir": rel(target, ctx.workdir)}
        shas = []
        for key, name in (("shapes_coco", "shapes_coco.json"), ("strokes_coco", "strokes_coco.json"),
                          ("manifest", "dataset.json")):
            outputs[key] = file_facts(target / name, ctx.workdir)
            shas.append(outputs[key]["sha256"])
        rec.update(outputs=outputs, validation=counts, staging_dir=None,
                   dataset_hash=hashlib.sha256("".join(shas).encode()).hexdigest(),
                   metrics={"num_images": counts["num_images"], "num_train": counts["num_train"],
                            "num_val": counts["num_val"]})
    except BaseException as exc:
        ctx.mgr.fail("data", rec, _error_text(exc), time.time() - t0)
        raise
    seconds = time.time() - t0
    ctx.mgr.finish("data", rec, seconds)
    ctx.stage_seconds["data"] = round(seconds, 2)
    ctx.log(f"[data] complete: {counted(counts['num_images'], 'image')} ({counts['num_train']:,} train, {counts['num_val']:,} val) "
            f"at {s['image_size']} px in {seconds:.1f} s -> {rel(target, ctx.workdir)}")
    return rec, True


def _drawing_workers(ctx: Context) -> int | None:
    """Processes that draw or check the dataset (CPU-bound, and they end with the stage): every core
    this process may use (None), unless --workers says otherwise (0: one process); a profile's loader
    count does not cap it."""
    given = (ctx.opts.overrides or {}).get("workers")
    if given is None and ctx.settings.get("workers") == 0:
        given = 0                               # a profile that keeps to one process (smoke)
    return None if given is None else max(1, given)


def _check_images(ctx: Context, decision: Decision) -> tuple[Decision, int]:
    """Before a skipped data stage's images are trained or scored on: every image is read and
    checked against the CRC-32 its record keeps (about 1 s for the quick profile's 4,000), and a
    missing or damaged one is drawn again in place from its own seed, the same bytes, so the stage
    and those after it stay done. A dataset that cannot be repaired so (one drawn by another
    generator or OpenCV version, or made before images had their CRC-32 recorded) is made again.
    Returns the decision and how many were redrawn."""
    from ..data.generate import repair_dataset   # lazy: numpy, cv2

    rec = decision.record
    try:
        counts = repair_dataset(str(ctx.mgr.abs(rec["outputs"]["dir"])), _drawing_workers(ctx))
    except DatasetDamaged as exc:        # any other error (a repair that cannot be written) stops the run
        return Decision(True, f"output corrupt: {exc.cause}", rec, decision.warning), 0
    return decision, counts["redrawn"]


def _dataset_counts(folder: Path, manifest: dict, expected: int) -> dict:
    """Counts that the data record validates against; raises if the generator wrote too few."""
    counts = {}
    for key, name in (("shapes", "shapes_coco.json"), ("strokes", "strokes_coco.json")):
        path = folder / name
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, ValueError) as exc:
            raise System1Error(f"dataset generation left an unreadable {path.name}: {exc}") from None
        counts[f"{key}_images"] = len(doc.get("images", []))
        counts[f"{key}_annotations"] = len(doc.get("annotations", []))
        if key == "shapes":
            splits = [im.get("split") for im in doc.get("images", [])]
            counts["num_train"] = sum(1 for sp in splits if sp == "train")
            counts["num_val"] = sum(1 for sp in splits if sp == "val")
    counts["num_images"] = counts["shapes_images"]
    counts["png_files"] = count_pngs(folder / "images")
    if counts["num_images"] != expected or counts["png_files"] != expected or counts["strokes_images"] != expected:
        raise System1Error(f"dataset generation wrote {counts['png_files']} images and {counts['num_images']} image "
                           f"records, {expected} expected")
    if manifest and manifest.get("num_images") not in (None, expected):
        raise System1Error(f"dataset manifest says {manifest.get('num_images')} images, {expected} expected")
    return counts


def _warn_of_a_gpu_job_on_the_cpu(ctx: Context) -> None:
    """The professional profile's detector trains on a CPU only by mistake, unless a time budget caps it."""
    s = ctx.settings
    if ctx.profile != "professional" or s.get("time_budget") or s["device"] == "cuda":
        return
    from ..train import resolve_device   # lazy: torch
    if resolve_device(s["device"]) != "cpu":
        return
    ctx.log(f"warning: the professional profile is meant for a GPU; on this CPU its training ({s['backbone']}, "
            f"{s['epochs']} epochs of {s['dataset_size']:,} images at {s['image_size']} px) will be slow: "
            "--profile quick is the CPU profile, or give --time-budget MIN")


def stage_training(ctx: Context, data_rec: dict, data_ran: bool) -> tuple[dict, bool]:
    """Train the detector on the dataset unless a valid record for the same config and data exists."""
    s = ctx.settings
    cfg = profiles.train_config(s)
    decision = ctx.mgr.decide("training", cfg, data_rec.get("dataset_hash"), force=ctx.forced("training"),
                              upstream_ran=data_ran, defaults=profiles.CONFIG_DEFAULTS["training"])
    ctx.announce("training", decision)
    if not decision.run:
        rec = decision.record
        ctx.log(f"[training] skipped: {rec['config']['backbone']}, {counted(len(rec['metrics'].get('history', [])), 'epoch')}, "
                f"best AP {fmt(rec['metrics'].get('best_metric'))}, complete since {rec['finished']}")
        ctx.stage_seconds["training"] = 0.0
        return rec, False

    target = run_dir(ctx.workdir, ctx.profile, ctx.opts.checkpoint)
    second_stages_only = ctx.opts.checkpoint and _only_second_stages_changed(decision, cfg, target)
    if second_stages_only:
        build, fresh = target, False        # the detector stands; train_detector only redoes vote and rescorer
        ctx.log("[training] the detector is unchanged: only its stamp vote and rescorer are trained")
    elif ctx.opts.checkpoint:
        build, fresh = _choose_build_dir(decision, target, ctx.workdir)
    else:
        build, fresh = target, True
    if fresh and build != target and build.exists():
        rmtree(build)
    _warn_if_short_of_space(ctx, "training", build, target)
    resume = not fresh and (build / "last.pt").exists()
    if resume:
        ctx.log(f"[training] resuming from {rel(build / 'last.pt', ctx.workdir)}")
    if not second_stages_only:
        _warn_of_a_gpu_job_on_the_cpu(ctx)
    rec = ctx.mgr.start("training", cfg, data_rec.get("dataset_hash"), decision.reason, {
        "profile": ctx.profile, "run_settings": ctx.run_settings, "resumed": resume,
        "replaces": _replaced(decision, build != target),
        "staging_dir": rel(build, ctx.workdir) if build != target else None,
        "outputs": {"run_dir": rel(target, ctx.workdir)}})
    t0 = time.time()
    try:
        from ..train import train_detector   # lazy: torch

        kwargs = dict(backbone=s["backbone"], categories=s["categories"], epochs=s["epochs"],
                      batch_size=s["batch_size"], image_size=s["image_size"], device=s["device"],
                      workers=s.get("workers"), seed=s["seed"], lr=s["lr"], time_budget=s["time_budget"],
                      restart=not ctx.opts.checkpoint, progress=ctx.opts.progress,
                      stamp_images=s["stamp_images"], early_scale=s["early_scale"],
                      rescore_images=s["rescore_images"], start_over_unresumable=True)
        result = train_detector(str(ctx.mgr.abs(data_rec["outputs"]["dir"])), str(build), **kwargs)
        best = Path(result["best_checkpoint"])
        last = Path(result["last_checkpoint"]) if result.get("last_checkpoint") else None
        if not best.is_file():
            raise System1Error(f"training finished without a best checkpoint at {best}")
        if build != target:
            swap_in(build, target)
            best = _moved(best, build, target)
            last = _moved(last, build, target) if last else None
        outputs = {"run_dir": rel(target, ctx.workdir), "best_checkpoint": file_facts(best, ctx.workdir)}
        if last and last.is_file():
            outputs["last_checkpoint"] = file_facts(last, ctx.workdir, with_sha=False)
        history = _jsonable(result.get("history") or [])
        rec.update(outputs=outputs, staging_dir=None,
                   validation={"epochs_completed": len(history), "device": result.get("device")},
                   metrics={"best_metric": result.get("best_metric"), "val_metrics": _jsonable(result.get("val_metrics")),
                            "history": history, "device": result.get("device"),
                            "train_seconds": result.get("seconds"),
                            "stamp_vote": _jsonable((result.get("stamp_vote") or {}).get("metrics")),
                            "rescorer": _jsonable((result.get("rescorer") or {}).get("metrics")),
                            "rescorer_shapes": _jsonable((result.get("rescorer") or {}).get("shape_metrics"))})
    except BaseException as exc:
        ctx.mgr.fail("training", rec, _error_text(exc), time.time() - t0)
        raise
    seconds = time.time() - t0
    ctx.mgr.finish("training", rec, seconds)
    ctx.stage_seconds["training"] = round(seconds, 2)
    ctx.log(f"[training] complete: {s['backbone']}, {counted(len(history), 'epoch')}, best AP "
            f"{fmt(result.get('best_metric'))} in {seconds:.1f} s -> {outputs['best_checkpoint']['path']}")
    return rec, True


def _moved(path: Path, old_root: Path, new_root: Path) -> Path:
    try:
        return new_root / Path(path).resolve().relative_to(old_root.resolve())
    except ValueError:
        return Path(path)


def stage_evaluation(ctx: Context, data_rec: dict, train_rec: dict, train_ran: bool) -> tuple[dict, bool]:
    """COCO metrics of the best checkpoint on the synthetic val split and on the real set."""
    s = ctx.settings
    real = ctx.opts.real_data
    cfg = profiles.eval_config(s, real, real_data_sha(real))
    model_facts = train_rec["outputs"]["best_checkpoint"]
    decision = ctx.mgr.decide("evaluation", cfg, model_facts["sha256"], force=ctx.forced("evaluation"),
                              upstream_ran=train_ran)
    ctx.announce("evaluation", decision)
    if not decision.run:
        rec = decision.record
        ctx.log(f"[evaluation] skipped: {eval_facts(rec)}, complete since {rec['finished']}")
        ctx.stage_seconds["evaluation"] = 0.0
        return rec, False

    rec = ctx.mgr.start("evaluation", cfg, model_facts["sha256"], decision.reason, {
        "profile": ctx.profile, "run_settings": ctx.run_settings, "outputs": {"model": model_facts},
        "replaces": _replaced(decision, True)})
    t0 = time.time()
    try:
        from ..evaluate import evaluate_model   # lazy: torch

        model_path = str(ctx.mgr.abs(model_facts["path"]))
        sets = _eval_sets(ctx, data_rec, real, s)
        detector = _load_detector(model_path, s["device"], cfg["test_size"], cfg["test_views"],
                                  cfg["inference_amp"])
        metrics = {}
        for name, (coco, root, count) in sets.items():
            ctx.log(f"[evaluation] {name}: {count if count is not None else 'all'} images")
            kwargs = {"detector": detector} if detector is not None else {}
            m = evaluate_model(model_path, str(coco), images_root=str(root), device=s["device"],
                               progress=ctx.opts.progress, test_size=cfg["test_size"],
                               views=cfg["test_views"], amp=cfg["inference_amp"], **kwargs)
            metrics[name] = _jsonable(m)
            ctx.log(f"[evaluation] {name}: AP {fmt(m.get('AP'))}, AP50 {fmt(m.get('AP50'))}")
        parses = _score_parses(ctx, sets, detector) if detector is not None else {}
        summary = summarize(metrics)
        rec.update(metrics={"sets": metrics, "summary": summary, "targets": target_status(summary),
                            "parses": parses},
                   validation={name: {"images": count} for name, (_, _, count) in sets.items()})
    except BaseException as exc:
        ctx.mgr.fail("evaluation", rec, _error_text(exc), time.time() - t0)
        raise
    seconds = time.time() - t0
    ctx.mgr.finish("evaluation", rec, seconds)
    ctx.stage_seconds["evaluation"] = round(seconds, 2)
    ctx.log(f"[evaluation] complete in {seconds:.1f} s: {eval_facts(rec)}")
    return rec, True


def _score_parses(ctx: Context, sets: dict, detector) -> dict:
    """Where a set was scored as shapes and as strokes (its images' detections remembered), how right
    ``System1.parse`` groups them: each stroke in its own shape (see :mod:`grouping`)."""
    from ..grouping import score_parses
    out = {}
    for prefix in ("synthetic", "real"):
        if f"{prefix}_shapes" in sets and f"{prefix}_strokes" in sets:
            (shapes, root, _), (strokes, _, _) = sets[f"{prefix}_shapes"], sets[f"{prefix}_strokes"]
            p = _jsonable(score_parses(detector, str(shapes), str(strokes), str(root)))
            out[prefix] = p
            a = p.get("all", {})
            ctx.log(f"[evaluation] {prefix} parses (scores >= {p['min_score']:g}): shapes found with exactly their "
                    f"strokes {fmt(a.get('shapes_exact'))}, found strokes in their own shape {fmt(a.get('assigned_right'))}")
    return out


def _load_detector(model_path: str, device: str, test_size: int, views: int, amp: bool):
    """The model loaded once for every set, remembering its detections so that the shapes and strokes
    files of one image set are scored from one pass (None: let ``evaluate_model`` load it each time)."""
    try:
        from ..evaluate import CachedDetector
        from ..predict import System1
    except ImportError:
        return None
    return CachedDetector(System1.load(model_path, device=device, test_size=test_size, views=views, amp=amp))


def _eval_sets(ctx: Context, data_rec: dict, real: str | None, s: dict) -> dict:
    """``{name: (coco file, images root, image count)}`` for every set to evaluate."""
    want = {"all": ("shapes", "strokes"), "shapes": ("shapes",), "strokes": ("strokes",)}[s["categories"]]
    ddir = ctx.mgr.abs(data_rec["outputs"]["dir"])
    sets = {}
    for kind in want:
        sets[f"synthetic_{kind}"] = (ddir / f"{kind}_coco.json", ddir, data_rec["validation"].get("num_val"))
    if real:
        cap = s.get("real_max_images")
        sub_dir = ctx.workdir / "processed_data" / f"real_subset{unrecorded(ctx.opts.checkpoint)}"
        for name, path in real_files(real).items():
            if name.split("_")[1] not in want:
                continue
            root = Path(path).parent
            if cap:
                coco, count = _subset_coco(path, sub_dir / path.name, cap)
            else:
                coco, count = path, None
            sets[name] = (coco, root, count)
    return sets


def _subset_coco(src: Path, dst: Path, cap: int) -> tuple[Path, int]:
    """Write the first of every k-th image (``cap`` images spread over the file) with their annotations."""
    with open(src, encoding="utf-8") as fh:
        doc = json.load(fh)
    images = sorted(doc["images"], key=lambda im: im["id"])
    step = max(1, len(images) // cap)
    keep = images[::step][:cap]
    ids = {im["id"] for im in keep}
    out = dict(doc)
    out["images"] = keep
    out["annotations"] = [a for a in doc.get("annotations", []) if a["image_id"] in ids]
    write_json_atomic(dst, out)
    return dst, len(keep)


def summarize(metrics: dict) -> dict:
    """Mean AP / AP50 over the synthetic sets and over the real sets (None when there are none)."""
    def mean(names, key):
        vals = [metrics[n].get(key) for n in names if isinstance(metrics[n].get(key), (int, float))]
        return round(sum(vals) / len(vals), 4) if vals else None

    syn = [n for n in metrics if n.startswith("synthetic_")]
    real = [n for n in metrics if n.startswith("real_")]
    return {"synthetic_AP": mean(syn, "AP"), "synthetic_AP50": mean(syn, "AP50"),
            "real_AP": mean(real, "AP"), "real_AP50": mean(real, "AP50"),
            "synthetic_sets": syn, "real_sets": real}


def target_status(summary: dict) -> list[dict]:
    """One row per Phase 1 target; a missing value is not met."""
    rows = []
    for key, label, threshold in profiles.TARGETS:
        value = summary.get(key)
        rows.append({"key": key, "target": label, "threshold": threshold, "value": value,
                     "met": value is not None and value >= threshold})
    return rows


def eval_facts(rec: dict) -> str:
    summ = rec.get("metrics", {}).get("summary", {})
    text = f"synthetic AP {fmt(summ.get('synthetic_AP'))} / AP50 {fmt(summ.get('synthetic_AP50'))}"
    if summ.get("real_AP50") is not None:
        n = [v.get("images") for k, v in rec.get("validation", {}).items() if k.startswith("real_")]
        cap = f" on {n[0]} images" if n and n[0] else ""
        text += f", real AP50 {fmt(summ.get('real_AP50'))}{cap}"
    else:
        text += ", no real set"
    return text


def fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{exc.__class__.__name__}: {exc}" if not isinstance(exc, System1Error) else str(exc)


def _jsonable(obj):
    """Numbers from numpy/torch become plain Python numbers; anything else odd becomes a string."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item"):
        try:
            return obj.item()
        except (TypeError, ValueError):
            pass
    return str(obj)
